"""Verilog export of rowstation components."""

from amaranth.back import verilog


__all__ = ["to_verilog", "array_verilog", "core_verilog"]


def to_verilog(component, *, name):
    """Verilog of ``component`` as module ``name``, ports named after its signature
    (streams as ``name__valid``, ``name__ready``, ``name__payload``), with ``clk`` and ``rst``."""
    return verilog.convert(component, name=name, emit_src=False)


def array_verilog(config):
    """Verilog of the PE array as ``rowstation_array``, with the PE written once as
    ``rowstation_pe`` and instantiated per position (Amaranth would otherwise emit one module
    per PE, which large arrays cannot afford)."""
    from .array import PEArray
    from .pe import PE

    return (to_verilog(PE(config), name="rowstation_pe")
            + to_verilog(PEArray(config, pe_module="rowstation_pe"), name="rowstation_array"))


def core_verilog(config):
    """Verilog of the accelerator core as ``rowstation_core``, with the PE written once as
    ``rowstation_pe`` (as in :func:`array_verilog`)."""
    from .core import RowStationCore
    from .pe import PE

    return (to_verilog(PE(config), name="rowstation_pe")
            + to_verilog(RowStationCore(config, pe_module="rowstation_pe"), name="rowstation_core"))
