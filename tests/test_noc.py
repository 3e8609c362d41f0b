"""The global input network: every tag pattern reaches exactly its matching PEs, in order,
under random backpressure; unmatched words are flagged."""

import numpy as np
import pytest
from amaranth import signed
from amaranth.sim import Simulator

from rowstation.hw.export import to_verilog
from rowstation.hw.noc import GlobalInputNetwork
from rowstation.sim.runner import lint

from amaranth_streams import feed


ROWS, COLS, RW, CW = 3, 4, 2, 3


def run(words, row_ids, col_ids, *, seed, idle, stall):
    """Send ``words`` [(row_tag, col_tag, data)]; return per-PE received data and unmatched count."""
    dut = GlobalInputNetwork(rows=ROWS, cols=COLS, payload_shape=signed(8), row_id_width=RW, col_id_width=CW)
    rng = np.random.default_rng(seed)
    got = {(r, c): [] for r in range(ROWS) for c in range(COLS)}
    state = {"unmatched": 0, "done": False}

    async def source(ctx):
        for r in range(ROWS):
            ctx.set(dut.row_ids[r], row_ids[r])
            for c in range(COLS):
                ctx.set(dut.col_ids[r][c], col_ids[r][c])
        packed = [{"row": rt, "col": ct, "data": d} for rt, ct, d in words]
        await feed(ctx, dut.i, packed, rng=rng, idle=idle)
        for _ in range(3):
            await ctx.tick()
        state["done"] = True

    async def sinks(ctx):
        while not state["done"]:
            for key in got:
                ctx.set(dut.o[key[0]][key[1]].ready, rng.random() >= stall)
            sampled = await ctx.tick().sample(*[x for key in got for x in (dut.o[key[0]][key[1]].valid,
                                                                           dut.o[key[0]][key[1]].ready,
                                                                           dut.o[key[0]][key[1]].payload)],
                                              dut.unmatched)
            values = sampled[2:]
            for n, key in enumerate(got):
                valid, ready, payload = values[3 * n:3 * n + 3]
                if valid and ready:
                    got[key].append(payload)
            state["unmatched"] += values[-1]

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(source)
    sim.add_testbench(sinks, background=True)
    sim.run_until(50 * (len(words) + 10) * 1e-6)
    assert state["done"], "the network did not take every word"
    return got, state["unmatched"]


@pytest.mark.parametrize("pattern", ["unicast", "row multicast", "column multicast", "diagonal", "broadcast", "random"])
@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.5), (0.1, 0.9)])
def test_words_reach_exactly_their_matching_pes(pattern, idle, stall):
    rng = np.random.default_rng(len(pattern))
    if pattern == "unicast":        # every PE its own (row, col) ID
        row_ids, col_ids = list(range(ROWS)), [list(range(COLS)) for _ in range(ROWS)]
    elif pattern == "row multicast":  # a tag's column reaches a whole PE row
        row_ids, col_ids = list(range(ROWS)), [[0] * COLS for _ in range(ROWS)]
    elif pattern == "column multicast":  # all rows share an ID: a tag reaches a PE column
        row_ids, col_ids = [1] * ROWS, [list(range(COLS)) for _ in range(ROWS)]
    elif pattern == "diagonal":       # ifmap style: PE (r, c) has ID r + c
        row_ids, col_ids = [0] * ROWS, [[r + c for c in range(COLS)] for r in range(ROWS)]
    elif pattern == "broadcast":
        row_ids, col_ids = [2] * ROWS, [[5] * COLS for _ in range(ROWS)]
    else:
        row_ids = [int(v) for v in rng.integers(0, 2 ** RW, ROWS)]
        col_ids = [[int(v) for v in rng.integers(0, 2 ** CW, COLS)] for _ in range(ROWS)]
    words = [(int(rng.integers(0, 2 ** RW)), int(rng.integers(0, 2 ** CW)), int(rng.integers(-128, 128)))
             for _ in range(60)]
    got, unmatched = run(words, row_ids, col_ids, seed=7, idle=idle, stall=stall)
    for (r, c), received in got.items():
        want = [d for rt, ct, d in words if row_ids[r] == rt and col_ids[r][c] == ct]
        assert received == want, f"PE ({r}, {c})"
    assert unmatched == sum(1 for rt, ct, _ in words
                            if not any(row_ids[r] == rt and col_ids[r][c] == ct for r in range(ROWS) for c in range(COLS)))
    assert sum(map(len, got.values())) > 0


def test_gin_verilog_is_lint_clean(tmp_path):
    dut = GlobalInputNetwork(rows=ROWS, cols=COLS, payload_shape=signed(16), row_id_width=RW, col_id_width=CW)
    verilog = tmp_path / "rowstation_gin.v"
    verilog.write_text(to_verilog(dut, name="rowstation_gin"))
    assert lint(verilog, top="rowstation_gin") == []


@pytest.mark.parametrize("columns", [None, [1, 3]], ids=["all", "lane"])
def test_gon_collects_every_word_in_order_per_source(columns):
    """Every word arrives once, in order per source, tagged with its PE: all of the array's,
    or those of a lane (PE columns 1 and 3, tagged with their array column)."""
    from rowstation.hw.noc import GlobalOutputNetwork

    dut = GlobalOutputNetwork(rows=ROWS, cols=COLS, payload_shape=signed(12), columns=columns)
    columns = columns or list(range(COLS))
    rng = np.random.default_rng(4)
    sent = {(r, c): [int(v) for v in rng.integers(-2048, 2048, int(rng.integers(0, 30)))]
            for r in range(ROWS) for c in columns}
    got = {key: [] for key in sent}
    total = sum(map(len, sent.values()))

    def source(key):
        async def testbench(ctx):
            port = dut.i[key[0]][columns.index(key[1])]
            await feed(ctx, port, sent[key], rng=np.random.default_rng(hash(key) % 1000), idle=0.4)
        return testbench

    async def sink(ctx):
        count = 0
        while count < total:
            ctx.set(dut.o.ready, rng.random() >= 0.5)
            _, _, valid, ready, word = await ctx.tick().sample(dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                got[divmod(word.pe, COLS)].append(word.data)
                count += 1
        for _ in range(20):  # nothing more may come
            ctx.set(dut.o.ready, 1)
            _, _, valid = await ctx.tick().sample(dut.o.valid)
            assert not valid

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for key in sent:
        sim.add_testbench(source(key))
    sim.add_testbench(sink)
    sim.run_until(20 * (total + 50) * 1e-6)
    assert got == sent


def test_gon_round_robin_serves_every_source_in_turn():
    """With every PE offering all the time, grants visit the sources in order (no starvation)."""
    from rowstation.hw.noc import GlobalOutputNetwork

    dut = GlobalOutputNetwork(rows=ROWS, cols=COLS, payload_shape=signed(12))
    n = ROWS * COLS
    order = []

    async def testbench(ctx):
        for r in range(ROWS):
            for c in range(COLS):
                ctx.set(dut.i[r][c].valid, 1)
                ctx.set(dut.i[r][c].payload, r * COLS + c)
        ctx.set(dut.o.ready, 1)
        for _ in range(3 * n + 1):
            _, _, valid, word = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if valid:
                order.append((word.pe, word.data))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(testbench)
    sim.run()
    assert [source for source, _ in order] == [i % n for i in range(1, 3 * n + 1)]
    assert all(source == data for source, data in order)
