"""Run layers on the generated core RTL (Icarus Verilog or Verilator) through cocotb.

The Verilog of a configuration is built once into ``build_root/core-<config hash>-<sim>`` and
reused. The testbench (:mod:`rowstation.sim.core_tb`) is the host streaming each layer's
program and the external memory behind the core.
"""

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np

from .runner import run_cocotb


__all__ = ["run_layers_rtl"]


def _verilog(config, build):
    from ..hw.export import core_verilog

    path = build / "rowstation_core.v"
    if not path.exists():  # the folder is named after the configuration's hash
        build.mkdir(parents=True, exist_ok=True)
        path.write_text(core_verilog(config))
    return path


def run_layers_rtl(config, layers, *, sim, build_root="build/rtl", timeout_us=None):
    """Run each layer (a dict of x, w, b, stride, padding, groups and optional idle, stall,
    seed) in one simulation; returns [(accumulation, statistics)] in order."""
    from .. import gen, hw

    # Named after the configuration and the gateware, so a changed design is rebuilt.
    files = sorted(Path(hw.__file__).parent.glob("*.py")) + [Path(gen.__file__).parent / "program.py"]
    source = "".join(p.read_text() for p in files)
    digest = hashlib.sha1((config.to_json() + source).encode()).hexdigest()[:12]
    build = Path(build_root).resolve() / f"core-{digest}-{sim}"
    verilog = _verilog(config, build)
    tmp = Path(tempfile.mkdtemp(prefix="run-", dir=build))  # kept if the run fails, for its log
    cases, slots = [], 0
    for n, layer in enumerate(layers):
        paths = {name: tmp / f"{n}-{name}.npy" for name in ("ifmap", "weights", "bias", "output")}
        np.save(paths["ifmap"], layer["x"])
        np.save(paths["weights"], layer["w"])
        if layer.get("b") is not None:
            np.save(paths["bias"], layer["b"])
        cases.append({
            "ifmap": str(paths["ifmap"]), "weights": str(paths["weights"]),
            "bias": str(paths["bias"]) if layer.get("b") is not None else None,
            "stride": layer["stride"], "padding": layer["padding"], "groups": layer["groups"],
            "idle": layer.get("idle", 0.0), "stall": layer.get("stall", 0.0),
            "seed": layer.get("seed", n), "output": str(paths["output"]),
            "stats": str(tmp / f"{n}-stats.json"),
        })
        slots += int(np.asarray(layer["w"]).size) * int(np.asarray(layer["x"]).size)
    case = tmp / "case.json"
    # A generous bound (10 ns cycles) so a deadlock fails instead of hanging.
    case.write_text(json.dumps({"config": config.to_dict(), "layers": cases,
                                "timeout_us": timeout_us or 1000 + slots // 10}))
    run_cocotb(sim=sim, verilog=verilog, toplevel="rowstation_core",
               test_module="rowstation.sim.core_tb", build_dir=build / "sim", test_dir=tmp,
               env={"ROWSTATION_CASE": str(case)})
    results = [(np.load(c["output"]), json.loads(Path(c["stats"]).read_text())) for c in cases]
    shutil.rmtree(tmp)
    return results
