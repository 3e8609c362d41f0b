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
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..gen.driver import summed
from ..gen.isa import COUNTERS
from ..gen.program import read_elements, write_elements
from .controller_model import run_program
from .golden import max_pool, run_layer


__all__ = ["run_network_golden", "run_network_golden_batches", "run_network_model", "run_network_rtl", "batches", "write_run"]


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


def run_accel_test(config, sim, build_root, testcase, case, *, tmp=None, board=None):
    """Run the cocotb test ``testcase`` of :mod:`rowstation.sim.accel_tb` (or, with ``board``
    = {"memory_bytes": ..., "divisor": ...}, of :mod:`rowstation.sim.board_tb` on the board top)
    with the JSON ``case`` (its ``dir`` filled in: ``tmp``, or a new folder in the build);
    returns the run folder (deleted by the caller)."""
    from .. import gen
    from ..hw.export import accelerator_verilog, board_verilog
    from .runner import design_build, run_cocotb

    sources = [Path(gen.__file__).parent / f for f in ("isa.py", "csr.py", "descriptor.py")]
    if board is None:
        name, top, module, verilog = "accel", "rowstation_accel", "accel_tb", lambda: accelerator_verilog(config)
    else:
        name, top, module = f"board-{board['memory_bytes']}-{board['divisor']}", "rowstation_board", "board_tb"
        verilog = lambda: board_verilog(config, **board)
        sources.append(Path(gen.__file__).parent / "bridge.py")
        case = {**case, **board}
    build, verilog = design_build(config, name=name, sim=sim, build_root=build_root, sources=sources,
                                  verilog=verilog)
    tmp = Path(tmp) if tmp is not None else Path(tempfile.mkdtemp(prefix="run-", dir=build))
    case = {**case, "dir": str(tmp), "config": json.loads(config.to_json())}
    (tmp / "case.json").write_text(json.dumps(case))
    run_cocotb(sim=sim, verilog=verilog, toplevel=top, test_module=f"rowstation.sim.{module}",
               build_dir=build / "sim", test_dir=tmp, env={"ROWSTATION_CASE": str(tmp / "case.json")},
               testcase=testcase)
    return tmp


def _work(layer):
    """A layer's MACs, or the elements a pooling pass reads."""
    return layer.macs or layer.N * layer.C * layer.E * layer.K * layer.W


def write_run(directory, i, output, counters):
    """What a testbench writes after run ``i`` for :func:`run_network_rtl`: the counters, then
    the output, whose appearance is the caller's progress signal."""
    (Path(directory) / f"counters_{i}.json").write_text(json.dumps(counters))
    (Path(directory) / f"output_{i}.bin").write_bytes(bytes(output))


def batches(x, batch):
    """``x`` split into chunks of the network's ``batch`` (the last padded with zeros) and
    the number of real inputs."""
    x = np.asarray(x)
    pad = -len(x) % batch
    if pad:
        x = np.concatenate([x, np.zeros((pad, *x.shape[1:]), dtype=x.dtype)])
    return [x[i:i + batch] for i in range(0, len(x), batch)], len(x) - pad


def run_network_golden_batches(config, network, x):
    """The golden output for any number of inputs ``x`` (the network's layers, every batch)."""
    return run_network_golden(config, replace(network, input_shape=(len(x), *network.input_shape[1:])), x)[0]


def run_network_rtl(compiled, x, *, sim, build_root="build/rtl", stall=0.0, seed=1, progress=None, board=None,
                    testcase="run_job"):
    """Run the compiled network on inputs ``x`` in the simulator ``sim``, every AXI channel
    pausing with probability ``stall``; returns (output, per-layer counters summed over runs).
    With ``board`` ({"memory_bytes": ..., "divisor": ...}) it runs on the board top instead,
    driven through its UART (:mod:`rowstation.sim.board_tb`; ``stall`` does not apply).

    ``x`` may hold any number of inputs: they run as chunks of the network's batch, in one
    simulation that loads the image once; ``progress(done, total)`` is called as chunks finish."""
    if not 0 <= stall < 1:
        raise ValueError(f"stall must be a probability in [0, 1), not {stall}")
    chunks, count = batches(x, compiled.input[1][0])
    jobs = [compiled.job(chunk) for chunk in chunks]       # checks every input before simulating
    work = Path(tempfile.mkdtemp(prefix="job-"))
    try:
        jobs[0].save(work)
        inputs = []
        for i, job in enumerate(jobs):
            inputs.append(str(work / f"input_{i}.bin"))
            Path(inputs[-1]).write_bytes(job.input[1])
        per_run = 1000 + sum(_work(layer.layer) for layer in compiled.layers) // 10
        timeout = len(jobs) * per_run + len(jobs[0].image) // 2
        if board is not None:      # every byte crosses the UART, 10 bits of `divisor` cycles
            compiled.check_fits(board["memory_bytes"])
            timeout += (len(jobs[0].image) + len(jobs) * 8192) * 2 * board["divisor"] // 10   # us
        case = {"job": str(work), "inputs": inputs, "stall": stall, "seed": seed, "timeout_us": timeout}
        tmp = Path(tempfile.mkdtemp(prefix="run-", dir=work))
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(run_accel_test, compiled.config, sim, build_root, testcase, case, tmp=tmp,
                                 board=board)
            done = 0
            while True:
                finished = future.done()
                now = sum((tmp / f"output_{i}.bin").exists() for i in range(len(jobs)))
                if progress and now != done:
                    progress(now, len(jobs))
                done = now
                if finished:
                    break
                time.sleep(0.2)
            future.result()
        outputs = [compiled.output_array((tmp / f"output_{i}.bin").read_bytes()) for i in range(len(jobs))]
        runs = [json.loads((tmp / f"counters_{i}.json").read_text()) for i in range(len(jobs))]
    finally:
        shutil.rmtree(work)
    return np.concatenate(outputs)[:count], summed(runs)
