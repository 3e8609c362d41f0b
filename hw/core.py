"""The accelerator core: the PE array, its networks, the global buffer and the controller.

A host (or the testbench) streams a layer's three instruction streams into ``program`` (see
:mod:`rowstation.gen.isa`) and serves the core's external memory bursts (see
:mod:`rowstation.hw.memory`): reads on ``mem_rd``, writes on ``mem_wr``, the program's addresses
offset by ``bases`` (:class:`~rowstation.hw.controller.TensorBases`). ``done`` strobes when
every stream reaches ``END`` and every write's response is back. ``counts`` holds the counters
:data:`rowstation.gen.isa.COUNTERS`; ``clear`` zeroes them.
"""

from amaranth import *
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from ..gen.isa import ARRAY_EVENTS, CORE_EVENTS, COUNTERS, NETWORKS, PE_EVENTS
from .array import PEArray
from .controller import Controller, ProgramSignature, TensorBases
from .counters import EventCounters
from .glb import GlobalBuffer
from .memory import MemoryReadSignature, MemoryWriteSignature


__all__ = ["RowStationCore"]

_GLB_READS = ("ifmap_rd", "psum_rd", "psum_st")
_GLB_WRITES = ("ifmap_wr", "psum_ld", "psum_wr")


class RowStationCore(wiring.Component):
    def __init__(self, config, *, pe_module=None):
        """``pe_module``: see :class:`rowstation.hw.array.PEArray`."""
        self._config, self._pe_module = config, pe_module
        super().__init__({
            "program": In(ProgramSignature()),
            "bases": In(TensorBases(config)),
            "mem_rd": Out(MemoryReadSignature(config.dram_width, config.dram_addr_width)),
            "mem_wr": Out(MemoryWriteSignature(config.dram_width, config.dram_addr_width)),
            "done": Out(1),
            "error": Out(1),
            "unmatched": Out(1),
            "clear": In(1),
            "counts": Out(EventCounters.counts_signature(COUNTERS, config.counter_width)),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.array = array = PEArray(c, pe_module=self._pe_module)
        m.submodules.controller = ctrl = Controller(c)
        ifmap, psum = signed(c.ifmap_width), signed(c.glb_psum_bits)
        m.submodules.glb = glb = GlobalBuffer(
            c, reads={"ifmap_rd": ifmap, "psum_rd": psum, "psum_st": psum},
            writes={"ifmap_wr": ifmap, "psum_ld": psum, "psum_wr": psum})

        wiring.connect(m, wiring.flipped(self.program), ctrl.program)
        wiring.connect(m, wiring.flipped(self.mem_rd), ctrl.mem_rd)
        wiring.connect(m, wiring.flipped(self.mem_wr), ctrl.mem_wr)
        for name in _GLB_READS + _GLB_WRITES:
            wiring.connect(m, getattr(ctrl, name), getattr(glb, name))
        wiring.connect(m, ctrl.array, array.ctrl)
        wiring.connect(m, array.opsum, ctrl.opsum)
        for net in NETWORKS:
            wiring.connect(m, getattr(ctrl, net), getattr(array, net))
        m.d.comb += [ctrl.bases.eq(self.bases), self.done.eq(ctrl.done),
                     self.error.eq(ctrl.error), self.unmatched.eq(array.unmatched),
                     array.clear.eq(self.clear)]

        lanes = {"glb_reads": len(_GLB_READS), "glb_writes": len(_GLB_WRITES),
                 "program_words": len(ProgramSignature().members)}
        m.submodules.counters = counters = EventCounters(
            {name: lanes.get(name, 1) for name in CORE_EVENTS}, width=c.counter_width)
        fired = lambda s: s.valid & s.ready
        m.d.comb += [
            counters.clear.eq(self.clear),
            counters.events.dram_reads.eq(fired(self.mem_rd.data)),
            counters.events.dram_writes.eq(fired(self.mem_wr.data)),
            counters.events.glb_reads.eq(Cat(fired(getattr(ctrl, n).data) for n in _GLB_READS)),
            counters.events.glb_writes.eq(Cat(fired(getattr(ctrl, n)) for n in _GLB_WRITES)),
            counters.events.program_words.eq(Cat(fired(getattr(self.program, unit))
                                                 for unit in ProgramSignature().members)),
            counters.events.passes.eq(ctrl.runs),
        ]
        for name in PE_EVENTS + ARRAY_EVENTS:
            m.d.comb += getattr(self.counts, name).eq(getattr(array.counts, name))
        for name in CORE_EVENTS:
            m.d.comb += getattr(self.counts, name).eq(getattr(counters.counts, name))
        return m
