"""``rowstation compile``: an ONNX model to a directory that holds everything a run needs.

:func:`compile_model` reads the model (:mod:`rowstation.gen.frontend`), checks that reading
against onnxruntime on the calibration data, quantises it (:mod:`rowstation.gen.quantize`),
maps and compiles every layer into one memory image (:func:`~rowstation.gen.network.compile_network`)
and writes::

    DIR/network.json, *.npy   the quantised network (run-net's input), with its scales
    DIR/summary.json, .md     per layer: shapes, MACs, mapping, predicted cycles and utilisation
    DIR/mappings/<layer>.txt  each convolution's mapping, as ``rowstation map`` prints it
    DIR/programs/<layer>.<unit>.hex   the load/execute/store instruction streams, one word a line
    DIR/image.bin, image.json the memory image from its base, with the descriptor list's address and
                              where the input, the output and each layer's counters go
    DIR/config.json           the configuration it was compiled for
"""

import json
from pathlib import Path

import numpy as np

from .frontend import read_onnx
from .network import compile_network
from .quantize import quantize


__all__ = ["ORT_TOLERANCE", "onnxruntime_outputs", "check_against_onnxruntime", "compile_model"]

#: Largest difference, relative to the largest output magnitude, between rowstation's float
#: reading of a model and onnxruntime (float32 rounding; a misread model is far beyond it).
ORT_TOLERANCE = 1e-4


def onnxruntime_outputs(path, x):
    """The model's output on ``x`` under onnxruntime (in chunks of the model's batch where it is
    fixed, the last padded)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    spec = session.get_inputs()[0]
    feed = x.astype(np.float32)
    if len(spec.shape) == 2:
        feed = feed.reshape(len(feed), -1)
    fixed = spec.shape[0] if isinstance(spec.shape[0], int) else len(feed)
    pad = -len(feed) % fixed
    feed = np.concatenate([feed, np.zeros((pad, *feed.shape[1:]), dtype=feed.dtype)])
    outputs = [session.run(None, {spec.name: feed[i:i + fixed]})[0] for i in range(0, len(feed), fixed)]
    return np.concatenate(outputs)[:len(x)]


def check_against_onnxruntime(path, network, x):
    """The largest difference between ``network`` (the float reading of the model at ``path``)
    and onnxruntime on ``x``, relative to the output's largest magnitude; a ValueError beyond
    :data:`ORT_TOLERANCE`."""
    ours = network.run(x)
    theirs = onnxruntime_outputs(path, x).astype(np.float64).reshape(ours.shape)
    error = float(np.abs(ours - theirs).max() / max(np.abs(theirs).max(), 1e-30))
    if not error <= ORT_TOLERANCE:
        raise ValueError(f"rowstation's reading of {path} differs from onnxruntime by {error:.3g} of "
                         f"the output's magnitude (tolerance {ORT_TOLERANCE}); please report the model")
    return error


def _summary_rows(compiled):
    from .performance import layer_report

    rows = []
    for layer in compiled.layers:
        L = layer.layer
        row = {"name": layer.spec.name, "type": layer.spec.kind,
               "input": [L.N, L.C, L.H, L.W], "output": list(L.ofmap_shape), "macs": L.macs}
        if layer.spec.computes:
            report = layer_report(layer.mapping, layer.program, fetched=True)
            m = layer.mapping
            row.update(mapping={"p": m.p, "q": m.q, "s": m.seg, "chain": m.chain, "passes": report["passes"]},
                       shift=layer.spec.shift, relu=layer.spec.relu,
                       **{key: report[key] for key in ("cycles", "pe_utilization", "dram_read_bytes",
                                                         "dram_write_bytes", "binding")})
        else:
            row.update(layer.layer.report(compiled.config), pe_utilization=0.0)
        rows.append(row)
    return rows


def _markdown(name, config, rows, summary):
    lines = [f"# {name}", "",
             f"Compiled for {config.array_rows}x{config.array_cols} PEs at {config.ifmap_width}-bit "
             f"activations and {config.weight_width}-bit weights; cycles and utilisation are the "
             f"performance model's prediction.", "",
             "| layer | type | input | output | MACs | mapping | shift | cycles | utilisation |",
             "|---|---|---|---|--:|---|--:|--:|--:|"]
    for r in rows:
        m = r.get("mapping")
        mapping = f"p={m['p']} q={m['q']} chain={m['chain']}, {m['passes']} passes" if m else "pooler"
        shift = "" if r["type"] == "maxpool" else ("exact" if r.get("shift") is None else str(r["shift"]))
        lines.append(f"| {r['name']} | {r['type']} | {'x'.join(map(str, r['input']))} | "
                     f"{'x'.join(map(str, r['output']))} | {r['macs']:,} | {mapping} | {shift} | "
                     f"{r['cycles']:,} | {r['pe_utilization']:.1%} |")
    t = summary["total"]
    lines += [f"| total | | | | {t['macs']:,} | | | {t['cycles']:,} | {t['pe_utilization']:.1%} |", "",
              f"Float reading vs onnxruntime: {summary['onnxruntime_error']:.2g} of the output's magnitude. "
              f"Quantised vs float on the calibration data: top-1 agreement {summary['calibration']['top1_agreement']:.1%}"
              if summary['calibration']['top1_agreement'] is not None else
              f"Float reading vs onnxruntime: {summary['onnxruntime_error']:.2g} of the output's magnitude.", ""]
    return "\n".join(lines)


def compile_model(path, config, calibration, output, *, batch=1, percentile=100.0, network=None):
    """Compile the ONNX model at ``path`` for ``config`` with scales from the float
    ``calibration`` inputs; write ``output`` (see the module's docstring); return the summary.
    ``network`` is the model as :func:`read_onnx` reads it at ``batch``, if already read."""
    from ..sim.network import run_network_golden_batches
    from .quantize import dequantize, quantize_input

    network = network or read_onnx(path, batch=batch)
    error = check_against_onnxruntime(path, network, calibration)
    quantized = quantize(network, config, calibration, percentile=percentile)
    compiled = compile_network(config, quantized)
    q = quantized.quantization
    ints, _ = quantize_input(calibration, q["input_frac"], config.ifmap_width)
    golden = dequantize(run_network_golden_batches(config, quantized, ints), q["output_frac"])
    reference = network.run(calibration, activations=True)[1][-1]
    agreement = None
    if golden.ndim == 4 and golden.shape[2:] == (1, 1) and golden.shape[1] > 1:
        agreement = float(np.mean(golden.reshape(len(golden), -1).argmax(1) ==
                                  reference.reshape(len(reference), -1).argmax(1)))
    rows = _summary_rows(compiled)
    cycles, macs = sum(r["cycles"] for r in rows), sum(r["macs"] for r in rows)
    summary = {"model": str(path), "network": quantized.name, "input": list(quantized.input_shape),
               "onnxruntime_error": error, "quantization": q,
               "calibration": {"inputs": len(calibration), "top1_agreement": agreement,
                               "max_abs_error": float(np.abs(golden - reference).max())},
               "layers": rows,
               "total": {"macs": macs, "cycles": cycles, "pe_utilization": macs / (config.peak_macs * cycles)}}
    out = Path(output)
    quantized.save(out)
    (out / "config.json").write_text(config.to_json())
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "summary.md").write_text(_markdown(quantized.name, config, rows, summary))
    for sub in ("mappings", "programs"):
        (out / sub).mkdir(exist_ok=True)
    for layer in compiled.layers:
        if layer.spec.computes:
            (out / "mappings" / f"{layer.spec.name}.txt").write_text(layer.mapping.describe() + "\n")
            for unit, words in layer.program.streams.items():
                (out / "programs" / f"{layer.spec.name}.{unit}.hex").write_text(
                    "".join(f"{w:08x}\n" for w in words))
    (out / "image.bin").write_bytes(bytes(compiled.image))
    (out / "image.json").write_text(json.dumps({
        "base": compiled.base, "bytes": len(compiled.image), "descriptors": compiled.descriptors,
        "count": len(compiled.layers),
        "input": {"address": compiled.input[0], "shape": list(compiled.input[1]), "element_bytes": compiled.input[2]},
        "output": {"address": compiled.output[0], "shape": list(compiled.output[1]),
                   "element_bytes": compiled.output[2]},
        "stats": [layer.descriptor["stats"] for layer in compiled.layers]}, indent=2) + "\n")
    return summary
