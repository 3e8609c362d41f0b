"""The run clock of a board: its oscillator, or an ECP5 PLL (EHXPLLL) that makes another clock
from it, with the divisor search of Project Trellis' ``ecppll``."""

from dataclasses import dataclass

from amaranth import *


__all__ = ["PLLSetting", "ecp5_pll_setting", "ECP5PLL"]

#: The EHXPLLL's limits (MHz; Lattice TN1263, as ecppll uses them).
_PFD = (3.125, 400.0)
_VCO = (400.0, 800.0)
_OUT = (3.125, 400.0)


@dataclass(frozen=True)
class PLLSetting:
    clki_div: int
    clkfb_div: int
    clkop_div: int
    input_mhz: float

    @property
    def output_mhz(self):
        return self.input_mhz * self.clkfb_div / self.clki_div


def ecp5_pll_setting(input_mhz, output_mhz):
    """The divisors whose output is nearest ``output_mhz`` without exceeding it (the clock a
    design is timed for must not be overshot), feedback from CLKOP; a ValueError names the
    limits when no setting reaches within 5 %."""
    best = None
    for clki_div in range(1, 129):
        if not _PFD[0] <= input_mhz / clki_div <= _PFD[1]:
            continue
        for clkfb_div in range(1, 81):
            out = input_mhz * clkfb_div / clki_div
            if out > output_mhz or not _OUT[0] <= out <= _OUT[1]:
                continue
            for clkop_div in range(1, 129):
                if _VCO[0] <= out * clkop_div <= _VCO[1]:
                    if best is None or out > best.output_mhz:
                        best = PLLSetting(clki_div, clkfb_div, clkop_div, input_mhz)
                    break
    if best is None or best.output_mhz < 0.95 * output_mhz:
        raise ValueError(f"an ECP5 PLL cannot make {output_mhz:g} MHz from {input_mhz:g} MHz "
                         f"(output {_OUT[0]:g}-{_OUT[1]:g} MHz, VCO {_VCO[0]:g}-{_VCO[1]:g} MHz)")
    return best


class ECP5PLL(Elaboratable):
    """``clk_out`` from ``clk_in`` by ``setting``; ``locked`` once it is stable."""

    def __init__(self, setting):
        self.setting = setting
        self.clk_in, self.clk_out, self.locked = Signal(), Signal(name="clk_pll"), Signal()

    def elaborate(self, platform):
        m = Module()
        s = self.setting
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=f"{s.input_mhz:g}", a_FREQUENCY_PIN_CLKOP=f"{s.output_mhz:.6f}",
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1", a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA", p_FEEDBK_PATH="CLKOP",
            p_CLKI_DIV=s.clki_div, p_CLKFB_DIV=s.clkfb_div, p_CLKOP_ENABLE="ENABLED",
            p_CLKOP_DIV=s.clkop_div, p_CLKOP_CPHASE=s.clkop_div - 1, p_CLKOP_FPHASE=0,
            i_RST=0, i_STDBY=0, i_CLKI=self.clk_in, i_CLKFB=self.clk_out, i_PHASESEL0=0,
            i_PHASESEL1=0, i_PHASEDIR=1, i_PHASESTEP=1, i_PHASELOADREG=1, i_PLLWAKESYNC=0,
            i_ENCLKOP=0, o_CLKOP=self.clk_out, o_LOCK=self.locked)
        if platform is not None:
            platform.add_clock_constraint(self.clk_out, s.output_mhz * 1e6)
        return m
