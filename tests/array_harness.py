"""Run a layer on the PE array in Amaranth's simulator. The testbench plays the controller and
the global buffer, following the mapper's schedule: per pass it sets the PE setting, the chain
links and the multicast IDs, multicasts each distinct filter block and ifmap row once, feeds the
chain bottoms the psums held so far (initially the bias) and collects the chain tops' psums."""

import numpy as np
from amaranth.sim import Simulator

from rowstation.hw.array import PEArray
from rowstation.hw.pe import PEEventSignature
from rowstation.sim.dataflow import ifmap_rows, pe_streams
from rowstation.sim.pe_model import filter_words

from amaranth_streams import feed


def plan(mapping, jobs):
    """PE assignments {(row, col): (output, term)}, chain bottoms [(pe, o)] and tops {pe: o}."""
    assign, bottoms, tops = {}, [], {}
    for slot, o, k in jobs:
        col, base = mapping.slot_position(slot)
        terms = mapping.chunk_terms(k)
        for t, term in enumerate(terms):
            assign[(base + mapping.chain - 1 - t, col)] = (mapping.outputs[o], term)
        bottoms.append(((base + mapping.chain - 1, col), o))
        tops[(base + mapping.chain - len(terms), col)] = o
    return assign, bottoms, tops


def simulate_array(config, mapping, x, w, bias=None, *, seed=0, idle=0.0, stall=0.0, max_cycles=200_000):
    L, p = mapping.layer, mapping.p
    dut = PEArray(config)
    rng = np.random.default_rng(seed)
    xp = np.pad(x, ((0, 0), (0, 0), (L.P, L.P), (L.P, L.P)))
    glb = np.zeros(L.ofmap_shape, dtype=np.int64)
    if bias is not None:
        glb += bias[None, :, None, None]
    unused = (1 << dut.col_id_width) - 1
    rows, cols = config.array_rows, config.array_cols
    pe_cfg = mapping.pe_config
    state = {"pass": 0, "collected": 0, "done": False, "unmatched": 0}
    plans = [plan(mapping, jobs) for jobs in mapping.passes]
    per_pass = [len(jobs) * L.N * L.F * p for jobs in mapping.passes]

    def m0(output):
        g, mb, _ = output
        return g * (L.M // L.G) + mb * p

    async def wait_for_pass(ctx, i):
        while state["pass"] <= i:
            await ctx.tick()

    async def control(ctx):
        for i, (assign, bottoms, _) in enumerate(plans):
            while state["collected"] < sum(per_pass[:i]) or not ctx.get(dut.idle):
                await ctx.tick()
            for name in ("s", "u", "p", "q", "f", "rows", "accumulate"):
                ctx.set(getattr(dut.cfg, name), int(getattr(pe_cfg, name)))
            filter_keys, ifmap_keys = [{} for _ in range(rows)], {}
            bottom_pes = {pe for pe, _ in bottoms}
            for r in range(rows):
                ctx.set(dut.filt_row_ids[r], r)
                ctx.set(dut.ifmap_row_ids[r], 0)
                ctx.set(dut.psum_row_ids[r], r)
                for c in range(cols):
                    job = assign.get((r, c))
                    fid = iid = unused
                    if job:
                        (g, mb, e), (cb, rr, sb) = job
                        fid = filter_keys[r].setdefault((g, mb, cb, rr, sb), len(filter_keys[r]))
                        iid = ifmap_keys.setdefault((g, cb, e * L.U + rr, sb), len(ifmap_keys))
                    ctx.set(dut.filt_col_ids[r][c], fid)
                    ctx.set(dut.ifmap_col_ids[r][c], iid)
                    ctx.set(dut.psum_col_ids[r][c], c if (r, c) in bottom_pes else unused)
                    ctx.set(dut.chain_bottom[r][c], (r, c) in bottom_pes or job is None)
                    ctx.set(dut.chain_top[r][c], (r, c) in plans[i][2] or job is None)
            state["keys"] = (filter_keys, ifmap_keys)
            state["pass"] = i + 1
            await ctx.tick()

    async def filters(ctx):
        for i, (assign, _, _) in enumerate(plans):
            await wait_for_pass(ctx, i)
            filter_keys, _ = state["keys"]
            words = []
            for r in range(rows):
                for key, kid in filter_keys[r].items():
                    g, mb, cb, rr, sb = key
                    blocks, _ = pe_streams(mapping, xp, w, (g, mb, 0), (cb, rr, sb))
                    words += [{"row": r, "col": kid, "data": int(v)} for v in filter_words(blocks)]
            await feed(ctx, dut.filt, words, rng=rng, idle=idle)

    async def ifmaps(ctx):
        for i in range(len(plans)):
            await wait_for_pass(ctx, i)
            _, ifmap_keys = state["keys"]
            streams = []
            for (g, cb, row, sb), kid in ifmap_keys.items():
                streams.append((kid, ifmap_rows(mapping, xp, g, cb, row, sb)))
            # Column by column across keys, so the PEs of a chain advance together.
            words = [{"row": 0, "col": kid, "data": int(data[n, qc, col])}
                     for n in range(L.N) for col in range(pe_cfg.row_length)
                     for kid, data in streams for qc in range(mapping.q)]
            await feed(ctx, dut.ifmap, words, rng=rng, idle=idle)

    async def ipsums(ctx):
        for i, (_, bottoms, _) in enumerate(plans):
            await wait_for_pass(ctx, i)
            words = []
            for n in range(L.N):
                for xo in range(L.F):
                    for (r, c), o in bottoms:
                        (g, mb, e) = mapping.outputs[o]
                        words += [{"row": r, "col": c, "data": int(glb[n, m0((g, mb, e)) + pf, e, xo])}
                                  for pf in range(p)]
            await feed(ctx, dut.psum, words, rng=rng, idle=idle)

    async def collect(ctx):
        for i, (_, _, tops) in enumerate(plans):
            await wait_for_pass(ctx, i)
            seen = {pe: 0 for pe in tops}
            got = 0
            while got < per_pass[i]:
                ctx.set(dut.opsum.ready, rng.random() >= stall)
                _, _, valid, ready, word, unmatched = await ctx.tick().sample(
                    dut.opsum.valid, dut.opsum.ready, dut.opsum.payload, dut.unmatched)
                state["unmatched"] += unmatched
                if valid and ready:
                    pe = (word.row, word.col)
                    assert pe in tops, f"psum from {pe}, which is no chain top"
                    (g, mb, e) = mapping.outputs[tops[pe]]
                    n, rest = divmod(seen[pe], L.F * p)
                    xo, pf = divmod(rest, p)
                    glb[n, m0((g, mb, e)) + pf, e, xo] = word.data
                    seen[pe] += 1
                    got += 1
            state["collected"] += got
        ctx.set(dut.opsum.ready, 0)
        for _ in range(8):
            await ctx.tick()
        state["counts"] = {name: ctx.get(getattr(dut.counts, name)) for name in PEEventSignature.EVENTS}
        state["cycles"] = ctx.get(dut.idle)
        state["done"] = True

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in (control, filters, ifmaps, ipsums, collect):
        sim.add_testbench(testbench)
    sim.run_until(max_cycles * 1e-6)
    assert state["done"], f"the array did not finish the layer within {max_cycles} cycles"
    assert state["unmatched"] == 0
    return glb, state["counts"]
