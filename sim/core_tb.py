"""cocotb testbench running layers on the accelerator core (``rowstation_core``).

The testbench is the host and the external memory: it streams each layer's program (compiled
from the mapper's choice) into the core and serves its memory reads and writes with random
latency and stalls; the core does the rest. The JSON file named by ROWSTATION_CASE gives the
configuration and the layers: ``.npy`` paths of ifmap, weights and bias, stride/padding/groups,
stall rates, and where to write the exact accumulation (``output``) and the run's statistics
(``stats``). Every counter must equal the controller model's count.
"""

import json
import os
from collections import deque
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import First, ReadOnly, RisingEdge

from ..gen import AcceleratorConfig
from ..gen.mapper import map_layer
from ..gen.program import DramLayout, compile_layer
from .cocotb_streams import StreamSource, reset
from .controller_model import dram_image, dram_output, run_program
from .golden import layer_of


CASE = json.loads(Path(os.environ["ROWSTATION_CASE"]).read_text())
CONFIG = AcceleratorConfig(**CASE["config"])
PERIOD_NS = 10
ADDR_BITS = 32  # rowstation.hw.controller.MEMORY_ADDR_WIDTH


class ExternalMemory:
    """Word-addressed memory behind the core: reads return in order ``latency`` cycles after
    their address is taken (or later), with random stalls on every channel."""

    def __init__(self, dut, words, *, rng, stall, latency=4, outstanding=16):
        self.dut, self.words, self.rng, self.stall = dut, words, rng, stall
        self.latency, self.outstanding = latency, outstanding
        self.mask = (1 << CONFIG.dram_width) - 1
        self.running = True

    def _go(self):
        return int(self.rng.random() >= self.stall)

    def _read(self, address):
        if not 0 <= address < len(self.words):
            raise AssertionError(f"core read external address {address}, outside 0..{len(self.words) - 1}")
        return int(self.words[address]) & self.mask

    async def serve(self):
        dut, pending, offered, cycle = self.dut, deque(), None, 0
        dut.mem_rd__data__valid.value = 0
        while self.running:
            dut.mem_rd__addr__ready.value = int(len(pending) < self.outstanding and self._go())
            dut.mem_wr__ready.value = self._go()
            if offered is None and pending and pending[0][0] <= cycle and self._go():
                offered = pending.popleft()[1]
            dut.mem_rd__data__valid.value = int(offered is not None)
            if offered is not None:
                dut.mem_rd__data__payload.value = offered
            await ReadOnly()
            if dut.mem_rd__addr__valid.value and dut.mem_rd__addr__ready.value:
                pending.append((cycle + self.latency, self._read(dut.mem_rd__addr__payload.value.to_unsigned())))
            if dut.mem_rd__data__valid.value and dut.mem_rd__data__ready.value:
                offered = None
            if dut.mem_wr__valid.value and dut.mem_wr__ready.value:
                word = dut.mem_wr__payload.value.to_unsigned()
                address, value = word & ((1 << ADDR_BITS) - 1), word >> ADDR_BITS
                if not 0 <= address < len(self.words):
                    raise AssertionError(f"core wrote external address {address}, outside 0..{len(self.words) - 1}")
                self.words[address] = value - (1 << CONFIG.dram_width) if value >> (CONFIG.dram_width - 1) else value
            await RisingEdge(dut.clk)
            cycle += 1


async def run_layer(dut, layer, x, w, b, *, seed, idle, stall):
    """Runs one layer; returns (accumulation, counters, expected counters)."""
    rng = np.random.default_rng(seed)
    mapping = map_layer(CONFIG, layer)
    layout = DramLayout.packed(layer)
    program = compile_layer(mapping, b, layout)
    memory = dram_image(layout, layer, x, w)
    expected = run_program(mapping, program.words, memory.copy(), x, w)

    dut.clear.value = 1
    await RisingEdge(dut.clk)
    dut.clear.value = 0
    external = ExternalMemory(dut, memory, rng=rng, stall=stall)
    server = cocotb.start_soon(external.serve())
    feeder = cocotb.start_soon(StreamSource(dut, "program", dut.clk, PERIOD_NS, rng=rng, idle=idle)
                               .send(program.words))
    # Wake only on status changes (polling every cycle would dominate a long layer's run time);
    # an event-driven simulator may also wake on a glitch, so the settled values decide.
    while True:
        await First(RisingEdge(dut.done), RisingEdge(dut.error), RisingEdge(dut.unmatched))
        await ReadOnly()
        if dut.error.value:
            raise AssertionError("the controller flagged an unknown opcode or register")
        if dut.unmatched.value:
            raise AssertionError("a network word matched no PE")
        if dut.done.value:
            break
        await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)
    await RisingEdge(dut.clk)  # the counters register the last cycle's events
    external.running = False
    await feeder
    await server
    counts = {name: int(getattr(dut, f"counts__{name}").value.to_unsigned()) for name in expected}
    counts["cycles"] = int(dut.counts__cycles.value.to_unsigned())
    counts["active_pe"] = int(dut.counts__active_pe.value.to_unsigned())
    return dram_output(memory, layout, layer), counts, expected, program


@cocotb.test(timeout_time=CASE["timeout_us"], timeout_unit="us")
async def run_layers(dut):
    """Every layer: writes the accumulation and statistics; every counter must equal the model."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for name in ("clear", "program__valid", "program__payload", "mem_rd__addr__ready",
                 "mem_rd__data__valid", "mem_rd__data__payload", "mem_wr__ready"):
        getattr(dut, name).value = 0
    await reset(dut)
    for case in CASE["layers"]:
        x, w = np.load(case["ifmap"]), np.load(case["weights"])
        b = None if case["bias"] is None else np.load(case["bias"])
        layer = layer_of(x, w, stride=case["stride"], padding=case["padding"], groups=case["groups"])
        acc, counts, expected, program = await run_layer(dut, layer, x, w, b, seed=case["seed"],
                                                         idle=case["idle"], stall=case["stall"])
        dut._log.info("layer %s: %d cycles, %d passes, %d program words, %d epochs", layer,
                      counts["cycles"], counts["passes"], len(program.words), program.epochs)
        np.save(case["output"], acc)
        Path(case["stats"]).write_text(json.dumps({"counters": counts, "epochs": program.epochs}))
        differ = {name: (counts[name], want) for name, want in expected.items() if counts[name] != want}
        assert not differ, f"layer {layer}: counters (RTL, model) differ: {differ}"
        assert layer.macs <= counts["active_pe"] <= CONFIG.pe_count * counts["cycles"]
