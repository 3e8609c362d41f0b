"""The generated PE Verilog on Icarus Verilog and Verilator (cocotb), and its lint."""

import json
from pathlib import Path

import numpy as np
import pytest

from rowstation.gen import PEConfig
from rowstation.hw.export import to_verilog
from rowstation.hw.pe import PE
from rowstation.sim.pe_model import filter_transfers, filter_words, ifmap_words
from rowstation.sim.runner import LINT_WAIVERS, SIMULATORS, lint, run_cocotb
from rowstation.sim.stimulus import random_pe_pass

from pe_harness import expected
from test_pe import CONFIGS, LANE_CONFIGS


BUILD = Path(__file__).resolve().parent.parent / "build" / "tests"

# Per configuration: passes with p, q > 1, strides 1-4, S up to the maximum, accumulation.
PASSES = {
    "w4": [PEConfig(s=3, u=1, p=2, q=2, f=5, rows=2, accumulate=True),
           PEConfig(s=8, u=4, p=3, q=1, f=3, rows=1),
           PEConfig(s=2, u=2, p=1, q=4, f=4, rows=2, accumulate=True)],
    "w8": [PEConfig(s=5, u=2, p=3, q=2, f=4, rows=2, accumulate=True),
           PEConfig(s=12, u=3, p=4, q=1, f=3, rows=1),
           PEConfig(s=1, u=1, p=8, q=6, f=5, rows=2, accumulate=True)],
    "w16": [PEConfig(s=4, u=4, p=6, q=2, f=4, rows=2, accumulate=True),
            PEConfig(s=16, u=1, p=2, q=1, f=3, rows=2),
            PEConfig(s=3, u=2, p=3, q=5, f=4, rows=1, accumulate=True)],
}
# MAC lanes: p a multiple of the lanes and not, a step shorter than an output's psums.
PASSES["w8x2"] = [PEConfig(s=3, u=1, p=3, q=2, f=5, rows=2, accumulate=True, lanes=2),
                  PEConfig(s=1, u=1, p=8, q=1, f=4, rows=1, lanes=2)]
PASSES["w16x4"] = [PEConfig(s=3, u=2, p=6, q=2, f=4, rows=2, accumulate=True, lanes=4),
                   PEConfig(s=4, u=4, p=1, q=2, f=3, rows=1, lanes=4)]
VARIANTS = [("no stalls", 0.0, 0.0), ("random stalls", 0.3, 0.3), ("heavy backpressure", 0.1, 0.85),
            ("starved inputs", 0.7, 0.1)]


def write_verilog(config, path):
    text = to_verilog(PE(config, counters=True), name="rowstation_pe")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:  # keep the simulator's build cache valid
        path.write_text(text)
    return path


def write_case(config, cfgs, path, seed):
    rng = np.random.default_rng(seed)
    passes = [(cfg.check(config), *random_pe_pass(config, cfg, rng=rng, zeros=0.3)) for cfg in cfgs]
    words, counts = expected(passes)
    case = {"passes": [], "counts": counts,
            "cycles": cfgs[0].mac_cycles + cfgs[0].drain_cycles + config.pe_latency,
            "variants": [{"name": name, "idle": idle, "stall": stall, "seed": seed + i}
                         for i, (name, idle, stall) in enumerate(VARIANTS)]}
    slots = sum(cfg.rows * cfg.f * cfg.s * cfg.p * cfg.q + cfg.filter_words + x.size for cfg, _, x, _ in passes)
    case["timeout_us"] = len(VARIANTS) * 20 * (slots + 100) * 10 // 1000  # 20x the stall-free time at 10 ns
    start = 0
    for cfg, w, x, i in passes:
        count = cfg.rows * cfg.f * cfg.p
        case["passes"].append({
            "cfg": {"s": cfg.s, "u": cfg.u, "p": cfg.p, "q": cfg.q, "f": cfg.f, "rows": cfg.rows,
                    "accumulate": int(cfg.accumulate)},
            "filt": filter_transfers(config, filter_words(w, cfg.lanes)), "ifmap": ifmap_words(x).tolist(),
            "ipsum": [] if i is None else i.ravel().tolist(),
            "opsum": words[start:start + count].tolist(),
        })
        start += count
    path.write_text(json.dumps(case))
    return path


@pytest.mark.parametrize("sim", SIMULATORS)
@pytest.mark.parametrize("name", [*CONFIGS, *LANE_CONFIGS])
def test_pe_rtl_matches_golden(sim, name, tmp_path):
    config = {**CONFIGS, **LANE_CONFIGS}[name]
    build = BUILD / f"pe-{name}-{sim}"
    verilog = write_verilog(config, build / "rowstation_pe.v")
    case = write_case(config, PASSES[name], tmp_path / "case.json", seed=len(name))
    run_cocotb(sim=sim, verilog=verilog, toplevel="rowstation_pe", test_module="cocotb_pe",
               build_dir=build / "sim", test_dir=tmp_path, env={"ROWSTATION_CASE": str(case)})


@pytest.mark.parametrize("name", ["w4", "w16", "w8x2", "w16x4"])
@pytest.mark.parametrize("counters", [False, True])
def test_pe_verilog_is_lint_clean(name, counters, tmp_path):
    verilog = tmp_path / "rowstation_pe.v"
    verilog.write_text(to_verilog(PE({**CONFIGS, **LANE_CONFIGS}[name], counters=counters), name="rowstation_pe"))
    assert lint(verilog, top="rowstation_pe") == []
    assert set(LINT_WAIVERS) == {"WIDTH", "UNUSEDSIGNAL", "PROCASSINIT", "DECLFILENAME", "CASEINCOMPLETE"}


def test_lint_reports_real_problems(tmp_path):
    """The lint check can fail: an undriven output is reported."""
    verilog = tmp_path / "bad.v"
    verilog.write_text("module bad(input clk, output [3:0] y);\nendmodule\n")
    assert any("UNDRIVEN" in line for line in lint(verilog, top="bad"))
