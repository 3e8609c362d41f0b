"""Bitstreams for FPGA boards with the pip-only open flow (amaranth-boards platforms, YoWASP
yosys and nextpnr), and a report of what the design used and how fast it runs."""

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth import *
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

from .clock import ECP5PLL, ecp5_pll_setting
from .toolchain import use_yowasp


__all__ = ["Board", "BOARDS", "BoardDesign", "build_board", "parse_report"]


@dataclass(frozen=True)
class Board:
    platform: str            # "module:Class" in amaranth_boards
    preset: str              # the configuration preset sized for it
    memory_bytes: int        # on-chip memory behind the accelerator's AXI4 port
    baud: int = 115200
    family: str = "ecp5"     # ecp5 or ice40
    clock_mhz: float | None = None   # the run clock, made by the PLL (ECP5); None: the oscillator's

    def make_platform(self):
        import importlib

        module, name = self.platform.split(":")
        cls = getattr(importlib.import_module(f"amaranth_boards.{module}"), name)
        if self.family == "ecp5":     # only the programmer needs openFPGALoader, and we do not program
            cls = type(name, (cls,), {"required_tools": ["yosys", "nextpnr-ecp5", "ecppack"]})
        return cls()


BOARDS = {
    "icebreaker": Board("icebreaker:ICEBreakerPlatform", "icebreaker", 16384, family="ice40"),
    "ulx3s-12f": Board("ulx3s:ULX3S_12F_Platform", "ulx3s", 32768),
    "ulx3s-25f": Board("ulx3s:ULX3S_25F_Platform", "ulx3s-25f", 65536, clock_mhz=175 / 3),  # 25 x 7 / 3
    "ulx3s-45f": Board("ulx3s:ULX3S_45F_Platform", "ulx3s", 65536),
    "ulx3s-85f": Board("ulx3s:ULX3S_85F_Platform", "ulx3s-85f", 65536, clock_mhz=40.0),
}


class BoardDesign(Elaboratable):
    """:class:`~rowstation.hw.board.BoardTop` on the run clock (the board's oscillator, or with
    ``pll`` an ECP5 PLL's output; a power-on reset held until the PLL locks), its USB UART and
    LED 0 (the interrupt)."""

    def __init__(self, config, board, *, pll=None):
        self.config, self.board, self.pll = config, board, pll

    def elaborate(self, platform):
        from ..hw.board import BoardTop

        m = Module()
        # The platforms' default domain has no reset: count 15 oscillator cycles after power-on.
        m.submodules.clock = clock = io.Buffer("i", platform.request(platform.default_clk, dir="-"))
        m.domains.power_on = ClockDomain(reset_less=True)
        m.domains.sync = ClockDomain()
        ticks = Signal(4)
        with m.If(ticks != 15):
            m.d.power_on += ticks.eq(ticks + 1)
        m.d.comb += ClockSignal("power_on").eq(clock.i)
        if self.pll is None:
            m.d.comb += [ClockSignal("sync").eq(clock.i), ResetSignal("sync").eq(ticks != 15)]
            frequency = platform.default_clk_frequency
        else:
            m.submodules.pll = pll = ECP5PLL(self.pll)
            m.submodules.reset = ResetSynchronizer(~pll.locked | (ticks != 15), domain="sync")
            m.d.comb += [pll.clk_in.eq(clock.i), ClockSignal("sync").eq(pll.clk_out)]
            frequency = self.pll.output_mhz * 1e6
        divisor = round(frequency / self.board.baud)
        m.submodules.top = top = BoardTop(self.config, memory_bytes=self.board.memory_bytes, divisor=divisor,
                                          pe_module="rowstation_board_pe")
        uart = platform.request("uart", 0, dir="-")
        m.submodules.rx = rx = io.Buffer("i", uart.rx)
        m.submodules.tx = tx = io.Buffer("o", uart.tx)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += [top.rx.eq(rx.i), tx.o.eq(top.tx), led.o.eq(top.irq)]
        return m


#: nextpnr cell types of each report field, per family.
CELLS = {"ecp5": {"luts": "TRELLIS_COMB", "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD"},
         "ice40": {"luts": "ICESTORM_LC", "dsps": "ICESTORM_DSP", "brams": "ICESTORM_RAM",
                   "spram": "ICESTORM_SPRAM"}}


def parse_report(family, report, clock_mhz):
    """The build report's fields from nextpnr's ``--report`` JSON. On iCE40 a logic cell holds
    a LUT and a flip-flop, so ``luts`` counts logic cells and ``ffs`` is None."""
    utilization = report.get("utilization", {})
    out = {"ffs": None}
    for key, cell in CELLS[family].items():
        entry = utilization.get(cell, {"used": 0, "available": 0})
        out[key], out[f"{key}_available"] = entry["used"], entry["available"]
    clocks = report.get("fmax", {}).values()    # the run clock; with a PLL, also the oscillator's
    out["fmax_mhz"] = min((clock["achieved"] for clock in clocks), default=None)
    out["clock_mhz"] = clock_mhz
    out["timing_met"] = bool(clocks) and all(clock["achieved"] >= clock.get("constraint", clock_mhz)
                                             for clock in clocks)
    return out


def build_board(name, config, output, *, clock_mhz=None, log=print):
    """Build the bitstream of board ``name`` for ``config`` in ``output``, run at ``clock_mhz``
    (default: the board's setting; the oscillator's frequency runs without a PLL); returns the
    report (also written as ``report.json`` and ``report.md``). The tools' logs stay in
    ``output``."""
    from ..hw.export import to_verilog
    from ..hw.pe import PE

    if name not in BOARDS:
        raise ValueError(f"unknown board {name!r}; boards: {', '.join(BOARDS)}")
    board = BOARDS[name]
    platform = board.make_platform()
    oscillator_mhz = platform.default_clk_frequency / 1e6
    clock_mhz = clock_mhz or board.clock_mhz or oscillator_mhz
    pll = None
    if clock_mhz != oscillator_mhz:
        if board.family != "ecp5":
            raise ValueError(f"{name} runs at its {oscillator_mhz:g} MHz oscillator; a PLL clock "
                             f"({clock_mhz:g} MHz) is made on the ECP5 boards only")
        pll = ecp5_pll_setting(oscillator_mhz, clock_mhz)
        clock_mhz = pll.output_mhz
    use_yowasp()
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    platform.add_file("rowstation_board_pe.v", to_verilog(PE(config), name="rowstation_board_pe"))
    options = {"nextpnr_opts": "--report nextpnr-report.json --timing-allow-fail"}
    if board.family == "ice40":
        options["synth_opts"] = "-dsp"
    source = f"PLL from {oscillator_mhz:g} MHz" if pll else "oscillator"
    log(f"building {name} ({board.platform.split(':')[1]}, {clock_mhz:g} MHz clock, {source}) for a "
        f"{config.array_rows}x{config.array_cols} array in {out}/ (logs: rowstation_board.rpt, .tim)")
    started = time.time()
    design = BoardDesign(config, board, pll=pll)
    synthesis = "abc9"
    try:
        try:
            platform.build(design, name="rowstation_board", build_dir=str(out), do_program=False, **options)
        except subprocess.CalledProcessError:
            # yosys' abc9 mapping can fail an internal assertion on some netlists (yosys 0.70:
            # "Assert `GetSize(conn.first) == GetSize(conn.second)'" in its reintegration);
            # the design is fine, so map with abc instead, and say so in the report.
            failure = _errors(out)
            if not (board.family == "ecp5" and "Assert" in failure and not _errors(out, "rowstation_board.tim")):
                raise
            synthesis = f"abc (abc9 failed: {failure.splitlines()[-1].strip()})"
            log(f"yosys' abc9 failed an internal assertion; synthesizing again with abc (-noabc9)")
            options["synth_opts"] = (options.get("synth_opts", "") + " -noabc9").strip()
            platform.build(design, name="rowstation_board", build_dir=str(out), do_program=False, **options)
    except subprocess.CalledProcessError as error:      # a tool failed: the log lines that say why
        tail = _errors(out, "rowstation_board.tim") or _errors(out)
        raise RuntimeError(f"the {name} build failed ({type(error).__name__}); {tail or 'see the logs in ' + str(out)}")
    report = parse_report(board.family, json.loads((out / "nextpnr-report.json").read_text()), clock_mhz)
    report.update(board=name, preset=board.preset, pe_count=config.pe_count, macs_per_pe_per_cycle=config.mac_lanes,
                  peak_gmacs=config.peak_macs * (report["fmax_mhz"] or 0) / 1000,
                  clock_gmacs=config.peak_macs * clock_mhz / 1000, pll=pll is not None,
                  memory_bytes=board.memory_bytes, baud=board.baud, synthesis=synthesis,
                  seconds=round(time.time() - started, 1),
                  bitstream=str(next(iter(sorted(out.glob("rowstation_board.b*"))), "")))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(report_table(report) + "\n")
    return report


def _errors(out, log_name="rowstation_board.rpt"):
    """The last ERROR lines of a tool's log in ``out`` (empty if none or no log)."""
    path = out / log_name
    if not path.exists():
        return ""
    lines = [line for line in path.read_text(errors="replace").splitlines() if "ERROR" in line]
    return "\n".join(lines[-5:])


def report_table(report):
    rows = [("LUTs" if report["board"] != "icebreaker" else "logic cells", "luts"), ("flip-flops", "ffs"),
            ("DSPs", "dsps"), ("block RAMs", "brams")]
    lines = ["| resource | used | available |", "|---|--:|--:|"]
    for label, key in rows:
        if report.get(key) is not None:
            lines.append(f"| {label} | {report[key]:,} | {report[f'{key}_available']:,} |")
    met = "met" if report["timing_met"] else "NOT MET"
    source = "PLL" if report["pll"] else "oscillator"
    lines += ["", f"Fmax {report['fmax_mhz']:.1f} MHz (run clock {report['clock_mhz']:g} MHz from the {source}: "
                  f"timing {met}); peak {report['peak_gmacs']:.2f} GMAC/s at Fmax, {report['clock_gmacs']:.2f} "
                  f"at the run clock ({report['pe_count']} PEs x {report['macs_per_pe_per_cycle']} MAC/cycle)."]
    if report.get("synthesis", "abc9") != "abc9":
        lines.append(f"Synthesized with {report['synthesis']}.")
    return "\n".join(lines)
