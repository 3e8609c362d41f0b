"""The external memory port (:mod:`rowstation.hw.memory`): runs of packed elements in and out
through bursts, against a byte-addressed memory with latency and random stalls on every
channel."""

import numpy as np
import pytest
from amaranth import Module
from amaranth.lib import wiring
from amaranth.sim import Simulator

from rowstation.hw.memory import BurstArbiter, ElementReader, ElementWriter

from amaranth_streams import drain, feed


WIDTH, BURST, ADDR = 32, 4, 16      # a 64 KiB memory: narrower addresses than AXI's 32
WORD = WIDTH // 8


def _runs(rng, count, size_choices=(0, 1, 2), span=512):
    """Random runs (byte address aligned to the element, count, size)."""
    runs = []
    for _ in range(count):
        size = int(rng.choice(size_choices))
        runs.append({"addr": int(rng.integers(0, span)) >> size << size,
                     "count": int(rng.integers(0, 12)), "size": size})
    return runs


def _elements(memory, run):
    n = 1 << run["size"]
    return [int.from_bytes(memory[run["addr"] + i * n:run["addr"] + (i + 1) * n], "little")
            for i in range(run["count"])]


def _check_burst(addr, length):
    word = addr // WORD
    assert addr % WORD == 0 and 0 <= length < BURST and word // BURST == (word + length) // BURST, \
        f"burst of {length + 1} words from {addr:#x} crosses a multiple of {BURST} words"


async def _serve_reads(ctx, port, memory, rng, stall, bursts):
    """Answer read bursts in order, 3 cycles after their command, stalling at random; a
    data word once offered stays until taken. Runs until ``bursts`` bursts are served."""
    pending, cycle, offered = [], 0, None
    while bursts:
        ctx.set(port.cmd.ready, rng.random() >= stall)
        if offered is None and pending and pending[0][0] <= cycle and rng.random() >= stall:
            due, addr, beats = pending[0]
            offered = int.from_bytes(memory[addr:addr + WORD], "little")
            pending[0] = (due, addr + WORD, beats - 1)
            if beats == 1:
                pending.pop(0)
                bursts -= 1
        ctx.set(port.data.valid, offered is not None)
        ctx.set(port.data.payload, offered or 0)
        _, _, c_valid, c_ready, cmd, d_ready = await ctx.tick().sample(
            port.cmd.valid, port.cmd.ready, port.cmd.payload, port.data.ready)
        if c_valid and c_ready:
            _check_burst(cmd.addr, cmd.length)
            pending.append((cycle + 3, cmd.addr, cmd.length + 1))
        if offered is not None and d_ready:
            offered = None
        cycle += 1
    while offered is not None:
        _, _, d_ready = await ctx.tick().sample(port.data.ready)
        offered = None if d_ready else offered
    ctx.set(port.data.valid, 0)


def _bursts(runs):
    total = 0
    for run in runs:
        if run["count"]:
            first, last = run["addr"] // WORD, (run["addr"] + (run["count"] << run["size"]) - 1) // WORD
            total += last // BURST - first // BURST + 1
    return total


@pytest.mark.parametrize("seed,lanes", [(0, 1), (1, 1), (2, 2), (3, 4)])
def test_readers_get_their_runs_elements(seed, lanes):
    """Two readers share the port through the arbiter; each gets exactly its runs' elements
    (``lanes`` at most at a time, never beyond a word or the run), with random stalls on every
    channel and consumers that drop ready at random."""
    rng = np.random.default_rng(seed)
    memory = bytes(rng.integers(0, 256, 600, dtype=np.uint8))
    arbiter = BurstArbiter(2, width=WIDTH, addr_width=ADDR)
    readers = [ElementReader(width=WIDTH, burst=BURST, addr_width=ADDR, depth=8, lanes=lanes) for _ in range(2)]
    runs = [_runs(rng, 12) for _ in readers]
    got = {}

    m = Module()
    m.submodules.arbiter = arbiter
    for i, reader in enumerate(readers):
        m.submodules[f"reader{i}"] = reader
        wiring.connect(m, reader.memory, arbiter.readers[i])

    def bench(i):
        async def give(ctx):
            await feed(ctx, readers[i].runs, runs[i], rng=np.random.default_rng(seed + 7 * i), idle=0.3)

        async def take(ctx):
            want, elements = sum(r["count"] for r in runs[i]), []
            while len(elements) < want:
                groups, _ = await drain(ctx, readers[i].elements, 1, rng=np.random.default_rng(seed + len(elements)),
                                        stall=0.4)
                group = groups[0]
                assert 1 <= group.count <= lanes
                elements += [group.data[j] for j in range(group.count)]
            got[i] = elements
        return give, take

    async def serve(ctx):
        await _serve_reads(ctx, arbiter.memory, memory, rng, 0.3, sum(_bursts(r) for r in runs))

    sim = Simulator(m)
    sim.add_clock(1e-6)
    for i in range(2):
        for b in bench(i):
            sim.add_testbench(b)
    sim.add_testbench(serve)
    sim.run()
    for i in range(2):
        assert got[i] == [e for run in runs[i] for e in _elements(memory, run)]


@pytest.mark.parametrize("seed", range(4))
def test_writer_writes_exactly_its_runs(seed):
    """Runs of random sizes and places, elements offered with gaps, every channel stalling:
    memory ends with exactly those bytes written (strobes leave the rest alone), a response
    per burst, and ``idle`` only once all are back."""
    rng = np.random.default_rng(100 + seed)
    runs = _runs(rng, 12, size_choices=(0, 1, 2))
    # Runs must not overlap, or the order of their writes would matter.
    placed, end = [], 0
    for run in runs:
        run["addr"] = (end + int(rng.integers(0, 9))) >> run["size"] << run["size"]
        end = run["addr"] + (run["count"] << run["size"])
        placed.append(run)
    values = [[int(v) for v in rng.integers(-1 << 40, 1 << 40, run["count"])] for run in placed]
    dut = ElementWriter(width=WIDTH, burst=BURST, addr_width=ADDR)
    memory = bytearray(b"\xee" * (end + 16))
    want = bytearray(memory)
    for run, vals in zip(placed, values):
        n = 1 << run["size"]
        for i, v in enumerate(vals):
            want[run["addr"] + i * n:run["addr"] + (i + 1) * n] = (v & ((1 << 8 * n) - 1)).to_bytes(n, "little")
    idle_early = []

    async def give_runs(ctx):
        await feed(ctx, dut.runs, placed, rng=rng, idle=0.3)

    async def give_elements(ctx):
        await feed(ctx, dut.elements, [v & (1 << 64) - 1 for vals in values for v in vals],
                   rng=np.random.default_rng(seed), idle=0.3)

    async def serve(ctx):
        srng = np.random.default_rng(seed + 1)
        commands, responses, bursts = [], 0, _bursts(placed)
        written = 0
        while written < bursts or responses:
            ctx.set(dut.memory.cmd.ready, srng.random() >= 0.3)
            ctx.set(dut.memory.data.ready, bool(commands) and srng.random() >= 0.3)
            ctx.set(dut.memory.resp.valid, responses > 0)
            ctx.set(dut.memory.resp.payload, 0)
            _, _, c_valid, c_ready, cmd, d_valid, d_ready, beat, r_ready, idle = await ctx.tick().sample(
                dut.memory.cmd.valid, dut.memory.cmd.ready, dut.memory.cmd.payload,
                dut.memory.data.valid, dut.memory.data.ready, dut.memory.data.payload,
                dut.memory.resp.ready, dut.idle)
            if responses and r_ready:
                responses -= 1
            if d_valid and d_ready:
                addr, beats = commands[0]
                for b in range(WORD):
                    if beat.strb >> b & 1:
                        memory[addr + b] = beat.data >> (8 * b) & 0xFF
                commands[0] = (addr + WORD, beats - 1)
                if beats == 1:
                    commands.pop(0)
                    responses += 1
                    written += 1
            if c_valid and c_ready:
                _check_burst(cmd.addr, cmd.length)
                commands.append((cmd.addr, cmd.length + 1))
            if idle and (commands or responses):
                idle_early.append(written)
        ctx.set(dut.memory.resp.valid, 0)
        for _ in range(3):
            await ctx.tick()
        assert ctx.get(dut.idle) and not ctx.get(dut.error)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in (give_runs, give_elements, serve):
        sim.add_testbench(bench)
    sim.run()
    assert memory == want
    assert not idle_early, "idle before every response was back"


def test_writer_latches_an_error_response():
    dut = ElementWriter(width=WIDTH, burst=BURST, addr_width=ADDR)
    seen = []

    async def bench(ctx):
        await feed(ctx, dut.runs, [{"addr": 8, "count": 2, "size": 2}])
        ctx.set(dut.memory.cmd.ready, 1)
        ctx.set(dut.memory.data.ready, 1)
        await feed(ctx, dut.elements, [1, 2])
        for _ in range(3):
            await ctx.tick()
        seen.append((ctx.get(dut.error), ctx.get(dut.idle)))
        ctx.set(dut.memory.resp.valid, 1)
        ctx.set(dut.memory.resp.payload, 2)    # SLVERR
        await ctx.tick()
        ctx.set(dut.memory.resp.valid, 0)
        await ctx.tick()
        seen.append((ctx.get(dut.error), ctx.get(dut.idle)))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == [(0, 0), (1, 1)]
