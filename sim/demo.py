"""``rowstation demo``: the committed digits CNN from ONNX to the simulated hardware.

Generates the accelerator's Verilog, compiles the model (:mod:`rowstation.gen.model`) with the
training images as calibration data, and classifies held-out test images three ways: the float
model in onnxruntime, the quantised network on the golden model, and the generated RTL in a
simulator (whose outputs must equal the golden model's on every image). Then the same model at
4, 8 and 16 bits on the golden model (the precision table), optionally with each preset's
synthesised resources.
"""

import json
import time
from pathlib import Path

import numpy as np

from ..boards.toolchain import fpga_resources
from ..gen.config import preset
from ..gen.model import compile_model, onnxruntime_outputs
from ..gen.network import Network, compile_network
from ..gen.quantize import quantize_input
from .digits import MODEL, load_split
from .network import run_network_golden_batches, run_network_rtl


__all__ = ["PRECISIONS", "run_demo", "precision_table"]

#: The presets of the precision table: one array, 4-, 8- and 16-bit operands.
PRECISIONS = ("tiny-4", "tiny", "tiny-16")


def _classify(config, directory, x):
    """(the network, its quantised integer inputs, the golden logits) of the compiled network
    in ``directory`` on float inputs ``x``."""
    network = Network.load(directory)
    ints, _ = quantize_input(x, network.quantization["input_frac"], config.ifmap_width)
    return network, ints, run_network_golden_batches(config, network, ints).reshape(len(x), -1)


def precision_table(output, calibration, x, labels, *, batch, synth=False, plot=None):
    """Golden accuracy of the model at each of :data:`PRECISIONS`, its predicted cycles a batch,
    and (with ``synth``) the accelerator's ECP5 resources; rows as dicts."""
    rows = []
    for name in PRECISIONS:
        config = preset(name)
        directory = Path(output) / f"model-{name}"
        summary = compile_model(MODEL, config, calibration, directory, batch=batch)
        _, _, logits = _classify(config, directory, x)
        row = {"preset": name, "bits": config.ifmap_width, "accuracy": float(np.mean(logits.argmax(1) == labels)),
               "cycles_per_batch": summary["total"]["cycles"], "pe_utilization": summary["total"]["pe_utilization"]}
        if synth:
            row.update(fpga_resources(config, Path(output) / f"synth-{name}"))
        rows.append(row)
    if plot:
        _plot(rows, plot)
    return rows


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, left = pyplot.subplots(figsize=(5.5, 3.2))
    bits = [str(r["bits"]) for r in rows]
    left.bar(bits, [100 * r["accuracy"] for r in rows], color="#4c72b0")
    left.set_xlabel("operand bits (activations and weights)")
    left.set_ylabel("held-out accuracy, % (bars)")
    left.set_ylim(0, 100)
    if "luts" in rows[0]:
        right = left.twinx()
        right.plot(bits, [r["luts"] for r in rows], "o-", color="#dd8452")
        right.set_ylabel("ECP5 LUTs, whole accelerator (line)")
        right.set_ylim(0, None)
    left.set_title("digits CNN on a 3x4 array: accuracy vs precision")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    pyplot.close(figure)


def _table(rows):
    synth = "luts" in rows[0]
    head = "| preset | bits | accuracy | cycles / batch | utilisation |" + (" LUTs | FFs | DSPs | BRAMs |" if synth else "")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['preset']} | {r['bits']} | {r['accuracy']:.1%} | {r['cycles_per_batch']:,} | "
                f"{r['pe_utilization']:.1%} |")
        if synth:
            line += f" {r['luts']:,} | {r['ffs']:,} | {r['dsps']} | {r['brams']} |"
        lines.append(line)
    return "\n".join(lines)


def run_demo(output, *, config_name="tiny", images=300, batch=8, sim="verilator", build_root="build/rtl",
             synth=False, plot=None, progress=None, log=print):
    """The demo; writes its artefacts under ``output`` and returns its results as a dict."""
    from ..gen.cli import write_rtl

    started = time.time()
    out = Path(output)
    config = preset(config_name)
    (x_train, _), (x_test, y_test) = load_split()
    if not 0 < images <= len(x_test):
        raise ValueError(f"images must be between 1 and {len(x_test)} (the held-out set), not {images}")
    x, labels = x_test[:images], y_test[:images]
    log(f"rowstation demo: the digits CNN ({MODEL.name}) on the {config_name} accelerator, "
        f"{images} held-out images of scikit-learn's digits")
    files = write_rtl(config, out / "rtl")
    log(f"  Verilog         {files[0].parent}/ ({', '.join(f.name for f in files if f.suffix == '.v')})")
    summary = compile_model(MODEL, config, x_train, out / "model", batch=batch)
    log(f"  compiled        {out / 'model'}/ (summary.md: layers, mappings, predicted cycles)")
    float_logits = onnxruntime_outputs(MODEL, x).reshape(images, -1)
    network, ints, golden = _classify(config, out / "model", x)
    compiled = compile_network(config, network)
    log(f"  simulating      {images} images on {sim}, batches of {batch} (a first run builds the "
        f"simulator: about a minute)")
    rtl, counters = run_network_rtl(compiled, ints, sim=sim, build_root=build_root, progress=progress)
    rtl = rtl.reshape(images, -1)
    mismatches = int(np.sum(np.any(rtl != golden, axis=1)))
    accuracy = {name: float(np.mean(logits.argmax(1) == labels))
                for name, logits in (("float", float_logits), ("golden", golden), ("rtl", rtl))}
    runs = -(-images // batch)
    layers = []
    for layer, counts in zip(compiled.layers, counters):
        macs = layer.layer.macs * runs
        layers.append({"name": layer.spec.name, "type": layer.spec.kind, "macs": macs, "cycles": counts["cycles"],
                       "pe_utilization": macs / (config.peak_macs * counts["cycles"])})
    cycles = sum(entry["cycles"] for entry in layers)
    macs = sum(entry["macs"] for entry in layers)
    precision = precision_table(out / "precision", x_train, x_test, y_test, batch=batch, synth=synth,
                                plot=plot or out / "precision.png")
    result = {"config": config_name, "images": images, "batch": batch, "sim": sim, "accuracy": accuracy,
              "rtl_equals_golden": mismatches == 0, "mismatched_images": mismatches, "layers": layers,
              "total": {"cycles": cycles, "macs": macs, "pe_utilization": macs / (config.peak_macs * cycles),
                        "cycles_per_image": cycles / (runs * batch)},
              "predicted_cycles_per_batch": summary["total"]["cycles"], "precision": precision,
              "seconds": time.time() - started}
    (out / "demo.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / "precision.md").write_text(_table(precision) + "\n")
    log("")
    log(f"  accuracy        float (onnxruntime) {accuracy['float']:.1%}   quantised golden {accuracy['golden']:.1%}"
        f"   RTL ({sim}) {accuracy['rtl']:.1%}")
    log(f"  RTL vs golden   {'equal on every image' if not mismatches else f'{mismatches} images DIFFER'}")
    log("")
    log(f"  {'layer':<12} {'type':<8} {'MACs':>12} {'cycles':>10} {'utilisation':>12}   (measured, {runs} runs)")
    for entry in layers:
        log(f"  {entry['name']:<12} {entry['type']:<8} {entry['macs']:>12,} {entry['cycles']:>10,} "
            f"{entry['pe_utilization']:>12.1%}")
    t = result["total"]
    log(f"  {'total':<12} {'':<8} {t['macs']:>12,} {t['cycles']:>10,} {t['pe_utilization']:>12.1%}"
        f"   ({t['cycles_per_image']:,.0f} cycles an image)")
    log("")
    log(f"  precision (golden model, all {len(y_test)} held-out images):")
    for line in _table(precision).splitlines():
        log(f"    {line}")
    log("")
    log(f"  artefacts       {out}/: rtl/, model/, precision/, demo.json, precision.md, "
        f"{Path(plot or out / 'precision.png').name} ({result['seconds']:.0f} s)")
    if mismatches:
        raise RuntimeError(f"the RTL's outputs differ from the golden model's on {mismatches} images")
    return result
