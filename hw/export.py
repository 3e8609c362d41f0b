"""Verilog export of rowstation components."""

from amaranth.back import verilog


__all__ = ["to_verilog", "array_verilog", "core_verilog", "accelerator_verilog", "board_verilog", "ACCEL_PORT_PREFIXES"]

#: Verilog port name prefix of each of the accelerator's interfaces.
ACCEL_PORT_PREFIXES = {"ctrl": "s_axil_", "mem": "m_axi_", "irq": ""}


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
    ``rowstation_core_pe`` (as in :func:`array_verilog`; named apart from the other files'
    PEs, so every generated file can go into one project)."""
    from .core import RowStationCore
    from .pe import PE

    return (to_verilog(PE(config), name="rowstation_core_pe")
            + to_verilog(RowStationCore(config, pe_module="rowstation_core_pe"), name="rowstation_core"))


def accelerator_verilog(config):
    """Verilog of the accelerator (:class:`~rowstation.hw.accelerator.Accelerator`) as the one
    self-contained module tree ``rowstation_accel``, with the PE written once. Ports: ``clk``,
    ``rst`` (active high, synchronous), ``s_axil_*`` (the AXI4-Lite registers), ``m_axi_*``
    (the AXI4 memory manager) and ``irq``, named as the AXI specification names the signals."""
    from .accelerator import Accelerator
    from .pe import PE

    accel = Accelerator(config, pe_module="rowstation_accel_pe")
    ports = {}
    for path, _, value in accel.signature.flatten(accel):
        prefix = ACCEL_PORT_PREFIXES[path[0]]
        ports[prefix + ("_".join(map(str, path[1:])) or path[0])] = (value, None)
    return (to_verilog(PE(config), name="rowstation_accel_pe")
            + verilog.convert(accel, name="rowstation_accel", ports=ports, emit_src=False))


def board_verilog(config, *, memory_bytes, divisor):
    """Verilog of the board top (:class:`~rowstation.hw.board.BoardTop`: accelerator, on-chip
    memory, UART host bridge) as ``rowstation_board``, ports ``clk``, ``rst``, ``rx``, ``tx``,
    ``irq``, with the PE written once as ``rowstation_board_pe``."""
    from .board import BoardTop
    from .pe import PE

    top = BoardTop(config, memory_bytes=memory_bytes, divisor=divisor, pe_module="rowstation_board_pe")
    return (to_verilog(PE(config), name="rowstation_board_pe")
            + verilog.convert(top, name="rowstation_board", emit_src=False))
