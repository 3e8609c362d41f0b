"""Whole layers on the generated PE array Verilog (cocotb), bit-exact against the golden model."""

import json

import pytest

from rowstation.gen import preset
from rowstation.hw.array import PEArray
from rowstation.hw.export import to_verilog
from rowstation.sim.runner import lint, run_cocotb

from test_pe_rtl import BUILD


TINY = preset("tiny")

# Stride 1-4, padding, groups and depthwise, 1x1, FC, R > array rows, E > array cols, batch > 1,
# S wider than a PE (segments), each with memory-side stalls.
LAYERS = [
    ("N=1,C=2,H=6,W=6,M=2,R=3,S=3,P=1", 0.0, 0.0),
    ("N=2,C=3,H=7,W=5,M=4,R=2,S=2,U=2", 0.2, 0.3),
    ("N=1,C=2,H=6,W=9,M=2,R=5,S=3,P=1,G=2", 0.1, 0.5),
    ("N=1,C=4,H=6,W=6,M=4,R=3,S=3,P=1,G=4", 0.3, 0.3),
    ("N=2,C=3,H=5,W=5,M=5,R=1,S=1", 0.2, 0.2),
    ("N=2,C=6,H=3,W=3,M=4,R=3,S=3", 0.2, 0.4),
    ("N=1,C=2,H=9,W=11,M=2,R=3,S=3,U=3", 0.1, 0.1),
    ("N=1,C=1,H=9,W=12,M=2,R=2,S=4,U=4", 0.0, 0.6),
    ("N=1,C=1,H=4,W=16,M=2,R=2,S=14", 0.2, 0.2),
]


def write_case(path, config, layers, timeout_us):
    path.write_text(json.dumps({
        "config": config.to_dict(), "timeout_us": timeout_us,
        "layers": [{"layer": spec, "seed": n, "idle": idle, "stall": stall}
                   for n, (spec, idle, stall) in enumerate(layers)],
    }))
    return path


def array_verilog(config, name):
    path = BUILD / name / "rowstation_array.v"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = to_verilog(PEArray(config), name="rowstation_array")
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def test_array_layers_bit_exact_on_verilator(tmp_path):
    verilog = array_verilog(TINY, "array-tiny-verilator")
    case = write_case(tmp_path / "case.json", TINY, LAYERS, timeout_us=20_000)
    run_cocotb(sim="verilator", verilog=verilog, toplevel="rowstation_array", test_module="cocotb_array",
               build_dir=verilog.parent / "sim", test_dir=tmp_path, env={"ROWSTATION_CASE": str(case)})


def test_array_layers_bit_exact_on_icarus(tmp_path):
    verilog = array_verilog(TINY, "array-tiny-icarus")
    case = write_case(tmp_path / "case.json", TINY, LAYERS[1:4] + LAYERS[7:8], timeout_us=20_000)
    run_cocotb(sim="icarus", verilog=verilog, toplevel="rowstation_array", test_module="cocotb_array",
               build_dir=verilog.parent / "sim", test_dir=tmp_path, env={"ROWSTATION_CASE": str(case)})


def test_array_verilog_is_lint_clean(tmp_path):
    verilog = tmp_path / "rowstation_array.v"
    verilog.write_text(to_verilog(PEArray(TINY), name="rowstation_array"))
    assert lint(verilog, top="rowstation_array") == []
