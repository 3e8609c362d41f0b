"""cocotb testbench of the PE array (``rowstation_array``): the testbench is the controller and
global buffer, issuing the schedule of rowstation.sim.schedule pass by pass. The case file
named by ROWSTATION_CASE gives the configuration and the layers (with seeds and stall rates)."""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge

from rowstation.gen import AcceleratorConfig, ConvLayer
from rowstation.gen.mapper import map_layer
from rowstation.hw.pe import PEEventSignature
from rowstation.sim.cocotb_streams import StreamSink, StreamSource
from rowstation.sim.golden import conv2d
from rowstation.sim.schedule import array_passes
from rowstation.sim.stimulus import random_layer_arrays


CASE = json.loads(Path(os.environ["ROWSTATION_CASE"]).read_text())
CONFIG = AcceleratorConfig(**CASE["config"])
PERIOD_NS = 10


class TB:
    def __init__(self, dut, *, seed, idle, stall):
        self.dut = dut
        rng = np.random.default_rng(seed)
        ports = dict(clock=dut.clk, period_ns=PERIOD_NS)
        self.sources = {net: StreamSource(dut, net, **ports, rng=rng, idle=idle) for net in ("filt", "ifmap", "psum")}
        self.sink = StreamSink(dut, "opsum", **ports, rng=rng, stall=stall, signed=False)
        self.row_bits = len(dut.filt_row_ids__0)
        self.col_bits = len(dut.filt_col_ids__0__0)
        self.gon_row_bits = (CONFIG.array_rows - 1).bit_length()
        self.gon_col_bits = (CONFIG.array_cols - 1).bit_length()
        dut.clear.value = 0

    async def reset(self):
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 2)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    def pack(self, words):
        shift = self.row_bits + self.col_bits
        return [row | col << self.row_bits | value << shift for row, col, value in words]

    def unpack(self, word):
        row = word & ((1 << self.gon_row_bits) - 1)
        col = (word >> self.gon_row_bits) & ((1 << self.gon_col_bits) - 1)
        value = word >> (self.gon_row_bits + self.gon_col_bits)
        if value >> (CONFIG.psum_width - 1):
            value -= 1 << CONFIG.psum_width
        return (row, col), value

    def apply(self, step):
        dut, pe = self.dut, step.mapping.pe_config
        for name in ("s", "u", "p", "q", "f", "rows", "accumulate"):
            getattr(dut, f"cfg__{name}").value = int(getattr(pe, name))
        for net, (row_ids, col_ids) in step.ids.items():
            for r, row_id in enumerate(row_ids):
                getattr(dut, f"{net}_row_ids__{r}").value = row_id
                for c, col_id in enumerate(col_ids[r]):
                    getattr(dut, f"{net}_col_ids__{r}__{c}").value = col_id
        for r, row in enumerate(step.chain_bottom):
            for c, bit in enumerate(row):
                getattr(dut, f"chain_bottom__{r}__{c}").value = bit
                getattr(dut, f"chain_top__{r}__{c}").value = step.chain_top[r][c]

    async def run_layer(self, layer, x, w, b):
        mapping = map_layer(CONFIG, layer)
        glb = np.zeros(layer.ofmap_shape, dtype=np.int64) + b[None, :, None, None]
        counts = dict.fromkeys(PEEventSignature.EVENTS, 0)
        for step in array_passes(mapping, x, w, unused_id=(1 << self.col_bits) - 1):
            while not self.dut.idle.value:
                await RisingEdge(self.dut.clk)
            self.apply(step)
            await RisingEdge(self.dut.clk)
            sends = [cocotb.start_soon(self.sources[net].send(self.pack(words)))
                     for net, words in (("filt", step.filter_words), ("ifmap", step.ifmap_words),
                                        ("psum", step.ipsum_words(glb)))]
            words, _ = await self.sink.receive(step.psum_count)
            seen = {}
            for word in words:
                source, value = self.unpack(word)
                assert source in step.tops, f"psum from PE {source}, which is no chain top"
                step.store(glb, source, seen.get(source, 0), value)
                seen[source] = seen.get(source, 0) + 1
            for task in sends:
                await task
            for name, value in step.events(x).items():
                counts[name] += value
        await ClockCycles(self.dut.clk, 4)
        return glb, counts


@cocotb.test(timeout_time=CASE["timeout_us"], timeout_unit="us")
async def test_layers(dut):
    """Every layer: ofmap equal to the golden convolution, array counters equal to the sum of
    the PEs' exact event counts."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for case in CASE["layers"]:
        layer = ConvLayer.parse(case["layer"])
        arrays = random_layer_arrays(CONFIG, layer, seed=case["seed"], zeros=0.25)
        x, w, b = arrays["ifmap"], arrays["weights"], arrays["bias"]
        tb = TB(dut, seed=case["seed"], idle=case["idle"], stall=case["stall"])
        await tb.reset()
        start = cocotb.simtime.get_sim_time("ns")
        got, want_counts = await tb.run_layer(layer, x, w, b)
        cycles = int((cocotb.simtime.get_sim_time("ns") - start) // PERIOD_NS)
        dut._log.info("layer %s (seed %d, idle %.2f, stall %.2f): %d cycles", layer, case["seed"],
                      case["idle"], case["stall"], cycles)
        want = conv2d(x, w, b, stride=layer.U, padding=layer.P, groups=layer.G)
        assert np.array_equal(got, want), f"layer {layer}: ofmap differs from the golden model"
        counts = {name: getattr(dut, f"counts__{name}").value.to_unsigned() for name in want_counts}
        assert counts == want_counts, f"layer {layer}: counters {counts} != {want_counts}"
        assert counts["mac"] + counts["gated_mac"] == layer.macs
