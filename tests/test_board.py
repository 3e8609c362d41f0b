"""The board top (accelerator, on-chip memory, UART host bridge) driven through its UART by the
host driver over the bridge protocol, as on a board; the protocol's host side; lint."""

import numpy as np
import pytest

from test_accel import network
from rowstation.gen.bridge import Command, crc8, request
from rowstation.gen.config import preset
from rowstation.gen.network import LayerSpec, Network, compile_network
from rowstation.hw.export import board_verilog
from rowstation.sim.network import run_network_golden, run_network_model, run_network_rtl
from rowstation.sim.runner import lint

BOARD = {"memory_bytes": 32768, "divisor": 4}
TINY = preset("ulx3s")     # tiny with 16-bit memory addresses, as the ULX3S board tops


def test_crc_and_frames():
    assert crc8(b"123456789") == 0xF4            # CRC-8 (SMBus) check value
    frame = request(Command.WRITE_MEMORY, 0x1234, 1, b"\x01\x02\x03\x04")
    assert frame[:8] == bytes([0x52, 4, 1, 0x34, 0x12, 0, 0, 1]) and frame[-1] == crc8(frame[1:-1])


@pytest.mark.parametrize("sim", ["verilator", pytest.param("icarus", marks=pytest.mark.slow)])
def test_network_through_the_uart(sim):
    """conv-pool-conv-FC on a batch of two: image, input and start written, status polled,
    output and counters read, all through the UART; bit-exact, counters equal to the model."""
    net, x = network()
    compiled = compile_network(TINY, net)
    output, layers = run_network_rtl(compiled, x, sim=sim, board=BOARD)
    np.testing.assert_array_equal(output, run_network_golden(TINY, net, x)[0])
    _, expected = run_network_model(compiled, x)
    for got, want in zip(layers, expected):
        assert {name: got[name] for name in want} == want


def test_one_layer_in_batches_through_the_uart():
    """A single requantised layer, five inputs as three runs of two in one session."""
    rng = np.random.default_rng(3)
    spec = LayerSpec("conv", "conv", weights=rng.integers(-8, 8, (4, 3, 3, 3)), bias=rng.integers(-50, 50, 4),
                     padding=1, shift=4, relu=True)
    net = Network("one", (2, 3, 6, 6), [spec])
    x = rng.integers(-20, 20, (5, 3, 6, 6))
    output, _ = run_network_rtl(compile_network(TINY, net), x, sim="verilator", board=BOARD)
    expected = np.concatenate([run_network_golden(TINY, net, x[i:i + 2])[0] for i in (0, 2)]
                              + [run_network_golden(TINY, Network("one", (1, 3, 6, 6), [spec]), x[4:])[0]])
    np.testing.assert_array_equal(output, expected)


def test_bridge_refuses_corrupted_and_malformed_requests():
    """A corrupted write is answered CHECKSUM and changes nothing; a truncated one TIMEOUT;
    noise is skipped; unknown commands, bad counts, misaligned and out-of-range addresses and
    register errors each get their status; partial-word writes merge; then a network runs."""
    net, x = network()
    compiled = compile_network(TINY, net)
    output, _ = run_network_rtl(compiled, x, sim="verilator", board=BOARD, testcase="bridge_errors")
    np.testing.assert_array_equal(output, run_network_golden(TINY, net, x)[0])


def test_network_larger_than_the_board_memory_is_refused():
    net, x = network()
    with pytest.raises(ValueError, match=r"beyond the board's 4096 bytes of memory"):
        run_network_rtl(compile_network(TINY, net), x, sim="verilator", board={"memory_bytes": 4096, "divisor": 4})


def test_board_verilog_is_lint_clean(tmp_path):
    path = tmp_path / "rowstation_board.v"
    path.write_text(board_verilog(TINY, memory_bytes=8192, divisor=8))
    assert lint(path, top="rowstation_board") == []


def test_board_run_command_drives_the_simulated_board(tmp_path, capsys):
    """`rowstation board run --sim`: the host code a board uses, on the simulated board top."""
    from rowstation.gen.cli import main

    layer = tmp_path / "layer"
    assert main(["random-layer", "--preset", "tiny", "--layer", "N=2,C=3,H=6,W=6,M=4,R=3,S=3,P=1",
                 "-o", str(layer)]) == 0
    assert main(["board", "run", "--board", "ulx3s-25f", "--sim", "verilator", "--layer", str(layer),
                 "--shift", "6", "--relu", "-o", str(tmp_path / "y.npy")]) == 0
    assert "equal to the golden model" in capsys.readouterr().out
    x, w, b = (np.load(layer / f"{name}.npy") for name in ("ifmap", "weights", "bias"))
    from rowstation.sim.golden import run_layer
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"),
                                  run_layer(TINY, x, w, b, padding=1, shift=6, relu=True)[0])
    assert main(["board", "run", "--board", "nexys", "--layer", str(layer), "-o", str(tmp_path / "z.npy")]) == 2
    assert "unknown board 'nexys'" in capsys.readouterr().err
    assert main(["board", "run", "--board", "ulx3s-25f", "--layer", str(layer), "-o", str(tmp_path / "z.npy")]) == 2
    assert "give --port" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("board", ["ulx3s-25f", "ulx3s-85f"])
def test_ulx3s_bitstream(board, tmp_path):
    """`rowstation build --board ulx3s-25f|85f`: a bitstream and a report (several minutes)."""
    import json
    from rowstation.gen.cli import main

    from rowstation.boards.build import BOARDS

    config = preset(BOARDS[board].preset)
    assert main(["build", "--board", board, "-o", str(tmp_path / "b")]) == 0
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["dsps"] == config.peak_macs and report["luts"] <= report["luts_available"]
    assert report["fmax_mhz"] > 0 and report["peak_gmacs"] == pytest.approx(config.peak_macs * report["fmax_mhz"] / 1000)
    assert (tmp_path / "b" / "rowstation_board.bit").stat().st_size > 0


def test_docs_bridge_protocol_is_generated_from_the_code():
    from pathlib import Path
    from rowstation.gen.bridge import markdown

    text = (Path(__file__).parent.parent / "docs" / "boards.md").read_text()
    start = text.index("<!-- bridge protocol: rowstation.gen.bridge.markdown() -->\n")
    table = text[start:text.index("<!-- end bridge protocol -->")].split("\n", 1)[1].strip()
    assert table == markdown()


def test_build_survives_an_abc9_assertion(tmp_path, monkeypatch):
    """yosys' abc9 failing an internal assertion: the build synthesizes again with abc and the
    report says so; any other synthesis error still fails the build, naming it."""
    import json
    import subprocess
    from rowstation.boards import build

    calls = []

    class Platform:
        default_clk_frequency = 25e6

        def add_file(self, *args):
            pass

        def build(self, design, *, name, build_dir, synth_opts="", **options):
            calls.append(synth_opts)
            design._MustUse__silence = True     # not elaborated: no tools here
            out = tmp_path / "b"
            if "-noabc9" not in synth_opts:
                (out / "rowstation_board.rpt").write_text(failure)
                raise subprocess.CalledProcessError(1, "yosys")
            (out / "nextpnr-report.json").write_text(json.dumps(
                {"utilization": {"MULT18X18D": {"used": 24, "available": 28}}, "fmax": {"clk": {"achieved": 26.0}}}))

    monkeypatch.setattr(build.Board, "make_platform", lambda self: Platform())
    failure = "ERROR: Assert `GetSize(conn.first) == GetSize(conn.second)' failed in kernel/rtlil.cc:3091.\n"
    report = build.build_board("ulx3s-25f", preset("ulx3s-25f"), tmp_path / "b", clock_mhz=25.0, log=lambda *a: None)
    assert calls == ["", "-noabc9"] and report["synthesis"].startswith("abc (abc9 failed: ERROR: Assert")
    assert "abc9 failed" in build.report_table(report)
    calls.clear()
    failure = "ERROR: Module `missing' referenced in module `top' is not part of the design.\n"
    with pytest.raises(RuntimeError, match="build failed.*Module `missing'"):
        build.build_board("ulx3s-25f", preset("ulx3s-25f"), tmp_path / "b", clock_mhz=25.0, log=lambda *a: None)
    assert calls == [""]


def test_build_report_from_nextpnr():
    """The report's fields from nextpnr's --report JSON; missed timing is said."""
    from rowstation.boards.build import parse_report, report_table

    nextpnr = {"utilization": {"TRELLIS_COMB": {"used": 100, "available": 24288},
                               "TRELLIS_FF": {"used": 50, "available": 24288},
                               "MULT18X18D": {"used": 12, "available": 28}, "DP16KD": {"used": 4, "available": 56}},
               "fmax": {"clk": {"achieved": 21.5, "constraint": 25.0}}}
    report = parse_report("ecp5", nextpnr, 25.0)
    assert (report["luts"], report["ffs"], report["dsps"], report["brams"]) == (100, 50, 12, 4)
    assert report["dsps_available"] == 28 and report["fmax_mhz"] == 21.5 and not report["timing_met"]
    report.update(board="ulx3s-25f", pe_count=12, macs_per_pe_per_cycle=1, peak_gmacs=0.258, clock_gmacs=0.3, pll=False)
    assert "timing NOT MET" in report_table(report)
    ice40 = parse_report("ice40", {"utilization": {"ICESTORM_LC": {"used": 5000, "available": 5280}},
                                   "fmax": {"clk": {"achieved": 30.0}}}, 12.0)
    assert ice40["luts"] == 5000 and ice40["ffs"] is None and ice40["timing_met"]
    # With a PLL: the run clock and the oscillator's, each against its own constraint.
    two = {"fmax": {"pll": {"achieved": 41.0, "constraint": 40.0}, "osc": {"achieved": 300.0, "constraint": 25.0}}}
    assert parse_report("ecp5", two, 40.0)["timing_met"] and parse_report("ecp5", two, 40.0)["fmax_mhz"] == 41.0
    two["fmax"]["pll"]["achieved"] = 39.0
    assert not parse_report("ecp5", two, 40.0)["timing_met"]


@pytest.mark.parametrize("mhz,want", [(40.0, 40.0), (62.5, 62.5), (50.0, 50.0), (33.0, 25.0 * 9 / 7)])
def test_ecp5_pll_setting_reaches_the_clock_within_the_limits(mhz, want):
    """The nearest clock at or below the asked one (33 MHz needs a 1 MHz phase detector)."""
    from rowstation.boards.clock import ecp5_pll_setting

    pll = ecp5_pll_setting(25.0, mhz)
    assert pll.output_mhz == pytest.approx(want)
    assert 400 <= pll.output_mhz * pll.clkop_div <= 800 and 25.0 / pll.clki_div >= 3.125


def test_pll_clocks_beyond_reach_or_on_ice40_are_refused(tmp_path):
    from rowstation.boards.build import build_board
    from rowstation.boards.clock import ecp5_pll_setting

    with pytest.raises(ValueError, match="cannot make 500 MHz from 25 MHz"):
        ecp5_pll_setting(25.0, 500.0)
    with pytest.raises(ValueError, match="icebreaker runs at its 12 MHz oscillator"):
        build_board("icebreaker", preset("icebreaker"), tmp_path, clock_mhz=20.0, log=lambda _: None)


def test_board_design_with_a_pll_elaborates(tmp_path):
    """The ECP5 board design on a PLL clock: the EHXPLLL with its divisors, the run clock
    constrained, the UART divisor from the run clock."""
    from rowstation.boards.build import BOARDS, BoardDesign
    from rowstation.boards.clock import ecp5_pll_setting

    board = BOARDS["ulx3s-25f"]
    platform = board.make_platform()
    pll = ecp5_pll_setting(25.0, 40.0)
    plan = platform.prepare(BoardDesign(preset("ulx3s"), board, pll=pll), name="top")
    rtlil = plan.files["top.il"]
    assert "EHXPLLL" in rtlil and f"\\CLKFB_DIV {pll.clkfb_div}" in rtlil
    assert 'FREQUENCY NET "pll.clk_pll" 40000000.0 HZ' in plan.files["top.lpf"]
