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

from ..gen.isa import ARRAY_EVENTS, CORE_EVENTS, COUNTERS, PE_EVENTS
from .array import PEArray
from .controller import Controller, ProgramSignature, TensorBases
from .counters import EventCounters
from .glb import GlobalBuffer
from .memory import MemoryReadSignature, MemoryWriteSignature


__all__ = ["RowStationCore"]


def _glb_ports(config):
    """The global buffer's read and write ports: {port name: (controller port, element shape)}."""
    ifmap, psum = signed(config.ifmap_width), signed(config.glb_psum_bits)
    lanes = range(config.psum_noc_lanes)
    reads = {**{f"ifmap_rd_{lane}": ("ifmap_rd", lane, ifmap) for lane in range(config.ifmap_noc_lanes)},
             "psum_st": ("psum_st", None, psum), **{f"psum_rd_{lane}": ("psum_rd", lane, psum) for lane in lanes}}
    writes = {"ifmap_wr": ("ifmap_wr", None, ifmap), "psum_ld": ("psum_ld", None, psum),
              **{f"psum_wr_{lane}": ("psum_wr", lane, psum) for lane in lanes}}
    return reads, writes


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
        reads, writes = _glb_ports(c)
        m.submodules.glb = glb = GlobalBuffer(
            c, reads={name: shape for name, (_, _, shape) in reads.items()},
            writes={name: shape for name, (_, _, shape) in writes.items()})
        ports = {}   # GLB port name -> the controller's port
        for name, (member, lane, _) in {**reads, **writes}.items():
            ports[name] = getattr(ctrl, member) if lane is None else getattr(ctrl, member)[lane]

        wiring.connect(m, wiring.flipped(self.program), ctrl.program)
        wiring.connect(m, wiring.flipped(self.mem_rd), ctrl.mem_rd)
        wiring.connect(m, wiring.flipped(self.mem_wr), ctrl.mem_wr)
        for name, port in ports.items():
            wiring.connect(m, port, getattr(glb, name))
        wiring.connect(m, ctrl.array, array.ctrl)
        for lane in range(c.psum_noc_lanes):
            wiring.connect(m, array.opsum[lane], ctrl.opsum[lane])
            wiring.connect(m, ctrl.psum[lane], array.psum[lane])
        for lane in range(c.ifmap_noc_lanes):
            wiring.connect(m, ctrl.ifmap[lane], array.ifmap[lane])
        wiring.connect(m, ctrl.filt, array.filt)
        m.d.comb += [ctrl.bases.eq(self.bases), self.done.eq(ctrl.done),
                     self.error.eq(ctrl.error), self.unmatched.eq(array.unmatched),
                     array.clear.eq(self.clear)]

        lanes = {"glb_reads": len(reads), "glb_writes": len(writes),
                 "program_words": len(ProgramSignature().members)}
        m.submodules.counters = counters = EventCounters(
            {name: lanes.get(name, 1) for name in CORE_EVENTS}, width=c.counter_width)
        fired = lambda s: s.valid & s.ready
        m.d.comb += [
            counters.clear.eq(self.clear),
            counters.events.dram_reads.eq(fired(self.mem_rd.data)),
            counters.events.dram_writes.eq(fired(self.mem_wr.data)),
            counters.events.glb_reads.eq(Cat(fired(ports[name].data) for name in reads)),
            counters.events.glb_writes.eq(Cat(fired(ports[name]) for name in writes)),
            counters.events.program_words.eq(Cat(fired(getattr(self.program, unit))
                                                 for unit in ProgramSignature().members)),
            counters.events.passes.eq(ctrl.runs),
        ]
        for name in PE_EVENTS + ARRAY_EVENTS:
            m.d.comb += getattr(self.counts, name).eq(getattr(array.counts, name))
        for name in CORE_EVENTS:
            m.d.comb += getattr(self.counts, name).eq(getattr(counters.counts, name))
        return m
