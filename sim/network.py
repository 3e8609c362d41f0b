"""Networks on the golden model, on the controller model, and on the accelerator's RTL.

- :func:`run_network_golden`: layer after layer with :func:`~rowstation.sim.golden.run_layer`.
- :func:`run_network_model`: the compiled programs on the controller model over the network's
  memory image, with the descriptors' tensor bases: the output, and the counters the RTL must
  show per layer (all but ``cycles`` and ``active_pe``).
- :func:`run_network_rtl`: the generated ``rowstation_accel`` in Icarus Verilog or Verilator,
  driven through its AXI4-Lite port by the host driver (:mod:`rowstation.gen.driver`) with
  cocotbext-axi bus models (:mod:`rowstation.sim.accel_tb`).
"""

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..gen.isa import COUNTERS
from ..gen.program import read_elements, write_elements
from .controller_model import run_program
from .golden import max_pool, run_layer


__all__ = ["run_network_golden", "run_network_model", "run_network_rtl"]


def run_network_golden(config, network, x):
    """The network's output for input ``x`` and each layer's output."""
    outputs = []
    for spec, layer in zip(network.layers, network.shapes()):
        if not spec.computes:
            x = max_pool(x, size=layer.K, stride=layer.U)
            outputs.append(x)
            continue
        w = spec.conv_weights(x.shape)
        y, _ = run_layer(config, x, w, spec.bias, stride=layer.U, padding=layer.P, groups=layer.G,
                         shift=spec.shift or 0, relu=spec.relu, raw=spec.shift is None)
        outputs.append(y)
        x = y
    return x, outputs


def run_network_model(compiled, x):
    """(output, per-layer expected counters) of the compiled network on the controller model."""
    memory = np.zeros(compiled.end, dtype=np.uint8)
    memory[compiled.base:] = np.frombuffer(bytes(compiled.image), dtype=np.uint8)
    addr, shape, size = compiled.input
    data = compiled.input_bytes(x)
    memory[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)
    counts, current = [], np.asarray(x)
    for layer in compiled.layers:
        d = layer.descriptor
        if not layer.spec.computes:   # the pooler: no counter of the core moves
            current = max_pool(current, size=layer.layer.K, stride=layer.layer.U)
            write_elements(memory, d["output"], current, compiled.input[2])   # activations' size
            counts.append({name: 0 for name in COUNTERS if name not in ("cycles", "active_pe")})
            continue
        streams = layer.program.streams
        counts.append(run_program(layer.mapping, streams, memory, current, layer.weights,
                                  bases={name: d[name] for name in ("weights", "ifmap", "output")}))
        L = layer.layer
        size = layer.program.layout.output_bytes
        current = read_elements(memory, d["output"], int(np.prod(L.ofmap_shape)), size).reshape(L.ofmap_shape)
    return current, counts


def run_accel_test(config, sim, build_root, testcase, case, *, tmp_prefix="run-"):
    """Run the cocotb test ``testcase`` of :mod:`rowstation.sim.accel_tb` with the JSON
    ``case`` (its ``dir`` filled in); returns the run folder (deleted by the caller)."""
    from .. import gen
    from ..hw.export import accelerator_verilog
    from .runner import design_build, run_cocotb

    build, verilog = design_build(
        config, name="accel", sim=sim, build_root=build_root,
        sources=[Path(gen.__file__).parent / f for f in ("isa.py", "csr.py", "descriptor.py")],
        verilog=lambda: accelerator_verilog(config))
    tmp = Path(tempfile.mkdtemp(prefix=tmp_prefix, dir=build))
    case = {**case, "dir": str(tmp), "config": json.loads(config.to_json())}
    (tmp / "case.json").write_text(json.dumps(case))
    run_cocotb(sim=sim, verilog=verilog, toplevel="rowstation_accel", test_module="rowstation.sim.accel_tb",
               build_dir=build / "sim", test_dir=tmp, env={"ROWSTATION_CASE": str(tmp / "case.json")},
               testcase=testcase)
    return tmp


def _work(layer):
    """A layer's MACs, or the elements a pooling pass reads."""
    return layer.macs or layer.N * layer.C * layer.E * layer.K * layer.W


def run_network_rtl(compiled, x, *, sim, build_root="build/rtl", stall=0.0, seed=1):
    """Run the compiled network on input ``x`` in the simulator ``sim``, every AXI channel
    pausing with probability ``stall``; returns (output, per-layer counters)."""
    if not 0 <= stall < 1:
        raise ValueError(f"stall must be a probability in [0, 1), not {stall}")
    job = compiled.job(x)
    work = Path(tempfile.mkdtemp(prefix="job-"))
    try:
        job.save(work)
        tmp = run_accel_test(compiled.config, sim, build_root, "run_job",
                             {"job": str(work), "stall": stall, "seed": seed,
                              "timeout_us": 1000 + sum(_work(layer.layer) for layer in compiled.layers) // 10
                              + len(job.image) // 2})
        output = compiled.output_array((tmp / "output.bin").read_bytes())
        layers = json.loads((tmp / "counters.json").read_text())
        shutil.rmtree(tmp)
    finally:
        shutil.rmtree(work)
    return output, layers
