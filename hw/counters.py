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

    ``events`` maps each name to its number of strobes (lanes), or is a sequence of names with
    ``lanes`` strobes each. Counters are ``width`` bits and wrap modulo ``2**width``; size the
    width for the longest run. The strobes are registered before they are added (the sum of
    many strobes is no longer on the path that makes them), so a count lags its events by a
    cycle; ``clear`` drops the registered ones too.
    """

    @staticmethod
    def counts_signature(names, width):
        return wiring.Signature({name: Out(width) for name in names})

    def __init__(self, events, *, width, lanes=1):
        if not isinstance(events, dict):
            events = dict.fromkeys(events, lanes)
        for name, count in events.items():
            if not isinstance(count, int) or count < 1:
                raise ValueError(f"lanes of event {name!r} must be a positive integer, not {count!r}")
        self._events = events
        super().__init__({
            "events": In(wiring.Signature({name: Out(count) for name, count in events.items()})),
            "clear": In(1),
            "counts": Out(self.counts_signature(events, width)),
        })

    def elaborate(self, platform):
        m = Module()
        for name, count in self._events.items():
            strobes = Signal(count, name=f"{name}_strobes")
            increment = _popcount([strobes[i] for i in range(count)])
            with m.If(self.clear):
                m.d.sync += [getattr(self.counts, name).eq(0), strobes.eq(0)]
            with m.Else():
                m.d.sync += [getattr(self.counts, name).eq(getattr(self.counts, name) + increment),
                             strobes.eq(getattr(self.events, name))]
        return m


def _popcount(bits):
    """Number of set ``bits``, as a balanced adder tree (logarithmic depth)."""
    while len(bits) > 1:
        bits = [a + b for a, b in zip(bits[::2], bits[1::2])] + bits[len(bits) & ~1:]
    return bits[0]
