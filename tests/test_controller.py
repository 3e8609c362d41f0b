"""The controller's parts in Amaranth's simulator: the address generator walks exactly the loop
nest of the controller model under random stalls; malformed programs raise ``error``."""

import numpy as np
import pytest
from amaranth.sim import Simulator

from rowstation.gen import preset
from rowstation.gen.program import OPCODES, RegisterMap
from rowstation.hw.controller import AddressGenerator, Controller
from rowstation.sim.controller_model import walk


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

def run_program(words, cycles=20):
    dut = Controller(preset("tiny"))
    seen = {"error": 0, "done": 0}

    async def testbench(ctx):
        for word in words:
            ctx.set(dut.program.valid, 1)
            ctx.set(dut.program.payload, word)
            while True:
                _, _, ready = await ctx.tick().sample(dut.program.ready)
                if ready:
                    break
        ctx.set(dut.program.valid, 0)
        for _ in range(cycles):
            _, _, error, done = await ctx.tick().sample(dut.error, dut.done)
            seen["error"] |= error
            seen["done"] |= done

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    return seen

def test_writes_to_known_registers_then_end():
    regmap = RegisterMap(preset("tiny"))
    write = OPCODES["write"] << 28
    assert run_program([write | regmap.address("cfg_s"), 3, write | regmap.address("filt_base", 2), 7,
                        OPCODES["end"] << 28]) == {"error": 0, "done": 1}

@pytest.mark.parametrize("words", [[0xF << 28], [OPCODES["write"] << 28 | RegisterMap(preset("tiny")).size, 1]],
                         ids=["unknown opcode", "unknown register"])
def test_malformed_program_raises_error(words):
    assert run_program(words)["error"] == 1
