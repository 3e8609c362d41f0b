"""Max pooling on chip: a pass over a tensor in external memory, between two layers.

:class:`MaxPooler` reads the ``planes`` (N x C) input planes row by row and writes each output
row once: for output row ``e`` it reads input rows ``e*U .. e*U+K-1`` (one run each), takes
the maximum of every K-wide window at stride U along each row as the elements stream in (a
shift register of the last K and a tree of comparisons, two pipeline stages behind the reader),
keeps the running maximum over the K rows in a line buffer of ``F`` entries (block RAM, read a
stage ahead of its update), then writes the row. No padding; windows that do not fit are dropped (as
:func:`rowstation.sim.golden.max_pool`).
"""

from amaranth import *
from amaranth.lib import data, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen.descriptor import MAX_WINDOW
from .memory import ElementReader, ElementWriter, MemoryReadSignature, MemoryWriteSignature


__all__ = ["PoolParams", "MaxPooler"]


class PoolParams(data.StructLayout):
    """A pooling pass: byte addresses of the input and output, input planes, row width W and
    output width F, window K, stride U, output rows E per plane, and the byte steps between the
    first input rows of consecutive output rows (U W) and between planes (H W)."""

    def __init__(self, addr_width):
        super().__init__({"input": addr_width, "output": addr_width, "planes": addr_width, "width": 16,
                          "out_width": 16, "window": 8, "stride": 8, "out_rows": 16,
                          "row_step": addr_width, "plane_step": addr_width})


class MaxPooler(wiring.Component):
    """``start`` (with ``params`` held) runs a pass; ``done`` strobes once every output row is
    written and its responses are back. ``config.max_dim`` bounds F (the line buffer)."""

    def __init__(self, config):
        self._config = config
        super().__init__({"start": In(1), "params": In(PoolParams(config.dram_addr_width)), "done": Out(1),
                          "memory_rd": Out(MemoryReadSignature(config.dram_width, config.dram_addr_width)),
                          "memory_wr": Out(MemoryWriteSignature(config.dram_width, config.dram_addr_width))})

    def elaborate(self, platform):
        m = Module()
        c, p = self._config, self.params
        bits = c.memory_width(c.ifmap_width)
        size = (bits // 8).bit_length() - 1
        m.submodules.reader = reader = ElementReader(width=c.dram_width, burst=c.dram_burst,
                                                     addr_width=c.dram_addr_width, element_width=bits)
        m.submodules.writer = writer = ElementWriter(width=c.dram_width, burst=c.dram_burst,
                                                     addr_width=c.dram_addr_width, element_width=bits)
        wiring.connect(m, reader.memory, wiring.flipped(self.memory_rd))
        wiring.connect(m, writer.memory, wiring.flipped(self.memory_wr))
        row_bytes = p.width << size
        # Each count's last value, registered at start: the loops compare with registers.
        last = {name: Signal(len(getattr(p, name)), name=f"{name}_last")
                for name in ("window", "out_rows", "planes", "width", "out_width")}
        with m.If(self.start):
            m.d.sync += [signal.eq(getattr(p, name) - 1) for name, signal in last.items()]

        # Issue: one run per input row, in the order the rows are consumed.
        issuing = Signal()
        i_ky, i_row, i_plane = Signal(8), Signal(16), Signal.like(p.planes)
        addr, row_addr, plane_addr = (Signal(c.dram_addr_width) for _ in range(3))
        m.d.comb += [reader.runs.valid.eq(issuing), reader.runs.payload.addr.eq(addr),
                     reader.runs.payload.count.eq(p.width), reader.runs.payload.size.eq(size)]
        with m.If(self.start):
            m.d.sync += [issuing.eq(1), i_ky.eq(0), i_row.eq(0), i_plane.eq(0), addr.eq(p.input),
                         row_addr.eq(p.input), plane_addr.eq(p.input)]
        with m.Elif(reader.runs.valid & reader.runs.ready):
            with m.If(i_ky != last["window"]):
                m.d.sync += [i_ky.eq(i_ky + 1), addr.eq(addr + row_bytes)]
            with m.Elif(i_row != last["out_rows"]):
                m.d.sync += [i_ky.eq(0), i_row.eq(i_row + 1), row_addr.eq(row_addr + p.row_step),
                             addr.eq(row_addr + p.row_step)]
            with m.Elif(i_plane != last["planes"]):
                m.d.sync += [i_ky.eq(0), i_row.eq(0), i_plane.eq(i_plane + 1),
                             plane_addr.eq(plane_addr + p.plane_step), row_addr.eq(plane_addr + p.plane_step),
                             addr.eq(plane_addr + p.plane_step)]
            with m.Else():
                m.d.sync += issuing.eq(0)

        # Consume, in four stages so no long path runs from the reader through the maxima to the
        # line buffer: (0) each element shifts into the window registers; (1) the maxima of
        # pairs of the window's K newest (masked by a register set at start) are registered;
        # (2) the window's maximum, the rest of the tree, is registered while the line buffer's
        # entry for its output column is read; (3) it meets the running maximum over the
        # window's rows, written back on an emitting column.
        m.submodules.line = line = Memory(shape=signed(bits), depth=c.max_dim, init=[])
        lb_write = line.write_port()
        lb_read = line.read_port(transparent_for=(lb_write,))
        window = [Signal(signed(bits), name=f"window_{j}") for j in range(MAX_WINDOW)]
        mask = Signal(MAX_WINDOW)
        c_ky, ix, until, ox = Signal(8), Signal(16), Signal(8), Signal(16)
        c_row, c_plane = Signal(16), Signal.like(p.planes)
        wx, out_addr = Signal(16), Signal(c.dram_addr_width)
        value = reader.elements.payload.data[0][:bits].as_signed()
        emit = (until == 0) & (ox < p.out_width)
        fire = reader.elements.valid & reader.elements.ready
        with m.If(self.start):
            m.d.sync += mask.eq(Cat(j < p.window for j in range(MAX_WINDOW)))
        # Each stage's (emitted, first row, output column), stages 1 to 3.
        stages = [(Signal(name=f"emitted_{i}"), Signal(name=f"first_row_{i}"), Signal(16, name=f"at_{i}"))
                  for i in (1, 2, 3)]
        m.d.sync += [signal.eq(value) for signal, value in zip(stages[0], (fire & emit, c_ky == 0, ox))]
        m.d.sync += [signal.eq(value) for later, earlier in zip(stages[1:], stages) for signal, value in zip(later, earlier)]
        lowest = C(-(1 << (bits - 1)), signed(bits))

        def maxima(level):
            return [Mux(a > b, a, b) for a, b in zip(level[::2], level[1::2])]

        pairs = [Signal(signed(bits), name=f"pair_{j}") for j in range(MAX_WINDOW // 2)]
        m.d.sync += [pair.eq(value) for pair, value in
                     zip(pairs, maxima([Mux(mask[j], w, lowest) for j, w in enumerate(window)]))]
        level = pairs
        while len(level) > 1:
            level = maxima(level)
        horizontal = Signal(signed(bits))
        m.d.sync += horizontal.eq(level[0])
        (_, _, at_2), (emitted_3, first_row_3, at_3) = stages[1:]
        m.d.comb += [lb_read.addr.eq(at_2), lb_write.addr.eq(at_3), lb_write.en.eq(emitted_3),
                     lb_write.data.eq(Mux(first_row_3 | (horizontal > lb_read.data), horizontal, lb_read.data))]

        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [c_ky.eq(0), ix.eq(0), ox.eq(0), until.eq(p.window - 1), c_row.eq(0),
                                 c_plane.eq(0), out_addr.eq(p.output)]
                    m.next = "READ"
            with m.State("READ"):
                m.d.comb += reader.elements.ready.eq(1)
                with m.If(fire):
                    m.d.sync += [window[0].eq(value)] + [window[j].eq(window[j - 1]) for j in range(1, len(window))]
                    with m.If(emit):
                        m.d.sync += [ox.eq(ox + 1), until.eq(p.stride - 1)]
                    with m.Elif(until != 0):
                        m.d.sync += until.eq(until - 1)
                    m.d.sync += ix.eq(ix + 1)
                    with m.If(ix == last["width"]):
                        m.d.sync += [ix.eq(0), ox.eq(0), until.eq(p.window - 1), c_ky.eq(c_ky + 1)]
                        with m.If(c_ky == last["window"]):
                            m.d.sync += [c_ky.eq(0), wx.eq(0)]
                            m.next = "SETTLE"
            with m.State("SETTLE"):     # stages 1 to 3 finish the row's last column
                m.next = "SETTLE_2"
            with m.State("SETTLE_2"):
                m.next = "SETTLE_3"
            with m.State("SETTLE_3"):
                m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [writer.runs.valid.eq(1), writer.runs.payload.addr.eq(out_addr),
                             writer.runs.payload.count.eq(p.out_width), writer.runs.payload.size.eq(size),
                             lb_read.addr.eq(wx)]
                with m.If(writer.runs.ready):
                    m.next = "WRITE_ROW"
            with m.State("WRITE_ROW"):     # the line buffer's output is column wx; read the next ahead
                m.d.comb += [lb_read.addr.eq(Mux(writer.elements.ready, wx + 1, wx)), writer.elements.valid.eq(1),
                             writer.elements.payload.eq(lb_read.data)]
                with m.If(writer.elements.ready):
                    m.d.sync += wx.eq(wx + 1)
                    with m.If(wx == last["out_width"]):
                        m.d.sync += out_addr.eq(out_addr + (p.out_width << size))
                        with m.If(c_row != last["out_rows"]):
                            m.d.sync += c_row.eq(c_row + 1)
                            m.next = "READ"
                        with m.Elif(c_plane != last["planes"]):
                            m.d.sync += [c_row.eq(0), c_plane.eq(c_plane + 1)]
                            m.next = "READ"
                        with m.Else():
                            m.next = "FLUSH"
            with m.State("FLUSH"):
                with m.If(writer.idle):
                    m.d.comb += self.done.eq(1)
                    m.next = "IDLE"
        return m
