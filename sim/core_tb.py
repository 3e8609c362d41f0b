"""cocotb monitor of the simulation harness (:mod:`rowstation.sim.harness`): the core runs the
layers' programs against the harness's external memory with no Python in the loop; this test
clocks it, waits for each layer's ``done`` and checks every counter against the controller
model's count. The counters run on across layers; a layer's counts are the differences.

The JSON file named by ROWSTATION_CASE lists per layer its name, the expected counters and
where to write the measured ones (``stats``).
"""

import json
import os
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge


CASE = json.loads(Path(os.environ["ROWSTATION_CASE"]).read_text())
PERIOD_NS = 10


async def wait_done(dut):
    """Until the core's ``done``; an event-driven simulator may also wake on glitches, so the
    settled values decide. A network word that matched no PE or a program error fails."""
    while True:
        await First(RisingEdge(dut.done), RisingEdge(dut.error), RisingEdge(dut.unmatched))
        await ReadOnly()
        if dut.error.value:
            raise AssertionError("the controller flagged an unknown opcode or register")
        if dut.unmatched.value:
            raise AssertionError("a network word matched no PE")
        if dut.done.value:
            return
        await RisingEdge(dut.clk)


@cocotb.test(timeout_time=CASE["timeout_us"], timeout_unit="us")
async def run_layers(dut):
    """Every layer's counters equal the controller model's; no address beyond the memory."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    before = dict.fromkeys(CASE["counters"], 0)
    modulo = 1 << CASE["counter_width"]
    for layer in CASE["layers"]:
        await wait_done(dut)
        await RisingEdge(dut.clk)  # the counters register the last cycle's events
        await ReadOnly()
        now = {name: int(getattr(dut, f"counts__{name}").value.to_unsigned())
               for name in CASE["counters"]}
        counts = {name: (now[name] - before[name]) % modulo for name in now}
        before = now
        dut._log.info("layer %s: %d cycles, %d passes", layer["name"], counts["cycles"], counts["passes"])
        Path(layer["stats"]).write_text(json.dumps(counts))
        differ = {name: (counts[name], want) for name, want in layer["expected"].items()
                  if counts[name] != want}
        assert not differ, f"layer {layer['name']}: counters (RTL, model) differ: {differ}"
        assert layer["macs"] <= CASE["mac_lanes"] * counts["active_pe"]
        assert counts["active_pe"] <= CASE["pe_count"] * counts["cycles"]
        await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)  # the harness writes the memory back
    assert not dut.bad_address.value, "the core addressed beyond the harness's external memory"
