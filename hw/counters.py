"""Performance counters: one counter per named event, each advanced by the event's strobes.

An event may come as several strobes per cycle (one per PE of an array): the counter adds
them all, so an array aggregates its PEs' events without a counter per PE.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out


__all__ = ["EventCounters"]


class EventCounters(wiring.Component):
    """``counts[name]`` adds ``events[name]``'s set bits every cycle; ``clear`` zeroes all.

    Counters are ``width`` bits and wrap modulo ``2**width``; size the width for the longest run.
    """

    @staticmethod
    def counts_signature(names, width):
        return wiring.Signature({name: Out(width) for name in names})

    def __init__(self, names, *, width, lanes=1):
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self._names = tuple(names)
        super().__init__({
            "events": In(wiring.Signature({name: Out(lanes) for name in self._names})),
            "clear": In(1),
            "counts": Out(self.counts_signature(self._names, width)),
        })

    def elaborate(self, platform):
        m = Module()
        for name in self._names:
            strobes = getattr(self.events, name)
            increment = sum(strobes[i] for i in range(len(strobes)))
            with m.If(self.clear):
                m.d.sync += getattr(self.counts, name).eq(0)
            with m.Else():
                m.d.sync += getattr(self.counts, name).eq(getattr(self.counts, name) + increment)
        return m
