"""Round-robin arbitration, linear in the number of requesters, and the OR tree that
multiplexes one-hot selected values."""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["RoundRobin", "or_tree"]


class RoundRobin(wiring.Component):
    """Grants one of ``count`` requesters: the lowest one above the last granted, else the
    lowest of all, so none starves. ``grant`` is one-hot (zero without requests); the grant
    is remembered when ``advance`` is set.
    """

    def __init__(self, count):
        self._count = count
        super().__init__({"requests": In(count), "grant": Out(count), "advance": In(1)})

    def elaborate(self, platform):
        m = Module()
        n = self._count
        after_last = Signal(n, init=(1 << n) - 2)  # thermometer: requesters after the last grant
        masked = Signal(n)
        pick = Signal(n)
        m.d.comb += [
            masked.eq(self.requests & after_last),
            pick.eq(Mux(masked.any(), masked, self.requests)),
            self.grant.eq(pick & -pick),  # x & -x isolates the lowest set bit
        ]
        with m.If(self.advance & self.requests.any()):
            m.d.sync += after_last.eq(~((self.grant << 1) - 1))
        return m


def or_tree(values):
    """Bitwise OR of ``values`` as a balanced tree: with all but one zero, an AND-OR multiplexer."""
    values = list(values)
    while len(values) > 1:
        values = [a | b for a, b in zip(values[::2], values[1::2])] + values[len(values) & ~1:]
    return values[0]
