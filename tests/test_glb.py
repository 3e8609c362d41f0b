"""The global buffer: every element written through any port reads back exactly through any
port of the same element width, under random stalls and bank conflicts; capacity and packing
follow the configuration."""

import numpy as np
import pytest
from amaranth import signed
from amaranth.sim import Simulator

from rowstation.gen import preset
from rowstation.hw.export import to_verilog
from rowstation.hw.glb import GlobalBuffer
from rowstation.sim.runner import lint

from amaranth_streams import drain, feed


CONFIG = preset("tiny").replace(glb_banks=3, glb_bank_depth=8)  # 3 banks: one not a power of 2
IFMAP, PSUM = signed(CONFIG.ifmap_width), signed(CONFIG.psum_width)


def make_glb():
    return GlobalBuffer(CONFIG, reads={"ifmap_rd": IFMAP, "psum_rd": PSUM, "psum_rd2": PSUM},
                        writes={"ifmap_wr": IFMAP, "psum_wr": PSUM, "psum_wr2": PSUM})


def test_capacity_and_packing():
    assert CONFIG.glb_lanes(CONFIG.ifmap_width) == CONFIG.glb_bank_width // CONFIG.ifmap_width == 4
    assert CONFIG.glb_lanes(CONFIG.psum_width) == 1  # a 24-bit psum in a 32-bit word
    assert CONFIG.glb_capacity(CONFIG.ifmap_width) == 3 * 8 * 4
    assert CONFIG.glb_capacity(CONFIG.psum_width) == 3 * 8
    assert CONFIG.replace(glb_bank_width=40).glb_lanes(8) == 4  # a power of two: 5 do not pack
    eyeriss = preset("eyeriss-v1")
    assert eyeriss.glb_capacity(16) * 16 == eyeriss.glb_bytes * 8  # 108 KB of 16-bit ifmaps


def run(writes, reads, *, seed, idle, stall):
    """``writes``: port -> [(addr, value)], all fed concurrently, then ``reads``: port -> [addr],
    all concurrently; returns port -> values read."""
    dut = make_glb()
    rng = np.random.default_rng(seed)
    done = {"writes": 0}
    got = {}

    def writer(name, words):
        async def testbench(ctx):
            await feed(ctx, getattr(dut, name), [{"addr": a, "data": v} for a, v in words], rng=rng, idle=idle)
            done["writes"] += 1
        return testbench

    def reader(name, addrs):
        async def requests(ctx):
            while done["writes"] < len(writes):
                await ctx.tick()
            await feed(ctx, getattr(dut, name).addr, addrs, rng=rng, idle=idle)

        async def responses(ctx):
            got[name], _ = await drain(ctx, getattr(dut, name).data, len(addrs), rng=rng, stall=stall)
        return requests, responses

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for name, words in writes.items():
        sim.add_testbench(writer(name, words))
    for name, addrs in reads.items():
        for testbench in reader(name, addrs):
            sim.add_testbench(testbench)
    sim.run()
    return got


@pytest.mark.parametrize("idle,stall", [(0.0, 0.0), (0.3, 0.5), (0.6, 0.8)])
def test_every_element_reads_back_through_every_port(idle, stall):
    rng = np.random.default_rng(int(idle * 10 + stall * 100))
    lo, hi = -(1 << CONFIG.ifmap_width - 1), 1 << CONFIG.ifmap_width - 1
    plo, phi = -(1 << CONFIG.psum_width - 1), 1 << CONFIG.psum_width - 1
    # Ifmaps in words 0-11 (banks 0-1, 4 to a word), psums in words 12-23 (banks 1-2): both
    # psum writers, and all readers, contend for banks.
    ifmap_addrs = rng.permutation(12 * 4)[:40]
    psum_addrs = rng.permutation(np.arange(12, CONFIG.glb_capacity(CONFIG.psum_width)))
    ifmap = {int(a): int(v) for a, v in zip(ifmap_addrs, rng.integers(lo, hi, len(ifmap_addrs)))}
    psum = {int(a): int(v) for a, v in zip(psum_addrs, rng.integers(plo, phi, len(psum_addrs)))}
    psum_items = list(psum.items())
    writes = {"ifmap_wr": list(ifmap.items()), "psum_wr": psum_items[::2], "psum_wr2": psum_items[1::2]}
    reads = {"ifmap_rd": list(rng.permutation(list(ifmap))) * 2,
             "psum_rd": list(rng.permutation(list(psum))), "psum_rd2": list(rng.permutation(list(psum)))}
    got = run(writes, reads, seed=7, idle=idle, stall=stall)
    for name, addrs in reads.items():
        memory = ifmap if name == "ifmap_rd" else psum
        assert got[name] == [memory[int(a)] for a in addrs], name


def test_neighbouring_lanes_are_kept():
    """Writing one element of a word leaves the word's other elements unchanged."""
    values = list(range(-6, 6))
    got = run({"ifmap_wr": list(enumerate(values))}, {"ifmap_rd": list(range(len(values)))},
              seed=1, idle=0.2, stall=0.2)
    assert got["ifmap_rd"] == values


def test_glb_verilog_is_lint_clean(tmp_path):
    verilog = tmp_path / "glb.v"
    verilog.write_text(to_verilog(make_glb(), name="glb"))
    assert lint(verilog, top="glb") == []
