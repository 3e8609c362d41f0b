"""cocotb testbench running layers on the PE array (``rowstation_array``).

The testbench is the controller, global buffer and external memory: it issues the schedule of
:mod:`rowstation.sim.schedule` pass by pass and keeps the psums between passes. The JSON file
named by ROWSTATION_CASE gives the configuration and the layers: ``.npy`` paths of ifmap,
weights and bias, stride/padding/groups, stall rates, and where to write the exact
accumulation (``output``, .npy) and the run's statistics (``stats``, .json).
"""

import json
import os
from pathlib import Path

import cocotb
import numpy as np
from cocotb.clock import Clock
from cocotb.simtime import get_sim_time
from cocotb.triggers import RisingEdge

from ..gen import AcceleratorConfig
from ..gen.mapper import map_layer
from ..hw.array import ARRAY_EVENTS
from ..hw.pe import PEEventSignature
from .cocotb_streams import StreamSink, StreamSource, reset
from .golden import layer_of
from .schedule import array_passes


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
        await reset(self.dut)

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
        """Returns the exact accumulation, the expected event counts and the words moved."""
        mapping = map_layer(CONFIG, layer)
        glb = np.zeros(layer.ofmap_shape, dtype=np.int64)
        if b is not None:
            glb += b[None, :, None, None]
        counts = dict.fromkeys(PEEventSignature.EVENTS, 0)
        moved = {"filt": 0, "ifmap": 0, "psum_in": 0, "psum_out": 0, "passes": 0}
        for step in array_passes(mapping, x, w):
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
            for name, value in step.events.items():
                counts[name] += value
            moved["filt"] += len(step.filter_words)
            moved["ifmap"] += len(step.ifmap_words)
            moved["psum_in"] += step.psum_count
            moved["psum_out"] += step.psum_count
            moved["passes"] += 1
        while not self.dut.idle.value:
            await RisingEdge(self.dut.clk)
        return glb, counts, moved


@cocotb.test(timeout_time=CASE["timeout_us"], timeout_unit="us")
async def run_layers(dut):
    """Every layer: writes the accumulation and statistics; the array's counters must equal the
    exact event counts of the schedule."""
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    for case in CASE["layers"]:
        x, w = np.load(case["ifmap"]), np.load(case["weights"])
        b = None if case["bias"] is None else np.load(case["bias"])
        layer = layer_of(x, w, stride=case["stride"], padding=case["padding"], groups=case["groups"])
        tb = TB(dut, seed=case["seed"], idle=case["idle"], stall=case["stall"])
        await tb.reset()
        start = get_sim_time("ns")
        acc, want_counts, words = await tb.run_layer(layer, x, w, b)
        cycles = int((get_sim_time("ns") - start) // PERIOD_NS)
        await RisingEdge(dut.clk)  # the counters register the last cycle's events
        counts = {name: getattr(dut, f"counts__{name}").value.to_unsigned()
                  for name in PEEventSignature.EVENTS + ARRAY_EVENTS}
        dut._log.info("layer %s (idle %.2f, stall %.2f): %d cycles, %d passes", layer,
                      case["idle"], case["stall"], cycles, words["passes"])
        np.save(case["output"], acc)
        Path(case["stats"]).write_text(json.dumps({"cycles": cycles, "counters": counts,
                                                   "words": words}))
        pe_counts = {name: counts[name] for name in want_counts}
        assert pe_counts == want_counts, f"layer {layer}: counters {pe_counts} != {want_counts}"
        assert counts["mac"] + counts["gated_mac"] == layer.macs
        transfers = {net: counts[f"{net}_transfers"] for net in ("filt", "ifmap", "psum", "opsum")}
        assert transfers == {"filt": words["filt"], "ifmap": words["ifmap"],
                             "psum": words["psum_in"], "opsum": words["psum_out"]}, transfers
        # One MAC slot per cycle of an active PE; the counter runs from reset to this read.
        assert layer.macs <= counts["active_pe"] <= CONFIG.pe_count * counts["cycles"]
        assert counts["cycles"] >= cycles
