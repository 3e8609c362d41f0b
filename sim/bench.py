"""Benchmarks (``rowstation bench``, ``make bench``): the performance model on AlexNet's
convolution layers, and layers run on the RTL in Verilator beside the model's prediction.

Not tests: nothing here asserts a speed. Every figure comes with the machine and the tool
versions it was measured with.
"""

import json
import os
import platform
import sys
import time
from pathlib import Path

from ..gen.config import preset
from ..gen.layer import ConvLayer
from ..gen.mapper import map_layer
from ..gen.performance import dram_floor, layer_report
from ..gen.program import compile_layer


__all__ = ["ALEXNET", "run_bench"]


#: AlexNet's convolution layers (batch left out), as Eyeriss ran them.
ALEXNET = {
    "CONV1": "C=3,H=227,W=227,M=96,R=11,S=11,U=4,P=0",
    "CONV2": "C=96,H=27,W=27,M=256,R=5,S=5,P=2,G=2",
    "CONV3": "C=256,H=13,W=13,M=384,R=3,S=3,P=1",
    "CONV4": "C=384,H=13,W=13,M=384,R=3,S=3,P=1,G=2",
    "CONV5": "C=384,H=13,W=13,M=256,R=3,S=3,P=1,G=2",
}

#: Small layers on the ``tiny`` core, run on the RTL by ``--quick``.
QUICK_RTL = ["N=1,C=8,H=24,W=24,M=8,R=3,S=3,P=1", "N=2,C=16,H=12,W=12,M=16,R=3,S=3,P=1"]

#: Max pooling passes on the ``tiny`` accelerator ((N, C, H, W), K, U), run by ``--quick`` too.
POOL_RTL = [((2, 6, 6, 6), 3, 2), ((1, 4, 16, 16), 2, 2), ((1, 3, 13, 13), 3, 2), ((1, 2, 20, 30), 4, 1)]

#: Layers on the full ``eyeriss-v1`` core (minutes each in Verilator).
FULL_RTL = [("CONV1", 1), ("CONV5", 1)]


def _progress(step, total, text, started):
    print(f"[{step}/{total}] {time.monotonic() - started:7.1f} s  {text}", file=sys.stderr, flush=True)


def _model_row(config, name, batch):
    layer = ConvLayer.parse(f"N={batch},{ALEXNET[name]}")
    t0 = time.monotonic()
    mapping = map_layer(config, layer)
    t1 = time.monotonic()
    report = layer_report(mapping, compile_layer(mapping, shift=8, relu=True,   # as the RTL runs it
                                                 check_storage=False))
    return {"layer": name, "batch": batch, "shape": str(layer), "mapping_seconds": round(t1 - t0, 1),
            "p": mapping.p, "q": mapping.q, "s": mapping.seg, "chain": mapping.chain,
            "e_block": mapping.e_block or layer.E, "aligned": mapping.aligned,
            "stationary": mapping.stationary, "tile_groups": mapping.allocation.tile_groups,
            "dram_over_compulsory": round((report["dram_read_bytes"] + report["dram_write_bytes"])
                                          / report["dram_compulsory_bytes"], 2),
            "dram_floor_over_compulsory": round(dram_floor(config, layer) / layer.compulsory(), 2),
            "program_over_compulsory": round(report["program_bytes"] / report["dram_compulsory_bytes"], 2),
            **report}


def _rtl_row(config, name, spec, build, seed):
    from .rtl import run_layers_rtl
    from .stimulus import random_layer_arrays

    layer = ConvLayer.parse(spec)
    arrays = random_layer_arrays(config, layer, seed=seed, zeros=0.4)
    t0 = time.monotonic()
    [(_, stats)] = run_layers_rtl(config, [dict(x=arrays["ifmap"], w=arrays["weights"],
                                                b=arrays["bias"], stride=layer.U, padding=layer.P,
                                                groups=layer.G, shift=8, relu=True)],
                                  sim="verilator", build_root=build)
    seconds = time.monotonic() - t0
    cycles, predicted = stats["counters"]["cycles"], stats["predicted"]["cycles"]
    return {"layer": name, "shape": str(layer), "cycles": cycles, "predicted_cycles": predicted,
            "model_error": round((predicted - cycles) / cycles, 4),
            "pe_utilization": layer.macs / (config.peak_macs * cycles), "seconds": round(seconds, 1),
            "note": "seconds include the Verilator build when the build folder is new"}


def _pool_row(config, shape, kernel, stride, build, seed):
    """A max pooling pass on the accelerator (:mod:`rowstation.sim.network`) beside the
    estimate of :meth:`~rowstation.gen.network.PoolLayer.report`."""
    import numpy as np
    from ..gen.network import LayerSpec, Network, compile_network
    from .network import run_network_rtl

    compiled = compile_network(config, Network("pool", shape, [LayerSpec("pool", "maxpool", kernel=kernel,
                                                                         stride=stride)]))
    bits = config.ifmap_width
    x = np.random.default_rng(seed).integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape)
    t0 = time.monotonic()
    _, [counts] = run_network_rtl(compiled, x, sim="verilator", build_root=build)
    layer = compiled.layers[0].layer
    cycles, predicted = counts["cycles"], layer.report(config)["cycles"]
    return {"layer": str(layer), "shape": str(layer), "cycles": cycles, "predicted_cycles": predicted,
            "model_error": round((predicted - cycles) / cycles, 4), "pe_utilization": 0.0,
            "seconds": round(time.monotonic() - t0, 1)}


def run_bench(*, quick, output, build="build/bench"):
    """Run the benchmarks, print a table and write ``output``/bench.json and bench.md."""
    from ..gen.cli import versions

    started = time.monotonic()
    eyeriss, tiny = preset("eyeriss-v1"), preset("tiny")
    model_jobs = [(name, batch) for batch in (1, 4) for name in ALEXNET]
    rtl_jobs = [(tiny, spec, spec) for spec in QUICK_RTL]
    if not quick:
        rtl_jobs += [(eyeriss, f"AlexNet {name} N={n}", f"N={n},{ALEXNET[name]}") for name, n in FULL_RTL]
    total = len(model_jobs) + len(rtl_jobs) + len(POOL_RTL)
    model, rtl = [], []
    for step, (name, batch) in enumerate(model_jobs, 1):
        _progress(step, total, f"model: eyeriss-v1 AlexNet {name} batch {batch}", started)
        model.append(_model_row(eyeriss, name, batch))
    for step, (config, name, spec) in enumerate(rtl_jobs, len(model_jobs) + 1):
        _progress(step, total, f"RTL (Verilator): {name}", started)
        rtl.append({"preset": "eyeriss-v1" if config is eyeriss else "tiny",
                    **_rtl_row(config, name, spec, build, seed=step)})
    for step, (shape, kernel, stride) in enumerate(POOL_RTL, len(model_jobs) + len(rtl_jobs) + 1):
        _progress(step, total, f"RTL (Verilator): maxpool {shape} K={kernel} U={stride}", started)
        rtl.append({"preset": "tiny", **_pool_row(tiny, shape, kernel, stride, build, seed=step)})
    result = {"machine": {"platform": platform.platform(), "cpus": os.cpu_count(),
                          "python": platform.python_version()},
              "versions": versions(), "model": model, "rtl": rtl,
              "seconds": round(time.monotonic() - started, 1)}
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(result, indent=2) + "\n")
    table = _table(model, rtl, result)
    (out / "bench.md").write_text(table)
    print(table)
    return result


def _table(model, rtl, result):
    lines = ["## Model: AlexNet on eyeriss-v1 (168 PEs)", "",
             "| layer | batch | p x q x s, chain, images, rows | cycles | PE utilization | DRAM / compulsory "
             "| floor / compulsory | program / compulsory | bound by | mapping time |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in model:
        rows = f"{row['e_block']}{' aligned' if row['aligned'] else ''}" + (
            f" stationary ({row['tile_groups']} per tile)" if row["stationary"] else "")
        lines.append(f"| {row['layer']} | {row['batch']} | {row['p']} x {row['q']} x {row['s']}, {row['chain']}, "
                     f"{row['images_per_pass']}, {rows} | "
                     f"{row['cycles']:,} | {row['pe_utilization']:.1%} | {row['dram_over_compulsory']:.2f}x | "
                     f"{row['dram_floor_over_compulsory']:.2f}x | "
                     f"{row['program_over_compulsory']:.2f}x | {row['binding']} | {row['mapping_seconds']} s |")
    for batch in (1, 4):
        rows = [r for r in model if r["batch"] == batch]
        macs, cycles = sum(r["macs"] for r in rows), sum(r["cycles"] for r in rows)
        lines.append(f"| CONV1-5 | {batch} | | {cycles:,} | {macs / (168 * cycles):.1%} | | | | | |")
    lines += ["", "## RTL (Verilator) against the model", "",
              "| preset | layer | cycles | model | error | PE utilization | wall time |", "|---|---|---|---|---|---|---|"]
    for row in rtl:
        lines.append(f"| {row['preset']} | {row['layer']} | {row['cycles']:,} | {row['predicted_cycles']:,} | "
                     f"{row['model_error']:+.1%} | {row['pe_utilization']:.1%} | {row['seconds']} s |")
    machine = result["machine"]
    lines += ["", f"Measured on {machine['platform']}, {machine['cpus']} CPUs, Python {machine['python']}; "
                  f"{result['seconds']} s in all.", ""]
    return "\n".join(lines)
