"""The controller's parts in Amaranth's simulator: the address generator walks exactly the loop
nest of the controller model under random stalls; the read arbiter returns every word to its
reader; END is a barrier of all units; malformed programs raise ``error``."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rowstation.gen import preset
from rowstation.gen.isa import TOKEN_DEPTH, Opcode, RegisterMap, Token, encode
from rowstation.hw.controller import UNIT_NAMES, AddressGenerator, Controller, PostProcessor
from rowstation.sim.golden import requantize
from rowstation.sim.controller_model import walk

from amaranth_streams import feed


@pytest.mark.parametrize("seed", range(4))
def test_address_generator_walks_the_model_nest(seed):
    rng = np.random.default_rng(seed)
    levels = int(rng.integers(1, 5))
    table_level = int(rng.integers(0, levels))
    counts = [int(v) for v in rng.integers(1, 4, levels)]
    steps = [int(v) for v in rng.integers(-20, 40, levels)]
    bases = [int(v) for v in rng.integers(100, 1000, counts[table_level])]
    want = [addr for addr, _ in walk(counts, steps, bases, table_level)]
    dut = AddressGenerator(levels=levels, table_level=table_level, count_width=8, addr_width=16,
                           table_depth=8)
    got = {}

    async def testbench(ctx):
        for k in range(levels):
            ctx.set(dut.counts[k], counts[k])
            ctx.set(dut.steps[k], steps[k])
        for _ in range(2):  # a second walk must start afresh
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            words = []
            while len(words) < len(want):
                ctx.set(dut.base, bases[ctx.get(dut.entry)])
                ctx.set(dut.o.ready, rng.random() >= 0.4)
                _, _, valid, ready, addr = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
                if valid and ready:
                    words.append(addr)
            got.setdefault("walks", []).append(words)
            assert not ctx.get(dut.busy)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert got["walks"] == [want, want]

def run_program(streams, cycles=80):
    """Feed each unit's words for ``cycles``; report whether ``error`` and ``done`` were seen
    (a malformed stream may leave words unread)."""
    dut = Controller(preset("tiny"))
    seen = {"error": 0, "done": 0}

    def source(unit, words):
        async def testbench(ctx):
            await feed(ctx, getattr(dut.program, unit), words)
        return testbench

    async def monitor(ctx):
        for _ in range(cycles):
            _, _, error, done = await ctx.tick().sample(dut.error, dut.done)
            seen["error"] |= error
            seen["done"] |= done

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for unit in UNIT_NAMES:
        sim.add_testbench(source(unit, streams.get(unit, []) + [encode(Opcode.END)]))
    sim.add_testbench(monitor)
    sim.run_until(cycles * 1e-6)
    return seen


def test_writes_to_known_registers_then_end():
    regmap = RegisterMap(preset("tiny"))
    words = [encode(Opcode.WRITE, regmap.address("cfg_s")), 3,
             encode(Opcode.WRITE, regmap.address("filt_base", 2)), 7]
    assert run_program({"execute": words}) == {"error": 0, "done": 1}


def test_end_waits_for_every_unit():
    """``done`` only once every stream has reached END."""
    dut = Controller(preset("tiny"))
    seen = []

    async def testbench(ctx):
        await feed(ctx, dut.program.load, [encode(Opcode.END)])
        await feed(ctx, dut.program.execute, [encode(Opcode.END)])
        for _ in range(10):
            _, _, done = await ctx.tick().sample(dut.done)
            seen.append(done)
        await feed(ctx, dut.program.store, [encode(Opcode.END)])
        for _ in range(5):
            _, _, done = await ctx.tick().sample(dut.done)
            seen.append(done)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert not any(seen[:10]) and sum(seen[10:]) == 1


@pytest.mark.parametrize("streams", [
    {"execute": [0xF << 28]},
    {"execute": [encode(Opcode.WRITE, RegisterMap(preset("tiny")).size), 1]},
    {"execute": [encode(Opcode.LOAD, 0), 0, 0, 0]},
    {"store": [encode(Opcode.FILL, 0), 0, 0, 0, 0]},
    # More LOAD_EXECUTE tokens than a queue counts, none taken.
    {"load": [word for _ in range(TOKEN_DEPTH + 1)
              for word in (encode(Opcode.FILL, 0, push=[Token.LOAD_EXECUTE]), 0, 0, 0, 0)]},
], ids=["unknown opcode", "unknown register", "load on the execute unit", "fill on the store unit",
        "token queue overflow"])
def test_malformed_program_raises_error(streams):
    assert run_program(streams)["error"] == 1


def test_post_processor_matches_the_golden_requantization():
    """Exact sums, rounding at every shift, ReLU and saturation at both ends, on random values
    and the extremes of a 24-bit psum and its bias; every value once and in order through its
    two stages under random gaps and backpressure."""
    config = preset("tiny")
    dut = PostProcessor(config)
    rng = np.random.default_rng(7)
    top = 1 << (config.psum_width - 1)
    cases = [(int(p), int(b), int(s), bool(r), bool(q)) for p, b, s, r, q in zip(
        rng.integers(-top // 2, top // 2, 300), rng.integers(-top // 2, top // 2, 300),
        rng.integers(0, config.psum_width, 300), rng.integers(0, 2, 300), rng.integers(0, 2, 300))]
    cases += [(top - 1, 0, s, r, True) for s in (0, 1, 23) for r in (0, 1)]
    cases += [(-top, 0, s, r, True) for s in (0, 1, 23) for r in (0, 1)]
    cases += [(-3, 0, 1, False, True), (-5, 0, 1, False, True), (5, -8, 2, False, True)]
    wants = []
    for psum, bias, shift, relu, requant in cases:
        want = psum + bias
        if requant:
            want = int(requantize(np.array([want]), shift=shift, relu=relu, width=config.ifmap_width)[0])
        wants.append(want)
    got = []

    async def producer(ctx):
        await feed(ctx, dut.i, [dict(psum=p, bias=b, shift=s, relu=r, requantize=q)
                                for p, b, s, r, q in cases], rng=rng, idle=0.3)

    async def consumer(ctx):    # long enough for every value, and to see any extra one
        stalls = np.random.default_rng(8)
        for _ in range(8 * len(cases)):
            ctx.set(dut.o.ready, stalls.random() >= 0.4)
            _, _, ready, valid, value = await ctx.tick().sample(dut.o.ready, dut.o.valid, dut.o.payload)
            if ready and valid:
                got.append(value)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    assert got == wants
