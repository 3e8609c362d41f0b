"""Synthesis of the generated Verilog with yosys (YoWASP): one MAC maps to one DSP."""

import json

import pytest

from rowstation.boards.toolchain import ECP5_PER_MODULE, fpga_resources, synthesize
from rowstation.gen import preset
from rowstation.hw.export import to_verilog
from rowstation.hw.pe import PE


@pytest.mark.parametrize("script,dsp", [("synth_ice40 -dsp -flatten", "SB_MAC16"),
                                        ("synth_ecp5 -flatten", "MULT18X18D")])
def test_pe_maps_its_mac_to_one_dsp(tmp_path, script, dsp):
    """One DSP per PE; on iCE40 the filter scratchpad also becomes one block RAM."""
    verilog = tmp_path / "rowstation_pe.v"
    verilog.write_text(to_verilog(PE(preset("tiny")), name="rowstation_pe"))
    cells = synthesize(verilog, top="rowstation_pe", script=script)
    assert cells[dsp] == 1
    if dsp == "SB_MAC16":
        assert cells["SB_RAM40_4K"] == 1
    assert sum(count for cell, count in cells.items() if "DFF" in cell or cell == "TRELLIS_FF") > 0


@pytest.mark.slow
def test_eyeriss_pe_synthesizes(tmp_path):
    verilog = tmp_path / "rowstation_pe.v"
    verilog.write_text(to_verilog(PE(preset("eyeriss-v1"), counters=True), name="rowstation_pe"))
    cells = synthesize(verilog, top="rowstation_pe", script="synth_ecp5 -flatten")
    assert cells["MULT18X18D"] == 1


def test_synthesis_errors_are_reported(tmp_path):
    verilog = tmp_path / "broken.v"
    verilog.write_text("module broken(input a, output b); assign b = c +; endmodule\n")
    with pytest.raises(RuntimeError, match=r"^yosys failed on broken.v"):
        synthesize(verilog, top="broken")


def test_eyeriss_core_synthesizes(tmp_path):
    """yosys synthesizes the whole eyeriss-v1 core for ECP5, hierarchy kept and LUTs mapped
    module by module (about 3 minutes with YoWASP): exactly one DSP per PE (none spent on
    address arithmetic), the global buffer in block RAM."""
    from rowstation.hw.export import core_verilog

    verilog = tmp_path / "rowstation_core.v"
    config = preset("eyeriss-v1")
    verilog.write_text(core_verilog(config))
    cells = synthesize(verilog, top="rowstation_core", script=ECP5_PER_MODULE)
    assert cells["MULT18X18D"] == config.pe_count
    # A 512 x 64-bit bank takes two 512 x 36 block RAMs.
    assert cells["DP16KD"] >= 2 * config.glb_banks


def test_tiny_accelerator_synthesizes_for_ecp5(tmp_path):
    """The whole accelerator (AXI ports, sequencer, core) for ECP5, as the demo's precision table
    and ``rowstation sweep --synth`` count it: one DSP per PE, the buffer in block RAM."""
    config = preset("ulx3s")
    resources = fpga_resources(config, tmp_path)
    assert resources["dsps"] == config.pe_count
    assert resources["brams"] >= config.glb_banks
    assert (tmp_path / "rowstation_accel.v").exists()
    # LUTs as nextpnr packs them (TRELLIS_COMB, what the part has 83,640 of on an 85F): carry
    # pairs and distributed RAM take more than one. The ulx3s board top (this accelerator and
    # about 2,000 cells of memory and UART bridge) fits the 25F's 24,288 (docs/boards.md).
    stat = json.loads((tmp_path / "rowstation_accel.stat.json").read_text())
    cells = (stat.get("design") or stat["modules"]["\\rowstation_accel"])["num_cells_by_type"]
    assert cells["CCU2C"] > 0 and cells["TRELLIS_DPR16X4"] > 0
    assert resources["luts"] == cells["LUT4"] + 2 * cells["CCU2C"] + 4 * cells["TRELLIS_DPR16X4"]
    assert 15_000 < resources["luts"] < 24_288 - 2_000 and resources["ffs"] > 0


def test_unknown_family_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown FPGA family 'gowin'; families: ecp5, ice40"):
        fpga_resources(preset("tiny"), tmp_path, "gowin")
