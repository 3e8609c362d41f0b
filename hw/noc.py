"""The networks on chip of Eyeriss.

The global input network (GIN) is a Y-bus feeding one X-bus per PE row.

Every word carries a (row, col) tag. A multicast controller on each X-bus holds a row ID and
one at each PE a column ID; a word goes to every PE whose row's ID equals the row tag and whose
own ID equals the column tag. Configuring IDs gives unicast, multicast and broadcast with the
same mechanism. The global output network (GON) returns the PEs' psums to the global buffer.
"""

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from .arbiter import RoundRobin, or_tree


__all__ = ["MulticastController", "GINWord", "GlobalInputNetwork", "GONWord", "GlobalOutputNetwork"]


class MulticastController(wiring.Component):
    """Matches a tag against a configured ID."""

    def __init__(self, id_width):
        super().__init__({"id": In(id_width), "tag": In(id_width), "match": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.match.eq(self.id == self.tag)
        return m


class GINWord(data.StructLayout):
    """A tagged word on the Y-bus."""

    def __init__(self, payload_shape, row_id_width, col_id_width):
        super().__init__({"row": unsigned(row_id_width), "col": unsigned(col_id_width),
                          "data": payload_shape})


class GlobalInputNetwork(wiring.Component):
    """Delivers each tagged word of ``i`` to every matching PE output ``o[row][col]``.

    A matching output sees ``valid`` as soon as the word is offered, independent of any
    ``ready``, and keeps it until it takes the word; the word leaves ``i`` once every matching
    output has taken it, in one cycle when all are ready. Each matching PE receives each word
    exactly once and in order. A word that matches no PE is consumed and flagged on ``unmatched``
    (a mapping error for the controller to count).

    Ports
    -----
    i : In(stream of GINWord)
    row_ids : In(row_id_width) per row; col_ids : In(col_id_width) per PE
    o : Out(stream of payload) per PE, ``o[row][col]``
    unmatched : Out(1), strobe
    """

    def __init__(self, *, rows, cols, payload_shape, row_id_width, col_id_width):
        self._rows, self._cols = rows, cols
        self._row_id_width, self._col_id_width = row_id_width, col_id_width
        super().__init__({
            "i": In(stream.Signature(GINWord(payload_shape, row_id_width, col_id_width))),
            "row_ids": In(row_id_width).array(rows),
            "col_ids": In(col_id_width).array(rows, cols),
            "o": Out(stream.Signature(payload_shape)).array(rows, cols),
            "unmatched": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        word = self.i.payload
        taken_all = []
        any_match = []
        for r in range(self._rows):
            xbus = MulticastController(self._row_id_width)
            m.submodules[f"xbus_{r}"] = xbus
            m.d.comb += [xbus.id.eq(self.row_ids[r]), xbus.tag.eq(word.row)]
            for c in range(self._cols):
                pe = MulticastController(self._col_id_width)
                m.submodules[f"pe_{r}_{c}"] = pe
                m.d.comb += [pe.id.eq(self.col_ids[r][c]), pe.tag.eq(word.col)]
                dest = Signal(name=f"dest_{r}_{c}")
                sent = Signal(name=f"sent_{r}_{c}")  # took the current word in an earlier cycle
                out = self.o[r][c]
                m.d.comb += [
                    dest.eq(xbus.match & pe.match),
                    out.valid.eq(self.i.valid & dest & ~sent),
                    out.payload.eq(word.data),
                ]
                with m.If(self.i.valid & self.i.ready):
                    m.d.sync += sent.eq(0)
                with m.Elif(out.valid & out.ready):
                    m.d.sync += sent.eq(1)
                taken_all.append(~dest | sent | out.ready)
                any_match.append(dest)
        m.d.comb += [
            self.i.ready.eq(Cat(*taken_all).all()),
            self.unmatched.eq(self.i.valid & self.i.ready & ~Cat(*any_match).any()),
        ]
        return m


class GONWord(data.StructLayout):
    """A psum on its way back to the global buffer, tagged with the PE that sent it
    (``pe = row * cols + col``)."""

    def __init__(self, payload_shape, rows, cols):
        super().__init__({"pe": range(rows * cols), "data": payload_shape})


class GlobalOutputNetwork(wiring.Component):
    """Collects the PE streams ``i[row][j]`` into one stream ``o`` tagged with the source:
    the PEs of the array columns ``columns`` (default all ``cols``; a lane of the network
    serves some), PE ``(row, columns[j])`` tagged ``row * cols + columns[j]``.

    Round-robin among the PEs offering a word, so no PE starves; the output is registered.
    """

    def __init__(self, *, rows, cols, payload_shape, columns=None):
        self._rows, self._cols = rows, cols
        self._columns = list(range(cols)) if columns is None else list(columns)
        super().__init__({
            "i": In(stream.Signature(payload_shape)).array(rows, len(self._columns)),
            "o": Out(stream.Signature(GONWord(payload_shape, rows, cols))),
        })

    def elaborate(self, platform):
        m = Module()
        ports = [self.i[r][j] for r in range(self._rows) for j in range(len(self._columns))]
        tags = [r * self._cols + col for r in range(self._rows) for col in self._columns]
        n = len(ports)
        m.submodules.arbiter = arbiter = RoundRobin(n)
        grant, take = arbiter.grant, Signal()
        m.d.comb += [
            arbiter.requests.eq(Cat(port.valid for port in ports)),
            take.eq(~self.o.valid | self.o.ready),
            arbiter.advance.eq(take),
        ]
        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        # The granted word as an AND-OR multiplexer (grant is one-hot).
        for index, port in enumerate(ports):
            m.d.comb += port.ready.eq(take & grant[index])
        data = [Mux(grant[i], Value.cast(port.payload).as_unsigned(), 0) for i, port in enumerate(ports)]
        word = Signal.like(self.o.payload)
        m.d.comb += [word.pe.eq(_one_hot_select([grant[i] for i in range(n)], tags)), word.data.eq(or_tree(data))]
        with m.If(take & arbiter.requests.any()):
            m.d.sync += [self.o.valid.eq(1), self.o.payload.eq(word)]
        return m


def _one_hot_select(bits, values):
    """The constant of ``values`` at the set bit of the one-hot ``bits``."""
    width = max(1, max(values).bit_length())
    return Cat(or_tree([bit for bit, value in zip(bits, values) if value >> b & 1] or [C(0, 1)])
               for b in range(width))
