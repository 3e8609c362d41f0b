"""The UART in Amaranth's simulator: bytes out of the transmitter come back through the
receiver exactly; a byte with a low stop bit is dropped and flagged; a byte not taken in time
is flagged as an overrun."""

import random

from amaranth import Module
from amaranth.sim import Simulator

from rowstation.hw.uart import UARTReceiver, UARTTransmitter

DIVISOR = 5


def _bits(byte, stop=1):
    return [0] + [byte >> k & 1 for k in range(8)] + [stop]


def _run(bench, *components):
    m = Module()
    for i, component in enumerate(components):
        m.submodules[f"c{i}"] = component
    sim = Simulator(m)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()


def test_transmitter_to_receiver_loopback_under_backpressure():
    tx, rx = UARTTransmitter(DIVISOR), UARTReceiver(DIVISOR)
    data = [random.Random(1).randrange(256) for _ in range(40)] + [0x00, 0xFF, 0x52]
    got, flags = [], []

    async def bench(ctx):
        pending = list(data)
        rng = random.Random(2)
        for _ in range(len(data) * 10 * DIVISOR + 200):
            ctx.set(rx.rx, ctx.get(tx.tx))
            ctx.set(tx.data.valid, bool(pending))
            ctx.set(tx.data.payload, pending[0] if pending else 0)
            ready = rng.random() < 0.5          # the consumer takes a byte within a few cycles
            ctx.set(rx.data.ready, ready)
            if ctx.get(tx.data.ready) and pending:
                pending.pop(0)
            if ctx.get(rx.data.valid) and ready:
                got.append(ctx.get(rx.data.payload))
            flags.append(ctx.get(rx.framing) or ctx.get(rx.overrun))
            await ctx.tick()

    _run(bench, tx, rx)
    assert got == data and not any(flags)


def test_framing_error_drops_the_byte_and_overrun_is_flagged():
    rx = UARTReceiver(DIVISOR)
    got, framing, overrun = [], [], []

    async def bench(ctx):
        line = _bits(0x41) + _bits(0x42, stop=0) + [1] * 3 + _bits(0x43) + _bits(0x44)
        for bit in line:
            for _ in range(DIVISOR):
                ctx.set(rx.rx, bit)
                framing.append(ctx.get(rx.framing))
                overrun.append(ctx.get(rx.overrun))
                if ctx.get(rx.data.valid) and len(got) == 0:      # take only the first byte
                    ctx.set(rx.data.ready, 1)
                    got.append(ctx.get(rx.data.payload))
                else:
                    ctx.set(rx.data.ready, 0)
                await ctx.tick()
        for _ in range(4 * DIVISOR):
            overrun.append(ctx.get(rx.overrun))
            await ctx.tick()
        got.append(ctx.get(rx.data.payload))

    _run(bench, rx)
    assert got[0] == 0x41 and sum(framing) == 1          # 0x42 dropped, flagged once
    assert sum(overrun) == 1 and got[-1] == 0x44         # 0x43 never taken: lost when 0x44 came, flagged
