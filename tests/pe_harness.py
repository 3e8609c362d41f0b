"""Run passes through a PE in Amaranth's simulator with random stalls on every port."""

import numpy as np
from amaranth.sim import Simulator

from rowstation.gen.isa import PE_EVENTS, PE_SETTINGS
from rowstation.hw.pe import PE
from rowstation.sim.pe_model import filter_transfers, filter_words, ifmap_words, pe_events, pe_reference

from amaranth_streams import drain, feed


def expected(passes):
    """Opsum words and event counts that ``passes`` [(cfg, weights, ifmap, ipsum)] must give."""
    words = np.concatenate([pe_reference(cfg, w, x, i).ravel() for cfg, w, x, i in passes])
    counts = dict.fromkeys(PE_EVENTS, 0)
    for cfg, _, x, _ in passes:
        for name, value in pe_events(cfg, x).items():
            counts[name] += value
    return words, counts


def simulate_pe(config, passes, *, seed=0, idle=0.0, stall=0.0, max_cycles=None,
                ifmap_after_filters=False):
    """Returns a dict with the opsum words, transfer cycles, counts and final idle flag.
    Ifmaps are offered from the start (prefetch while filters load) unless ``ifmap_after_filters``."""
    dut = PE(config, counters=True)
    rng = np.random.default_rng(seed)
    want, _ = expected(passes)
    result = {}

    async def control(ctx):
        cycles, elapsed = [], 0
        for cfg, weights, _, _ in passes:
            for name in PE_SETTINGS:
                ctx.set(getattr(dut.cfg, name), int(getattr(cfg, name)))
            fed = await feed(ctx, dut.filt, filter_transfers(config, filter_words(weights, cfg.lanes)), rng=rng, idle=idle)
            cycles += [elapsed + cycle for cycle in fed]   # cycles since the start
            elapsed = cycles[-1] + 1
        result["filt_cycles"] = cycles

    async def ifmaps(ctx):
        words = np.concatenate([ifmap_words(x) for _, _, x, _ in passes])
        waited = 0
        while ifmap_after_filters and "filt_cycles" not in result:
            await ctx.tick()
            waited += 1
        cycles = await feed(ctx, dut.ifmap, words, rng=rng, idle=idle)
        result["ifmap_cycles"] = [cycle + waited for cycle in cycles]

    async def ipsums(ctx):
        words = [i.ravel() for cfg, _, _, i in passes if cfg.accumulate]
        if words:
            await feed(ctx, dut.ipsum, np.concatenate(words), rng=rng, idle=idle)

    async def opsums(ctx):
        words, cycles = await drain(ctx, dut.opsum, len(want), rng=rng, stall=stall)
        for _ in range(4):
            await ctx.tick()
        result.update(words=np.array(words, dtype=np.int64), opsum_cycles=cycles,
                      idle=ctx.get(dut.idle),
                      counts={name: ctx.get(getattr(dut.counts, name)) for name in PE_EVENTS})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for testbench in (control, ifmaps, ipsums, opsums):
        sim.add_testbench(testbench)
    if max_cycles is None:
        slots = sum(cfg.rows * cfg.f * cfg.s * cfg.p * cfg.q + cfg.filter_words + x.size for cfg, _, x, _ in passes)
        max_cycles = 20 * slots + 200
    sim.run_until(max_cycles * 1e-6)
    assert "words" in result, f"PE delivered no complete output within {max_cycles} cycles"
    return result
