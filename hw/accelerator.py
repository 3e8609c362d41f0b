"""The accelerator: the core behind an AXI4-Lite control port and an AXI4 memory port, running
a list of layer descriptors (:mod:`rowstation.gen.descriptor`) after one start.

The sequencer reads each descriptor, checks it, starts three :class:`ProgramFetcher` s (one per
instruction stream) and the core with the descriptor's tensor bases (a ``CONV`` layer) or the
:class:`~rowstation.hw.pool.MaxPooler` (a ``MAXPOOL`` layer), waits for it to finish, writes
the counters to the descriptor's ``stats`` address, and goes on to the next.
Every external access (descriptors, programs, tensors, counters) goes through the one
:class:`~rowstation.hw.axi.AXI4Manager`. On an error (:class:`~rowstation.gen.csr.ErrorCode`)
or ``CTRL.abort`` the sequencer holds everything but the registers and the AXI port in reset
while the port completes the bursts it started, then reports done with the error code: a
failed run never hangs the bus or the host.
"""

from amaranth import *
from amaranth.hdl import DomainRenamer
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..gen.csr import ControlRegisters, ErrorCode
from ..gen.descriptor import ADDRESSES, DESCRIPTOR_BYTES, DESCRIPTOR_WORDS, MAX_WINDOW, NAMES, Kind
from ..gen.isa import COUNTERS, WORD_WIDTH
from .axi import AXI4LiteSignature, AXI4Manager, AXI4Signature, RegisterFile
from .controller import UNIT_NAMES
from .core import RowStationCore
from .memory import BurstArbiter, ElementReader, ElementWriter, MemoryReadSignature
from .pool import MaxPooler


__all__ = ["ProgramFetcher", "Accelerator"]


class ProgramFetcher(wiring.Component):
    """Streams ``words`` instruction words from the byte address ``base`` of external memory
    when ``start`` strobes. ``busy`` until the last word is taken."""

    def __init__(self, config):
        self._config = config
        super().__init__({"start": In(1), "base": In(config.dram_addr_width), "words": In(32), "busy": Out(1),
                          "memory": Out(MemoryReadSignature(config.dram_width, config.dram_addr_width)),
                          "program": Out(stream.Signature(WORD_WIDTH))})

    def elaborate(self, platform):
        m = Module()
        c = self._config
        m.submodules.reader = reader = ElementReader(width=c.dram_width, burst=c.dram_burst,
                                                     addr_width=c.dram_addr_width,
                                                     element_width=WORD_WIDTH)
        wiring.connect(m, reader.memory, wiring.flipped(self.memory))
        pending = Signal()      # the run waits for the reader
        left = Signal(32)
        with m.If(self.start):
            m.d.sync += [pending.eq(1), left.eq(self.words)]
        with m.Else():
            with m.If(reader.runs.ready):
                m.d.sync += pending.eq(0)
            with m.If(self.program.valid & self.program.ready):
                m.d.sync += left.eq(left - 1)
        m.d.comb += [reader.runs.valid.eq(pending), reader.runs.payload.addr.eq(self.base),
                     reader.runs.payload.count.eq(self.words), reader.runs.payload.size.eq(2),
                     self.program.valid.eq(reader.elements.valid),
                     self.program.payload.eq(reader.elements.payload.data[0]),
                     reader.elements.ready.eq(self.program.ready),
                     self.busy.eq(pending | (left != 0))]
        return m


class Accelerator(wiring.Component):
    """``ctrl``: the AXI4-Lite registers (:class:`~rowstation.gen.csr.ControlRegisters`);
    ``mem``: the AXI4 manager port, ``dram_width`` data bits; ``irq``: the interrupt (level).
    ``pe_module``: see :class:`rowstation.hw.array.PEArray`."""

    def __init__(self, config, *, pe_module=None):
        if config.dram_width < WORD_WIDTH:
            self._MustUse__silence = True   # refused: never elaborated, and that is no mistake
            raise ValueError(f"the accelerator's AXI4 port needs dram_width of at least {WORD_WIDTH} "
                             f"bits (it fetches 32-bit instructions), not {config.dram_width}")
        self._config, self._pe_module = config, pe_module
        self.registers = ControlRegisters(config)
        super().__init__({"ctrl": In(AXI4LiteSignature()),
                          "mem": Out(AXI4Signature(data_width=config.dram_width,
                                                   addr_width=config.dram_addr_width)),
                          "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        c = self._config
        word_bytes = c.dram_width // 8
        m.submodules.registers = regs = RegisterFile(self.registers)
        wiring.connect(m, wiring.flipped(self.ctrl), regs.bus)
        m.submodules.port = port = AXI4Manager(c.dram_width, c.dram_addr_width)
        wiring.connect(m, port.bus, wiring.flipped(self.mem))

        # The engine: everything a failed run resets (its own domain, so the PEs, which may
        # be instances, reset too).
        reset = Signal()
        m.domains.engine = engine_domain = ClockDomain("engine", local=True)
        m.d.comb += [engine_domain.clk.eq(ClockSignal()), engine_domain.rst.eq(ResetSignal() | reset)]

        def engine(name, component):
            m.submodules[name] = DomainRenamer("engine")(component)
            return component

        core = engine("core", RowStationCore(c, pe_module=self._pe_module))
        fetchers = [engine(f"{unit}_fetcher", ProgramFetcher(c)) for unit in UNIT_NAMES]
        descriptors = engine("descriptors", ElementReader(width=c.dram_width, burst=c.dram_burst,
                                                          addr_width=c.dram_addr_width,
                                                          element_width=WORD_WIDTH))
        stats = engine("stats", ElementWriter(width=c.dram_width, burst=c.dram_burst, addr_width=c.dram_addr_width,
                                              element_width=WORD_WIDTH))
        pooler = engine("pooler", MaxPooler(c))
        readers = [core.mem_rd] + [f.memory for f in fetchers] + [descriptors.memory, pooler.memory_rd]
        arbiter = engine("arbiter", BurstArbiter(len(readers), width=c.dram_width, addr_width=c.dram_addr_width))
        for i, reader in enumerate(readers):
            wiring.connect(m, reader, arbiter.readers[i])
        wiring.connect(m, arbiter.memory, port.rd)
        for unit, fetcher in zip(UNIT_NAMES, fetchers):
            wiring.connect(m, fetcher.program, getattr(core.program, unit))

        # Writes: one writer at a time owns the port (the core's or the pooler's during a
        # layer, the counters' between layers), chosen by the sequencer.
        writers = [core.mem_wr, pooler.memory_wr, stats.memory]
        writer = Signal(range(len(writers)))
        for name in ("cmd", "data", "resp"):
            sink = getattr(port.wr, name)
            sources = [getattr(w, name) for w in writers]
            forward = name != "resp"
            for i, source in enumerate(sources):
                mine = writer == i
                if forward:
                    m.d.comb += source.ready.eq(sink.ready & mine)
                    with m.If(mine):
                        m.d.comb += [sink.valid.eq(source.valid), sink.payload.eq(source.payload)]
                else:
                    m.d.comb += [source.valid.eq(sink.valid & mine), source.payload.eq(sink.payload)]
                    with m.If(mine):
                        m.d.comb += sink.ready.eq(source.ready)

        # Counters to the registers.
        for name in COUNTERS:
            m.d.comb += getattr(regs, f"count_{name}_value").eq(getattr(core.counts, name))

        # The descriptor being run.
        desc = {name: Signal(32, name=f"desc_{name}") for name in NAMES}
        layer = Signal(16)
        received = Signal(range(DESCRIPTOR_WORDS))
        m.d.comb += [core.bases.weights.eq(desc["weights"]), core.bases.ifmap.eq(desc["ifmap"]),
                     core.bases.output.eq(desc["output"])]
        for unit, fetcher in zip(UNIT_NAMES, fetchers):
            m.d.comb += [fetcher.base.eq(desc[f"{unit}_program"]), fetcher.words.eq(desc[f"{unit}_words"])]

        def misaligned(value, size):
            return value[:(size - 1).bit_length()] != 0 if size > 1 else C(0)

        pool_names = [n for n in NAMES if n.startswith("pool_")]
        programs = [desc[f"{u}_{f}"] for u in UNIT_NAMES for f in ("program", "words")]
        window, stride, out_rows = desc["pool_window"][:8], desc["pool_window"][8:16], desc["pool_window"][16:]
        width, out_width = desc["pool_width"][:16], desc["pool_width"][16:]
        is_pool = desc["kind"] == Kind.MAXPOOL
        malformed = Mux(is_pool,
                        Cat(*(v != 0 for v in programs), desc["pool_planes"] == 0, width == 0,
                            out_width == 0, out_width > c.max_dim, window == 0, window > MAX_WINDOW,
                            stride == 0, out_rows == 0).any(),
                        (desc["kind"] != Kind.CONV) | Cat(desc[f"{u}_words"] == 0 for u in UNIT_NAMES).any()
                        | Cat(desc[n] != 0 for n in pool_names).any())
        p = pooler.params
        m.d.comb += [p.input.eq(desc["ifmap"]), p.output.eq(desc["output"]), p.planes.eq(desc["pool_planes"]),
                     p.width.eq(width), p.out_width.eq(out_width), p.window.eq(window), p.stride.eq(stride),
                     p.out_rows.eq(out_rows), p.row_step.eq(desc["pool_row_step"]),
                     p.plane_step.eq(desc["pool_plane_step"])]
        beyond = Cat(desc[n][c.dram_addr_width:] != 0 for n in ADDRESSES).any()
        list_end = regs.desc_base_addr + regs.desc_count_count * DESCRIPTOR_BYTES
        unaligned = Cat(*(misaligned(desc[f"{u}_program"], 4) for u in UNIT_NAMES),
                        *(misaligned(desc[n], word_bytes) for n in ("weights", "ifmap", "output")),
                        misaligned(desc["stats"], 8)).any()

        # Faults while a run is in progress, in priority order.
        busy, error = regs.status_busy, regs.status_error
        quiet = Signal(32)
        last_macs = Signal.like(core.counts.mac)
        bus = self.mem
        progress = Cat(bus.arvalid & bus.arready, bus.rvalid & bus.rready, bus.awvalid & bus.awready,
                       bus.wvalid & bus.wready, bus.bvalid & bus.bready,
                       core.counts.mac != last_macs).any()
        m.d.sync += [last_macs.eq(core.counts.mac), quiet.eq(Mux(progress | ~busy, 0, quiet + 1))]
        limit = regs.watchdog_cycles
        faults = [(regs.ctrl_abort, ErrorCode.ABORTED), (port.error, ErrorCode.BUS),
                  (core.error | core.unmatched, ErrorCode.PROGRAM),
                  ((limit != 0) & (quiet >= limit), ErrorCode.TIMEOUT)]
        code = Signal(4)    # the first fault's ErrorCode, NONE without one
        for condition, value in reversed(faults):
            with m.If(condition):
                m.d.comb += code.eq(value)

        m.d.comb += [regs.status_layer.eq(layer),
                     regs.status_start_ignored_set.eq(regs.ctrl_start & busy),
                     self.irq.eq(regs.irq_pending & regs.ctrl_irq_enable)]
        halves = 2 * len(COUNTERS)    # each counter as two 32-bit words, low first
        counter = Signal(range(halves + 1))

        def fail():
            with m.If(code != ErrorCode.NONE):
                m.d.sync += error.eq(code)
                m.next = "DRAIN"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(regs.ctrl_start):
                    m.d.sync += [busy.eq(1), regs.status_done.eq(0), error.eq(ErrorCode.NONE),
                                 layer.eq(0)]
                    m.d.comb += [core.clear.eq(1), port.clear.eq(1)]
                    with m.If(regs.desc_count_count == 0):
                        m.next = "FINISH"
                    with m.Elif(misaligned(regs.desc_base_addr, word_bytes)):
                        m.d.sync += error.eq(ErrorCode.ALIGNMENT)
                        m.next = "FINISH"
                    with m.Elif(list_end > 1 << c.dram_addr_width):
                        m.d.sync += error.eq(ErrorCode.ADDRESS)
                        m.next = "FINISH"
                    with m.Else():
                        m.next = "FETCH"
            with m.State("FETCH"):
                m.d.comb += [descriptors.runs.valid.eq(1),
                             descriptors.runs.payload.addr.eq(regs.desc_base_addr + layer * DESCRIPTOR_BYTES),
                             descriptors.runs.payload.count.eq(DESCRIPTOR_WORDS),
                             descriptors.runs.payload.size.eq(2)]
                with m.If(descriptors.runs.ready):
                    m.d.sync += received.eq(0)
                    m.next = "RECEIVE"
                fail()
            with m.State("RECEIVE"):
                m.d.comb += descriptors.elements.ready.eq(1)
                with m.If(descriptors.elements.valid):
                    word = descriptors.elements.payload.data[0]
                    with m.Switch(received):
                        for i, name in enumerate(NAMES):
                            with m.Case(i):
                                m.d.sync += desc[name].eq(word)
                    m.d.sync += received.eq(received + 1)
                    with m.If(received == DESCRIPTOR_WORDS - 1):
                        m.next = "CHECK"
                fail()
            with m.State("CHECK"):
                with m.If(malformed):
                    m.d.sync += error.eq(ErrorCode.DESCRIPTOR)
                    m.next = "DRAIN"
                with m.Elif(unaligned):
                    m.d.sync += error.eq(ErrorCode.ALIGNMENT)
                    m.next = "DRAIN"
                with m.Elif(beyond):
                    m.d.sync += error.eq(ErrorCode.ADDRESS)
                    m.next = "DRAIN"
                with m.Elif(is_pool):
                    m.d.comb += pooler.start.eq(1)
                    m.d.sync += writer.eq(1)
                    m.next = "POOL"
                with m.Else():
                    m.d.comb += [f.start.eq(1) for f in fetchers]
                    m.d.sync += writer.eq(0)
                    m.next = "RUN"

            def layer_done():
                with m.If(desc["stats"] != 0):
                    m.d.sync += [counter.eq(0), writer.eq(2)]
                    m.next = "STATS"
                with m.Else():
                    m.next = "NEXT"

            with m.State("RUN"):
                with m.If(core.done):
                    with m.If(Cat(f.busy for f in fetchers).any()):
                        m.d.sync += error.eq(ErrorCode.PROGRAM)   # words after a stream's END
                        m.next = "DRAIN"
                    with m.Else():
                        layer_done()
                fail()
            with m.State("POOL"):
                with m.If(pooler.done):
                    layer_done()
                fail()
            with m.State("STATS"):
                m.d.comb += [stats.runs.valid.eq(1), stats.runs.payload.addr.eq(desc["stats"]),
                             stats.runs.payload.count.eq(halves), stats.runs.payload.size.eq(2)]
                with m.If(stats.runs.ready):
                    m.next = "STATS_DATA"
                fail()
            with m.State("STATS_DATA"):
                m.d.comb += stats.elements.valid.eq(counter != halves)
                with m.Switch(counter):
                    for i, name in enumerate(COUNTERS):
                        value = getattr(core.counts, name).as_unsigned()
                        for half in range(2):
                            with m.Case(2 * i + half):
                                m.d.comb += stats.elements.payload.eq(value[32 * half:32 * half + 32])
                with m.If(stats.elements.valid & stats.elements.ready):
                    m.d.sync += counter.eq(counter + 1)
                with m.If((counter == halves) & stats.idle):
                    m.next = "NEXT"
                fail()
            with m.State("NEXT"):
                m.d.sync += layer.eq(layer + 1)
                with m.If(layer + 1 == regs.desc_count_count):
                    m.next = "FINISH"
                with m.Else():
                    m.next = "FETCH"
            with m.State("DRAIN"):
                m.d.comb += [reset.eq(1), port.drain.eq(1)]
                with m.If(port.idle):
                    m.next = "FINISH"
            with m.State("FINISH"):
                m.d.sync += [busy.eq(0), regs.status_done.eq(1)]
                m.d.comb += regs.irq_pending_set.eq(1)
                m.next = "IDLE"
        return m
