"""cocotb testbench of the PE (generated Verilog, ``rowstation_pe``): the case file named by
ROWSTATION_CASE holds the passes, the expected opsum words and counts (from the golden model)
and the stall patterns to run."""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from rowstation.sim.cocotb_streams import StreamSink, StreamSource, reset


CASE = json.loads(Path(os.environ["ROWSTATION_CASE"]).read_text())
PERIOD_NS = 10


class TB:
    """Owns the clock, reset and stream models of one PE; every input is driven from the start."""

    def __init__(self, dut, *, seed=0, idle=0.0, stall=0.0):
        self.dut = dut
        rng = np.random.default_rng(seed)
        ports = dict(clock=dut.clk, period_ns=PERIOD_NS)
        self.filt = StreamSource(dut, "filt", **ports, rng=rng, idle=idle)
        self.ifmap = StreamSource(dut, "ifmap", **ports, rng=rng, idle=idle)
        self.ipsum = StreamSource(dut, "ipsum", **ports, rng=rng, idle=idle)
        self.opsum = StreamSink(dut, "opsum", **ports, rng=rng, stall=stall)
        dut.clear.value = 0
        dut.keep.value = 0      # every pass releases its filters (kept filters: test_core_rtl)
        for name in CASE["passes"][0]["cfg"]:
            getattr(dut, f"cfg__{name}").value = 0

    async def reset(self):
        await reset(self.dut)

    async def run_passes(self, passes, *, ifmap_after_filters=False):
        """Stream all passes; returns (opsum words, ifmap transfer cycles, opsum transfer cycles)."""
        dut, filters_done = self.dut, []

        async def control():
            for p in passes:
                for name, value in p["cfg"].items():
                    getattr(dut, f"cfg__{name}").value = int(value)
                await self.filt.send(p["filt"])
            filters_done.append(True)

        async def ifmaps():
            while ifmap_after_filters and not filters_done:
                await RisingEdge(dut.clk)
            return await self.ifmap.send([w for p in passes for w in p["ifmap"]])

        tasks = [cocotb.start_soon(control()), cocotb.start_soon(ifmaps()),
                 cocotb.start_soon(self.ipsum.send([w for p in passes for w in p["ipsum"]]))]
        words, out_cycles = await self.opsum.receive(sum(len(p["opsum"]) for p in passes))
        await ClockCycles(dut.clk, 4)
        for task in tasks:
            assert task.done(), "a stream was not fully consumed"
        return words, tasks[1].result(), out_cycles


@cocotb.test(timeout_time=CASE["timeout_us"], timeout_unit="us")
async def test_passes_under_stalls(dut):
    """Every variant: opsum words and event counts equal the golden model, PE idle after."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    passes = CASE["passes"]
    want = [w for p in passes for w in p["opsum"]]
    for variant in CASE["variants"]:
        tb = TB(dut, seed=variant["seed"], idle=variant["idle"], stall=variant["stall"])
        await tb.reset()
        words, _, _ = await tb.run_passes(passes)
        dut._log.info("variant %s (seed %d): %d words", variant["name"], variant["seed"], len(words))
        assert words == want, f"variant {variant['name']}: opsum differs from the golden model"
        counts = {name: getattr(dut, f"counts__{name}").value.to_unsigned() for name in CASE["counts"]}
        assert counts == CASE["counts"], f"variant {variant['name']}: counts {counts}"
        assert dut.idle.value == 1


@cocotb.test(timeout_time=CASE["timeout_us"], timeout_unit="us")
async def test_cycle_count(dut):
    """First pass alone, no stalls: its MAC cycles (rows*F*S*q*p/lanes, or p a column when the
    psums leave slower), the last lane rows' drain and the PE's fixed latency."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    tb = TB(dut)
    await tb.reset()
    first = CASE["passes"][0]
    words, in_cycles, out_cycles = await tb.run_passes([first], ifmap_after_filters=True)
    assert words == first["opsum"]
    assert out_cycles[-1] - in_cycles[0] == CASE["cycles"]
