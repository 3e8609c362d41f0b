"""Verilog export of rowstation components."""

from amaranth.back import verilog


__all__ = ["to_verilog"]


def to_verilog(component, *, name):
    """Verilog of ``component`` as module ``name``, ports named after its signature
    (streams as ``name__valid``, ``name__ready``, ``name__payload``), with ``clk`` and ``rst``."""
    return verilog.convert(component, name=name, emit_src=False)
