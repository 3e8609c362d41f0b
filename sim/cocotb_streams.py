"""cocotb drivers for Amaranth stream ports (``name__valid``, ``name__ready``, ``name__payload``).

Both sides act once per clock: they drive after a rising edge, sample the settled handshake in
the read-only phase, and count the transfer at the next edge. Random idle cycles (source) and
ready drops (sink) exercise every stall pattern; a source never drops valid before a transfer.
"""

from cocotb.simtime import get_sim_time
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge


__all__ = ["reset", "StreamSource", "StreamSink"]


async def reset(dut, cycles=2):
    """Hold Amaranth's synchronous ``rst`` for ``cycles`` clocks, then one idle clock."""
    dut.rst.value = 1
    await ClockCycles(dut.clk, cycles)
    dut.rst.value = 0
    await RisingEdge(dut.clk)


class _Port:
    def __init__(self, dut, name, clock, period_ns):
        self.valid = getattr(dut, f"{name}__valid")
        self.ready = getattr(dut, f"{name}__ready")
        self.payload = getattr(dut, f"{name}__payload")
        self.width = len(self.payload)
        self.clock = clock
        self.period_ns = period_ns

    def cycle(self):
        """Index of the current clock cycle (call in the read-only phase)."""
        return int(get_sim_time("ns") // self.period_ns)


class StreamSource(_Port):
    """Sends words; ``idle`` is the probability of an idle cycle before each word."""

    def __init__(self, dut, name, clock, period_ns, *, rng=None, idle=0.0):
        super().__init__(dut, name, clock, period_ns)
        self.rng, self.idle = rng, idle
        self.valid.value = 0

    async def send(self, words):
        """Returns the cycle of each transfer."""
        cycles = []
        for word in words:
            while self.rng is not None and self.rng.random() < self.idle:
                await RisingEdge(self.clock)
            self.valid.value = 1
            self.payload.value = int(word) & ((1 << self.width) - 1)
            await ReadOnly()
            while not self.ready.value:
                # Sleep until ready rises (it changes only after a clock edge), not every cycle.
                await RisingEdge(self.ready)
                await ReadOnly()
            cycles.append(self.cycle())
            await RisingEdge(self.clock)
            self.valid.value = 0
        return cycles


class StreamSink(_Port):
    """Receives words (signed, or raw bits for structured payloads); ``stall`` is the
    probability of dropping ready in a cycle."""

    def __init__(self, dut, name, clock, period_ns, *, rng=None, stall=0.0, signed=True):
        super().__init__(dut, name, clock, period_ns)
        self.rng, self.stall, self.signed = rng, stall, signed
        self.ready.value = 0

    async def receive(self, count):
        """Returns (words, cycle of each transfer)."""
        words, cycles = [], []
        while len(words) < count:
            self.ready.value = int(self.rng is None or self.rng.random() >= self.stall)
            await ReadOnly()
            if self.valid.value and self.ready.value:
                value = self.payload.value
                words.append(value.to_signed() if self.signed else value.to_unsigned())
                cycles.append(self.cycle())
            await RisingEdge(self.clock)
        self.ready.value = 0
        return words, cycles
