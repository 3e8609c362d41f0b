"""The controller: runs a layer's program (:mod:`rowstation.gen.isa`) without host help.

Three units run concurrently, each from its own instruction stream (``program.load``,
``program.execute``, ``program.store``) through an :class:`InstructionDecoder`:

- :class:`LoadController` moves external memory into the global buffer (``LOAD``) and writes
  constants into it (``FILL``);
- :class:`ExecuteController` keeps the pass registers (shadows committed by ``RUN`` in two
  phases), streams filters from external memory and ifmaps and psums from the global buffer
  into the networks, tagged for multicast, and writes each psum a chain top returns into the
  global buffer (:class:`PsumWriteback`);
- :class:`StoreController` moves psums from the global buffer to external memory (``STORE``),
  adding the bias and requantising on the way (:class:`PostProcessor`).

The units order their work through dependency tokens (:class:`TokenQueue`); ``END`` in every
stream is a barrier that strobes ``done``. The load unit and the filter stream read external memory
(:mod:`rowstation.hw.memory`) each through an element reader, sharing the read port through a
:class:`~rowstation.hw.memory.BurstArbiter`; the store unit writes through an element writer.
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen.isa import ARGUMENTS, FIELDS, LOAD_FIELDS, LOOPS, NETWORKS, PE_SETTINGS, POST_FIELDS, STORE_FIELDS, \
    TOKEN_CONSUMER, TOKEN_DEPTH, TOKEN_PRODUCER, UNITS, WORD_WIDTH, Opcode, Region, RegisterMap, Token
from .arbiter import or_tree
from .array import ArrayControlSignature, network_shape
from .glb import ReadPortSignature, WriteRequest
from .memory import RUNS_QUEUED, BurstArbiter, ElementReader, ElementWriter, MemoryReadSignature, \
    MemoryWriteSignature
from .noc import GINWord, GONWord
from .pe import PEConfigSignature


__all__ = ["TensorBases", "Instruction", "ProgramSignature", "InstructionDecoder", "TokenQueue",
           "AddressGenerator", "LoadController", "StoreController", "PostInput", "PostProcessor", "PsumWriteback",
           "ExecuteController", "Controller", "UNIT_NAMES"]


UNIT_NAMES = ("load", "execute", "store")


class TensorBases(data.StructLayout):
    """Byte addresses added to a program's external memory addresses, so one program runs on
    tensors anywhere: ``weights`` to the filter stream's, ``ifmap`` to ifmap LOADs', ``output``
    to psum LOADs' and STOREs' (``dram_addr_width`` bits)."""

    def __init__(self, config):
        width = config.dram_addr_width
        super().__init__({"weights": width, "ifmap": width, "output": width})


#: Tag queue depth of the global buffer's streams: covers its latency at one word per cycle.
TAG_DEPTH = 2


class Instruction(data.StructLayout):
    """A decoded instruction of ``unit``: the opcode word's fields and as many argument words
    as the unit's instructions take at most."""

    def __init__(self, unit):
        args = max(ARGUMENTS[op] for op, owner in UNITS.items() if owner == unit)
        super().__init__({**dict(FIELDS), "args": data.ArrayLayout(WORD_WIDTH, args)})


class ProgramSignature(wiring.Signature):
    """The units' instruction streams (32-bit words), as a source drives them."""

    def __init__(self):
        super().__init__({unit: Out(stream.Signature(WORD_WIDTH)) for unit in UNIT_NAMES})


class InstructionDecoder(wiring.Component):
    """``unit``'s program words in, whole instructions out, through a queue of ``depth``
    instructions so the next ones decode while the unit runs the current one. ``error`` latches
    on an opcode that is unknown or runs on another unit (the word is dropped). After an ``END``
    nothing is read until ``resume`` (the END barrier), so a layer's counters hold its own words
    only."""

    def __init__(self, unit, *, depth=2):
        self._unit, self._depth = unit, depth
        self._opcodes = tuple(op for op, owner in UNITS.items() if owner == unit) + (Opcode.END,)
        super().__init__({"program": In(stream.Signature(WORD_WIDTH)),
                          "instr": Out(stream.Signature(Instruction(unit))), "resume": In(1),
                          "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        word = self.program.payload
        layout = Instruction(self._unit)
        m.submodules.queue = queue = fifo.SyncFIFO(width=layout.size, depth=self._depth)
        current = Signal(layout)
        most = len(current.args)
        remaining = Signal(range(most + 1))
        index = Signal(range(max(2, most)))     # a bit even for one argument (no empty vector)
        full = Signal()      # ``current`` is complete and waits for the queue
        m.d.comb += [queue.w_data.eq(current), queue.w_en.eq(full),
                     self.instr.valid.eq(queue.r_rdy), self.instr.payload.eq(queue.r_data),
                     queue.r_en.eq(self.instr.ready)]
        with m.If(full & queue.w_rdy):
            m.d.sync += full.eq(0)
        with m.FSM():
            with m.State("OPCODE"):
                m.d.comb += self.program.ready.eq(~full | queue.w_rdy)
                with m.If(self.program.valid & self.program.ready):
                    shift = 0
                    for name, width in FIELDS:
                        m.d.sync += getattr(current, name).eq(word[shift:shift + width])
                        shift += width
                    with m.Switch(word[shift - len(current.opcode):shift]):
                        for opcode in self._opcodes:
                            with m.Case(opcode):
                                if ARGUMENTS[opcode]:
                                    m.d.sync += [remaining.eq(ARGUMENTS[opcode]), index.eq(0)]
                                    m.next = "ARGS"
                                else:
                                    m.d.sync += full.eq(1)
                                if opcode == Opcode.END:
                                    m.next = "END"
                        with m.Default():
                            m.d.sync += self.error.eq(1)
            with m.State("ARGS"):
                m.d.comb += self.program.ready.eq(~full)
                with m.If(self.program.valid & ~full):
                    m.d.sync += [current.args[index if most > 1 else 0].eq(word), index.eq(index + 1),
                                 remaining.eq(remaining - 1)]
                    with m.If(remaining == 1):
                        m.d.sync += full.eq(1)
                        m.next = "OPCODE"
            with m.State("END"):
                with m.If(self.resume):
                    m.next = "OPCODE"
        return m


class TokenQueue(wiring.Component):
    """A dependency token queue: a count of tokens pushed and not yet popped. ``overflow``
    latches when a push finds it full (:data:`~rowstation.gen.isa.TOKEN_DEPTH`): a malformed
    program, refused rather than counted wrong."""

    def __init__(self):
        super().__init__({"push": In(1), "pop": In(1), "available": Out(1), "overflow": Out(1)})

    def elaborate(self, platform):
        m = Module()
        count = Signal(range(TOKEN_DEPTH + 1))
        full = (count == TOKEN_DEPTH) & ~self.pop
        with m.If(self.push & full):
            m.d.sync += self.overflow.eq(1)
        with m.Else():
            m.d.sync += count.eq(count + self.push - self.pop)
        m.d.comb += self.available.eq(count != 0)
        return m


def _loop_advance(index, counts, steps):
    """Next indices, address change and "was last" of a loop nest (outermost first)."""
    last = [index[k] == counts[k] - 1 for k in range(len(index))]
    inner_done = [Cat(last[k + 1:]).all() if k + 1 < len(index) else C(1) for k in range(len(index))]
    advance = [inner_done[k] & ~last[k] for k in range(len(index))]
    wrap = [inner_done[k] & last[k] for k in range(len(index))]
    following = [Mux(advance[k], index[k] + 1, Mux(wrap[k], 0, index[k])) for k in range(len(index))]
    delta = or_tree(Mux(advance[k], steps[k].as_unsigned(), 0) for k in range(len(index)))
    return following, delta, Cat(last).all()


class AddressGenerator(wiring.Component):
    """Walks a loop nest: emits ``base + offset``, where offset gains ``steps[k]`` when level
    k advances; the level ``table_level`` selects the table entry (``entry``) whose ``base``
    the parent looks up. ``start`` restarts the walk; ``busy`` until the last address is taken.
    Steps and offsets are ``addr_width`` bits, modulo ``2 ** addr_width`` (a negative step is
    its two's complement): every address the walk emits is in range, so each is exact.
    """

    def __init__(self, *, levels, table_level, count_width, addr_width, table_depth):
        self._levels, self._table_level = levels, table_level
        super().__init__({
            "counts": In(count_width).array(levels),
            "steps": In(addr_width).array(levels),
            "start": In(1),
            "busy": Out(1),
            "entry": Out(range(table_depth)),
            "base": In(addr_width),
            "o": Out(stream.Signature(addr_width)),
        })

    def elaborate(self, platform):
        m = Module()
        index = [Signal.like(self.counts[k], name=f"index_{k}") for k in range(self._levels)]
        offset = Signal.like(self.base)
        following, delta, finished = _loop_advance(index, self.counts, self.steps)
        m.d.comb += [self.o.valid.eq(self.busy), self.o.payload.eq(self.base + offset),
                     self.entry.eq(index[self._table_level])]
        with m.If(self.start):
            m.d.sync += [self.busy.eq(1), offset.eq(0)] + [i.eq(0) for i in index]
        with m.Elif(self.o.valid & self.o.ready):
            with m.If(finished):
                m.d.sync += self.busy.eq(0)
            with m.Else():
                m.d.sync += [offset.eq(offset + delta)] + [i.eq(f) for i, f in zip(index, following)]
        return m


def _unit_members(config, unit):
    """The ports every unit shares: its instructions, tokens, and the END barrier."""
    return {
        "instr": In(stream.Signature(Instruction(unit))),
        "tokens": In(len(Token)),   # per token queue: a token is available
        "pop": Out(len(Token)),     # strobes: tokens taken as an instruction starts
        "push": Out(len(Token)),    # strobes: tokens given as an instruction finishes
        "at_end": Out(1),           # the unit is idle at END
        "release": In(1),           # every unit is at END: take it
        "bases": In(TensorBases(config)),
    }


def _tokens_ready(unit):
    """The tokens the unit's next instruction pops are all there."""
    return (unit.instr.payload.pop & ~unit.tokens) == 0


def _size(config, width):
    """The run size (log2 bytes) of elements of ``width`` bits in external memory."""
    return (config.memory_width(width) // 8).bit_length() - 1


class LoadController(wiring.Component):
    """``LOAD region, pad, rows; glb, dram, count, stride``: ``rows`` runs of ``count`` elements
    from the external memory byte addresses ``dram``, ``dram + stride``, ... into the global
    buffer, each with ``pad`` zeros before and after it (from ``glb``, the runs one after the
    other); ``FILL region; glb, count, lo, hi``: ``count`` copies of a constant.

    Two stages, so the memory latency of one run overlaps the next: the issue stage takes an
    instruction (once its popped tokens are there) and, a row a cycle, queues a write
    descriptor for each run and hands the run to the :class:`~rowstation.hw.memory.ElementReader`;
    the write stage takes the descriptors in order, writes each run's elements (or the
    constant) into the buffer, and pushes the instruction's tokens when its last write is done."""

    #: Write descriptors queued between the stages.
    DEPTH = 4

    def __init__(self, config):
        c = config
        self._config = c
        ifmap, psum = signed(c.ifmap_width), signed(c.glb_psum_bits)
        super().__init__({
            **_unit_members(c, "load"),
            "mem_rd": Out(MemoryReadSignature(c.dram_width, c.dram_addr_width)),
            "ifmap_wr": Out(stream.Signature(WriteRequest(c.glb_addr_width(c.ifmap_width), ifmap))),
            "psum_ld": Out(stream.Signature(WriteRequest(c.glb_addr_width(c.glb_psum_bits), psum))),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        instr = self.instr.payload
        widths = dict(LOAD_FIELDS)
        pad_width, rows_width = widths["pad"], widths["rows"]
        # Buffer addresses and counts as wide as the larger region's; FILL values as the widest element.
        glb = max(c.glb_addr_width(c.ifmap_width), c.glb_addr_width(c.glb_psum_bits))
        descriptor = data.StructLayout({"load": 1, "region": 1, "glb": glb, "count": glb + 1,
                                        "pad": pad_width, "value": max(c.ifmap_width, c.glb_psum_bits),
                                        "push": len(Token)})
        m.submodules.writes = writes = fifo.SyncFIFOBuffered(width=descriptor.size, depth=self.DEPTH)
        m.submodules.reader = reader = ElementReader(width=c.dram_width, burst=c.dram_burst,
                                                     addr_width=c.dram_addr_width,
                                                     element_width=c.memory_width(c.psum_width))
        wiring.connect(m, reader.memory, wiring.flipped(self.mem_rd))

        # Issue stage: a run (or a FILL) a cycle; the popped tokens are taken with the first
        # row, the pushed ones go with the last row's descriptor.
        is_end, is_load = instr.opcode == Opcode.END, instr.opcode == Opcode.LOAD
        region = instr.operand[0]
        pad = Mux(is_load, instr.operand[1:1 + pad_width], 0)
        rows = instr.operand[1 + pad_width:1 + pad_width + rows_width]
        row = Signal(rows_width)
        dram_offset, glb_offset = Signal(c.dram_addr_width), Signal(glb)
        first, last = row == 0, ~is_load | (row + 1 >= rows)
        start = Signal()
        queued = Signal(descriptor)
        issuable = self.instr.valid & ~is_end & writes.w_rdy & (~first | _tokens_ready(self))
        m.d.comb += [
            start.eq(issuable & (~is_load | reader.runs.ready)),
            self.pop.eq(Mux(start & first, instr.pop, 0)),
            self.instr.ready.eq(start & last),
            queued.load.eq(is_load), queued.region.eq(region), queued.glb.eq(instr.args[0] + glb_offset),
            queued.count.eq(Mux(is_load, instr.args[2] + 2 * pad, instr.args[1])), queued.pad.eq(pad),
            queued.value.eq(Cat(instr.args[2], instr.args[3])), queued.push.eq(Mux(last, instr.push, 0)),
            writes.w_data.eq(queued), writes.w_en.eq(start),
            reader.runs.valid.eq(issuable & is_load),
            reader.runs.payload.addr.eq(instr.args[1] + dram_offset
                                        + Mux(region == Region.IFMAP, self.bases.ifmap, self.bases.output)),
            reader.runs.payload.count.eq(instr.args[2]),
            reader.runs.payload.size.eq(Mux(region == Region.IFMAP, _size(c, c.ifmap_width),
                                            _size(c, c.psum_width))),
        ]
        with m.If(start & last):
            m.d.sync += [row.eq(0), dram_offset.eq(0), glb_offset.eq(0)]
        with m.Elif(start):
            m.d.sync += [row.eq(row + 1), dram_offset.eq(dram_offset + instr.args[3]),
                         glb_offset.eq(glb_offset + queued.count)]

        # Write stage: a descriptor leaves with its last write (the next one's first write
        # follows in the next cycle), its tokens pushed then.
        head = Signal(descriptor)
        moved = Signal.like(head.count)
        written = Signal()
        m.d.comb += head.eq(writes.r_data)
        run = head.load & (moved >= head.pad) & (moved < head.count - head.pad)   # else zeros or a FILL
        for region, port in ((Region.IFMAP, self.ifmap_wr), (Region.PSUM, self.psum_ld)):
            with m.If(writes.r_rdy & (moved != head.count) & (head.region == region)):
                m.d.comb += [
                    port.valid.eq(Mux(run, reader.elements.valid, 1)),
                    port.payload.addr.eq(head.glb + moved),
                    port.payload.data.eq(Mux(run, reader.elements.payload.data[0],
                                             Mux(head.load, 0, head.value))[:len(port.payload.data)]),
                    written.eq(port.valid & port.ready),
                ]
                with m.If(run):
                    m.d.comb += reader.elements.ready.eq(port.ready)
        with m.If(writes.r_rdy & ((moved == head.count) | written & (moved + 1 == head.count))):
            m.d.sync += moved.eq(0)
            m.d.comb += [writes.r_en.eq(1), self.push.eq(head.push)]
        with m.Elif(written):
            m.d.sync += moved.eq(moved + 1)

        m.d.comb += self.at_end.eq(self.instr.valid & is_end & (writes.w_level == 0))
        with m.If(self.at_end & self.release):
            m.d.comb += self.instr.ready.eq(1)
        return m


class StoreController(wiring.Component):
    """``STORE post, row; glb, dram, count, glb_step, stride, bias_lo, bias_hi``: ``count``
    psums from the global buffer through the :class:`PostProcessor` to external memory (one run,
    or rows of ``row``: :data:`~rowstation.gen.isa.STORE_FIELDS`), packed at the activation's
    memory width when requantised, else the psum's. A STORE ends (its tokens are pushed) when
    its last psum has left the buffer; the unit is at ``END`` once every write's response is
    back."""

    def __init__(self, config):
        c = config
        self._config = c
        super().__init__({
            **_unit_members(c, "store"),
            "psum_st": Out(ReadPortSignature(c.glb_addr_width(c.glb_psum_bits), signed(c.glb_psum_bits))),
            "mem_wr": Out(MemoryWriteSignature(c.dram_width, c.dram_addr_width)),
            "error": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        instr = self.instr.payload
        m.submodules.writer = writer = ElementWriter(width=c.dram_width, burst=c.dram_burst,
                                                     addr_width=c.dram_addr_width,
                                                     element_width=c.memory_width(c.psum_width))
        m.submodules.post = post = PostProcessor(c)
        wiring.connect(m, writer.memory, wiring.flipped(self.mem_wr))
        executing, queued = Signal(), Signal()   # a STORE runs; its runs are with the writer
        glb_width = c.glb_addr_width(c.glb_psum_bits)
        issued, moved = Signal(glb_width + 1), Signal(glb_width + 1)   # count: at most the buffer's psums
        glb, mem, count, step = instr.args[0][:glb_width], instr.args[1], instr.args[2], instr.args[3][:glb_width]
        stride = instr.args[4][:c.dram_addr_width]
        row = instr.operand[sum(width for _, width in POST_FIELDS):][:dict(STORE_FIELDS)["row"]]
        row_base, in_row = Signal(glb_width), Signal(glb_width + 1)     # the read's row and place in it
        rows_apart = (row != 0) & (stride != 0)     # a writer run per row
        run_addr, unqueued = Signal(c.dram_addr_width), Signal(glb_width + 1)   # the next run, psums not in one
        is_end = instr.opcode == Opcode.END
        start = self.instr.valid & ~is_end & ~executing & _tokens_ready(self)
        finished = executing & queued & (moved == count)
        data, at = self.psum_st.data, 0
        for name, width in POST_FIELDS:
            m.d.comb += getattr(post.i.payload, name).eq(instr.operand[at:at + width])
            at += width
        m.d.comb += [
            self.pop.eq(Mux(start, instr.pop, 0)),
            post.i.valid.eq(executing & data.valid), data.ready.eq(executing & post.i.ready),
            post.i.payload.psum.eq(data.payload),
            post.i.payload.bias.eq(Cat(instr.args[5], instr.args[6])),
            writer.elements.valid.eq(post.o.valid), writer.elements.payload.eq(post.o.payload),
            post.o.ready.eq(writer.elements.ready),
            writer.runs.valid.eq(executing & ~queued),
            writer.runs.payload.addr.eq(run_addr + self.bases.output),
            writer.runs.payload.count.eq(Mux(rows_apart & (unqueued > row), row, unqueued)),
            writer.runs.payload.size.eq(Mux(post.i.payload.requantize, _size(c, c.ifmap_width),
                                            _size(c, c.psum_width))),
            self.psum_st.addr.valid.eq(executing & (issued != count)),
            self.psum_st.addr.payload.eq(row_base + in_row),
            self.at_end.eq(self.instr.valid & is_end & writer.idle),
            self.error.eq(writer.error),
        ]
        # The writer takes runs ahead, so a value still in the post-processing belongs to the
        # run before the next STORE's, and END waits for the writer to be idle.
        with m.If(start):
            m.d.sync += [executing.eq(1), queued.eq(0), issued.eq(0), moved.eq(0), row_base.eq(glb),
                         in_row.eq(0), run_addr.eq(mem), unqueued.eq(count)]
        with m.If(writer.runs.valid & writer.runs.ready):
            with m.If(rows_apart & (unqueued > row)):     # a short last row ends the STORE too
                m.d.sync += [run_addr.eq(run_addr + stride), unqueued.eq(unqueued - row)]
            with m.Else():
                m.d.sync += queued.eq(1)
        with m.If(self.psum_st.addr.valid & self.psum_st.addr.ready):
            m.d.sync += issued.eq(issued + 1)
            with m.If((row != 0) & (in_row == row - 1)):
                m.d.sync += [row_base.eq(row_base + step), in_row.eq(0)]
            with m.Else():
                m.d.sync += in_row.eq(in_row + 1)
        with m.If(data.valid & data.ready):
            m.d.sync += moved.eq(moved + 1)     # out of the buffer: the next STORE may start
        with m.If(finished):
            m.d.sync += executing.eq(0)
            m.d.comb += [self.push.eq(instr.push), self.instr.ready.eq(1)]
        with m.If(self.at_end & self.release):
            m.d.comb += self.instr.ready.eq(1)
        return m


class PostInput(data.StructLayout):
    """A psum leaving the global buffer with its STORE's bias and :data:`POST_FIELDS`."""

    def __init__(self, config):
        super().__init__({"psum": signed(config.psum_width), "bias": signed(config.psum_width + 1),
                          **{name: width for name, width in POST_FIELDS}})


class PostProcessor(wiring.Component):
    """An output on its way out: ``psum + bias``, exact, or with ``requantize`` rounded right
    by ``shift`` (round half up), clamped at zero if ``relu``, and saturated to the activation
    width (the golden model's :func:`~rowstation.sim.golden.requantize`). Two register stages
    (the sum; the result) at one value per cycle, so neither the global buffer's read before
    it nor the memory writer's packing after it shares a clock period with its arithmetic."""

    def __init__(self, config):
        c = config
        self._config = c
        super().__init__({
            "i": In(stream.Signature(PostInput(c))),
            "o": Out(stream.Signature(signed(c.psum_width))),
        })

    def elaborate(self, platform):
        m = Module()
        c = self._config
        i = self.i.payload
        total = Signal(signed(c.psum_width + 1))
        shift, relu, requantize = Signal(len(i.shift)), Signal(), Signal()
        summed = Signal()                   # the first stage holds a value
        take_result = ~self.o.valid | self.o.ready
        take_sum = ~summed | take_result
        m.d.comb += self.i.ready.eq(take_sum)
        with m.If(take_sum):
            m.d.sync += [summed.eq(self.i.valid), total.eq(i.psum + i.bias),
                         shift.eq(i.shift), relu.eq(i.relu), requantize.eq(i.requantize)]

        rounded = Signal(signed(c.psum_width + 1))
        half = Signal.like(shift)   # the bit that rounds: the highest one shifted out
        m.d.comb += [half.eq(shift - 1),
                     rounded.eq(Mux(shift == 0, total, (total >> shift) + total.bit_select(half, 1)))]
        lo, hi = -(1 << (c.ifmap_width - 1)), (1 << (c.ifmap_width - 1)) - 1
        floor = Mux(relu, 0, lo)
        result = Signal(signed(c.psum_width))
        with m.If(~requantize):
            m.d.comb += result.eq(total)
        with m.Elif(rounded < floor):
            m.d.comb += result.eq(floor)
        with m.Elif(rounded > hi):
            m.d.comb += result.eq(hi)
        with m.Else():
            m.d.comb += result.eq(rounded)
        with m.If(take_result):
            m.d.sync += [self.o.valid.eq(summed), self.o.payload.eq(result)]
        return m


class PsumWriteback(wiring.Component):
    """Writes each psum a chain top returns (``opsum``, tagged with its PE) to the global
    buffer: per source PE, the store loop nest walked from that PE's ``base``, so psums of
    different chain tops may arrive interleaved in any order. ``start`` begins a pass;
    ``stored`` counts its psums."""

    def __init__(self, config, *, count_width, levels):
        c = config
        self._config, self._count_width, self._levels = c, count_width, levels
        addr = c.glb_addr_width(c.glb_psum_bits)
        psum = signed(c.psum_width)
        super().__init__({
            "opsum": In(stream.Signature(GONWord(psum, c.array_rows, c.array_cols))),
            "psum_wr": Out(stream.Signature(WriteRequest(addr, signed(c.glb_psum_bits)))),
            "counts": In(count_width).array(levels),
            "steps": In(addr).array(levels),     # modulo 2 ** addr, as AddressGenerator's
            "source": Out(range(c.pe_count)),   # the PE whose ``base`` the parent looks up
            "base": In(addr),
            "start": In(1),
            "stored": Out(addr + 1),           # psums a pass stores: at most the buffer's
        })

    def elaborate(self, platform):
        m = Module()
        n = self._config.pe_count
        state = Memory(shape=data.StructLayout({
            "offset": len(self.base), "index": data.ArrayLayout(self._count_width, self._levels)}), depth=n, init=[])
        m.submodules.state = state
        state_rd, state_wr = state.read_port(domain="comb"), state.write_port()
        started = Signal(n)  # sources that returned a psum in this pass
        source = self.opsum.payload.pe
        m.d.comb += [self.source.eq(source), state_rd.addr.eq(source), state_wr.addr.eq(source)]
        current, fresh = state_rd.data, started.bit_select(source, 1)
        index = [Mux(fresh, current.index[k], 0) for k in range(self._levels)]
        offset = Mux(fresh, current.offset, 0)
        following, delta, _ = _loop_advance(index, self.counts, self.steps)
        take = self.opsum.valid & self.psum_wr.ready
        m.d.comb += [
            self.psum_wr.valid.eq(self.opsum.valid),
            self.psum_wr.payload.addr.eq(self.base + offset),
            self.psum_wr.payload.data.eq(self.opsum.payload.data),
            self.opsum.ready.eq(self.psum_wr.ready),
            state_wr.en.eq(take),
            state_wr.data.offset.eq(offset + delta),
        ]
        m.d.comb += [state_wr.data.index[k].eq(following[k]) for k in range(self._levels)]
        with m.If(self.start):
            m.d.sync += [started.eq(0), self.stored.eq(0)]
        with m.Elif(take):
            m.d.sync += [started.eq(started | (1 << source)), self.stored.eq(self.stored + 1)]
        return m


def _network_ports(config):
    """The execute unit's network ports: the filter network; per ifmap network lane the
    global buffer reads (``ifmap_rd``) into the ifmap network (``ifmap``); per psum network
    lane the global buffer reads (``psum_rd``) into the psum network (``psum``), the psums
    from the output network (``opsum``) and their global buffer writes (``psum_wr``)."""
    c = config
    addr, stored = c.glb_addr_width(c.glb_psum_bits), signed(c.glb_psum_bits)
    lanes = c.psum_noc_lanes
    members = {
        "ifmap_rd": Out(ReadPortSignature(c.glb_addr_width(c.ifmap_width), signed(c.ifmap_width))).array(
            c.ifmap_noc_lanes),
        "psum_rd": Out(ReadPortSignature(addr, stored)).array(lanes),
        "psum_wr": Out(stream.Signature(WriteRequest(addr, stored))).array(lanes),
        "opsum": In(stream.Signature(GONWord(signed(c.psum_width), c.array_rows, c.array_cols))).array(lanes),
    }
    for net in NETWORKS:
        word = Out(stream.Signature(GINWord(network_shape(c, net), c.row_id_width, c.col_id_width)))
        members[net] = word.array(c.network_lanes(net)) if net != "filt" else word
    return members


class ExecuteController(wiring.Component):
    """Pass registers and passes. ``WRITE`` sets a shadow register; ``RUN`` commits the filter
    phase's shadows when the filter stream is free and starts it, then (once its popped
    tokens are there and the previous pass has finished) commits the data phase's and starts
    the ifmap and psum streams; the pass's tokens are pushed when its last psum is in the
    global buffer. ``error`` latches on a WRITE to an unknown register."""

    def __init__(self, config):
        c = config
        self._config = c
        self.regmap = RegisterMap(c)
        self.count_width = max(c.dim_width, c.pe_count.bit_length(), c.filter_spad_depth.bit_length(),
                               c.ifmap_spad_depth.bit_length(), c.psum_spad_depth.bit_length())
        self.addr_widths = {"filt": c.dram_addr_width, "ifmap": c.glb_addr_width(c.ifmap_width),
                            "psum": c.glb_addr_width(c.glb_psum_bits)}
        members = {
            **_unit_members(c, "execute"),
            "array": Out(ArrayControlSignature(c)),
            "mem_rd": Out(MemoryReadSignature(c.dram_width, c.dram_addr_width)),
            **_network_ports(c),
            "runs": Out(1),    # strobes as each pass starts
            "error": Out(1),
        }
        super().__init__(members)

    def _register(self, name):
        """(shape, reset value) of a plain register."""
        c = self._config
        if name.startswith("cfg_"):
            return PEConfigSignature(c).members[name[4:]].shape, 0
        if name.endswith("_row_ids"):
            return unsigned(c.row_id_width), 0
        if name.endswith("_col_ids"):
            return unsigned(c.col_id_width), c.unused_col_id   # receive nothing
        if name == "chain":
            return unsigned(3), 3                               # chains open, filters released
        if name.endswith("_count") or name in ("filt_entries", "filt_words"):
            return unsigned(self.count_width), 0
        if name.endswith("_step"):      # modulo the address width (AddressGenerator)
            return unsigned(self.addr_widths["psum" if name == "store_step" else name[:-len("_step")]]), 0
        if name == "psum_zero":
            return unsigned(1), 0
        return unsigned(self.addr_widths["psum"] + 1), 0        # store_total: as PsumWriteback.stored

    def _table_width(self, name):
        c = self._config
        if name.endswith("_tag"):
            return c.row_id_width + c.col_id_width
        if name == "store_base":
            return self.addr_widths["psum"]
        return self.addr_widths[name[:-len("_base")]]

    def elaborate(self, platform):
        m = Module()
        c, regmap = self._config, self.regmap
        rows, cols = c.array_rows, c.array_cols
        instr = self.instr.payload
        write = Signal()                       # a WRITE executes this cycle
        commit = {phase: Signal(name=f"commit_{phase}") for phase in ("filter", "data")}
        address, value = instr.operand, instr.args[0]

        # Registers: shadows written by WRITE, copied to the active registers at their phase's
        # commit; tables double-buffered (written in one bank while the pass reads the other).
        active, shadows, tables, known = {}, {}, {}, []
        for block in regmap.blocks.values():
            hit = Signal(name=f"hit_{block.name}")
            index = Signal(range(block.count), name=f"index_{block.name}") if block.count > 1 else C(0)
            if block.count == 1:
                m.d.comb += hit.eq(address == block.address)
            else:
                above = (address >= block.address) if block.address else C(1)
                m.d.comb += [hit.eq(above & (address < block.address + block.count)),
                             index.eq(address - block.address)]
            known.append(hit)
            if block.table:
                readers = {"ifmap_base": c.ifmap_noc_lanes, "ifmap_tag": c.ifmap_noc_lanes,
                           "psum_base": c.psum_noc_lanes, "psum_tag": c.psum_noc_lanes,
                           "store_base": c.psum_noc_lanes}.get(block.name, 1)
                tables[block.name] = self._table(m, block, write & hit, index, value, commit[block.phase],
                                                 readers)
                continue
            shape, init = self._register(block.name)
            registers = []
            for i in range(block.count):
                shadow = Signal(shape, init=init, name=f"{block.name}_{i}_shadow")
                shadows[block.name, i] = shadow
                current = Signal(shape, init=init, name=f"{block.name}_{i}")
                with m.If(write & hit & (index == i)):
                    m.d.sync += shadow.eq(value)
                with m.If(commit[block.phase]):
                    m.d.sync += current.eq(shadow)
                registers.append(current)
            active[block.name] = registers

        array = self.array
        for name in PE_SETTINGS:
            m.d.comb += getattr(array.cfg, name).eq(active[f"cfg_{name}"][0])
        for net in NETWORKS:
            for r in range(rows):
                m.d.comb += getattr(array, f"{net}_row_ids")[r].eq(active[f"{net}_row_ids"][r])
                for col in range(cols):
                    m.d.comb += getattr(array, f"{net}_col_ids")[r][col].eq(
                        active[f"{net}_col_ids"][r * cols + col])
        for r in range(rows):
            for col in range(cols):
                chain = active["chain"][r * cols + col]
                m.d.comb += [array.chain_bottom[r][col].eq(chain[0]), array.chain_top[r][col].eq(chain[1]),
                             array.keep_filters[r][col].eq(chain[2])]
        m.d.comb += array.psum_zero.eq(active["psum_zero"][0])

        # The filter stream: per table entry, a run of weights from external memory, tagged,
        # filter_noc_width weights to a transfer (the compiler aligns each run so only its
        # last transfer is short).
        k = c.filter_noc_width
        m.submodules.filt_reader = reader = ElementReader(width=c.dram_width, burst=c.dram_burst,
                                                          addr_width=c.dram_addr_width,
                                                          element_width=c.memory_width(c.weight_width),
                                                          lanes=k)
        wiring.connect(m, reader.memory, wiring.flipped(self.mem_rd))
        m.submodules.filt_tags = filt_tags = fifo.SyncFIFO(width=c.row_id_width + c.col_id_width,
                                                           depth=RUNS_QUEUED)
        entry, walking = Signal(range(c.pe_count + 1)), Signal()
        entries, words = active["filt_entries"][0], active["filt_words"][0]
        (bases,), (tags,) = tables["filt_base"], tables["filt_tag"]
        m.d.comb += [bases(entry), tags(entry),
                     reader.runs.valid.eq(walking & filt_tags.w_rdy),
                     reader.runs.payload.addr.eq(bases.data + self.bases.weights),
                     reader.runs.payload.count.eq(words),
                     reader.runs.payload.size.eq(_size(c, c.weight_width)),
                     filt_tags.w_data.eq(tags.data), filt_tags.w_en.eq(reader.runs.valid & reader.runs.ready)]
        with m.If(commit["filter"]):    # a pass whose PEs all keep their filters streams none
            m.d.sync += [entry.eq(0), walking.eq(shadows["filt_entries", 0] != 0)]
        with m.Elif(reader.runs.valid & reader.runs.ready):
            m.d.sync += entry.eq(entry + 1)
            with m.If(entry == entries - 1):
                m.d.sync += walking.eq(0)
        out, group = self.filt, reader.elements.payload
        last = group.last
        m.d.comb += [out.valid.eq(reader.elements.valid & filt_tags.r_rdy),
                     out.payload.row.eq(filt_tags.r_data[:c.row_id_width]),
                     out.payload.col.eq(filt_tags.r_data[c.row_id_width:]),
                     out.payload.data.count.eq(group.count), out.payload.data.last.eq(last),
                     reader.elements.ready.eq(out.ready & filt_tags.r_rdy)]
        m.d.comb += [out.payload.data.data[j].eq(group.data[j][:c.weight_width]) for j in range(k)]
        with m.If(out.valid & out.ready):
            m.d.comb += filt_tags.r_en.eq(last)
        idle = {"filt": ~walking & ~filt_tags.r_rdy}

        # The global buffer's streams: address generator -> source (tag queued) -> tagged
        # word into the network; the ifmap and psum streams once per lane of their network,
        # each walking its loop registers and its part of the table.
        streams = [(net, lane, getattr(self, f"{net}_rd")[lane], getattr(self, net)[lane])
                   for net in ("ifmap", "psum") for lane in range(c.network_lanes(net))]
        busy = {"ifmap": [], "psum": []}
        for net, lane, port, out in streams:
            levels = LOOPS[net]
            name = f"{net}_{lane}"
            first, first_entry = regmap.lane_base(net, lane)
            ag = AddressGenerator(levels=len(levels), table_level=levels.index("table"),
                                  count_width=self.count_width, addr_width=self.addr_widths[net],
                                  table_depth=regmap.lane_entries(net))
            m.submodules[f"{name}_ag"] = ag
            m.submodules[f"{name}_tags"] = queue = fifo.SyncFIFO(width=c.row_id_width + c.col_id_width,
                                                                  depth=TAG_DEPTH)
            bases, tags = tables[f"{net}_base"][lane], tables[f"{net}_tag"][lane]
            entry = ag.entry + first_entry if first_entry else ag.entry
            # A first fold's psum stream does not run (the chain bottoms take zeros), nor one
            # with no table entries (a lane with no chain bottoms).
            skip = (shadows[f"{net}_count", first + levels.index("table")] == 0)
            if net == "psum":
                skip |= shadows["psum_zero", 0]
            m.d.comb += [bases(entry), tags(entry), ag.base.eq(bases.data),
                         ag.start.eq(commit["data"] & ~skip)]
            m.d.comb += [ag.counts[k].eq(active[f"{net}_count"][first + k]) for k in range(len(levels))]
            m.d.comb += [ag.steps[k].eq(active[f"{net}_step"][first + k]) for k in range(len(levels))]
            data = port.data
            issue = ag.o.valid & queue.w_rdy
            deliver = data.valid & queue.r_rdy
            element = out.payload.data
            m.d.comb += [
                port.addr.valid.eq(issue), port.addr.payload.eq(ag.o.payload),
                data.ready.eq(out.ready & queue.r_rdy),
                ag.o.ready.eq(queue.w_rdy & port.addr.ready),
                queue.w_data.eq(tags.data), queue.w_en.eq(issue & port.addr.ready),
                out.valid.eq(deliver),
                out.payload.row.eq(queue.r_data[:c.row_id_width]),
                out.payload.col.eq(queue.r_data[c.row_id_width:]),
                element.eq(data.payload),   # a stored psum sign-extends to the network's width
                queue.r_en.eq(deliver & out.ready),
            ]
            busy[net].append(ag.busy | queue.r_rdy)   # words not yet delivered
        idle.update({net: ~Cat(flags).any() for net, flags in busy.items()})

        # Psums back from each lane of the output network, written where their chain top's
        # store loop is.
        stored = []
        for lane in range(c.psum_noc_lanes):
            writeback = PsumWriteback(c, count_width=self.count_width, levels=len(LOOPS["store"]))
            m.submodules[f"writeback_{lane}"] = writeback
            wiring.connect(m, wiring.flipped(self.opsum[lane]), writeback.opsum)
            wiring.connect(m, writeback.psum_wr, wiring.flipped(self.psum_wr[lane]))
            store_bases = tables["store_base"][lane]
            m.d.comb += [store_bases(writeback.source), writeback.base.eq(store_bases.data),
                         writeback.start.eq(commit["data"])]
            m.d.comb += [writeback.counts[k].eq(active["store_count"][k]) for k in range(len(LOOPS["store"]))]
            m.d.comb += [writeback.steps[k].eq(active["store_step"][k]) for k in range(len(LOOPS["store"]))]
            stored.append(writeback.stored)

        # Passes: a pass runs from its data commit until its last psum is stored; then the
        # tokens its RUN pushes are given.
        running, pending = Signal(), Signal(len(Token))
        complete = running & idle["ifmap"] & idle["psum"] & (sum(stored) == active["store_total"][0])
        with m.If(complete):
            m.d.sync += running.eq(0)
        m.d.comb += self.push.eq(Mux(complete, pending, 0))
        is_end = instr.opcode == Opcode.END
        with m.FSM():
            with m.State("DECODE"):
                with m.If(self.instr.valid & (instr.opcode == Opcode.WRITE)):
                    m.d.comb += [write.eq(1), self.instr.ready.eq(1)]
                    with m.If(~Cat(known).any()):
                        m.d.sync += self.error.eq(1)
                with m.If(self.instr.valid & (instr.opcode == Opcode.RUN)):
                    m.next = "FILTER"
            with m.State("FILTER"):
                with m.If(idle["filt"]):
                    m.d.comb += commit["filter"].eq(1)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(~running & _tokens_ready(self)):
                    m.d.comb += [commit["data"].eq(1), self.pop.eq(instr.pop), self.instr.ready.eq(1)]
                    m.d.sync += [running.eq(1), pending.eq(instr.push)]
                    m.next = "DECODE"
        m.d.comb += [
            self.at_end.eq(self.instr.valid & is_end & ~running & idle["filt"]),
            self.runs.eq(commit["data"]),
        ]
        with m.If(self.at_end & self.release):
            m.d.comb += self.instr.ready.eq(1)
        return m

    def _table(self, m, block, write, index, value, commit, readers):
        """A double-buffered register table; returns ``readers`` readers: call one with the
        entry index (a comb assignment), then read its ``.data``."""
        width = self._table_width(block.name)
        memory = Memory(shape=width, depth=2 * block.count, init=[])
        m.submodules[f"{block.name}_table"] = memory
        bank = Signal(name=f"{block.name}_bank")   # the bank the pass reads
        port = memory.write_port()
        m.d.comb += [port.addr.eq(Mux(bank, index, index + block.count)), port.data.eq(value),
                     port.en.eq(write)]
        with m.If(commit):
            m.d.sync += bank.eq(~bank)
        return [_TableReader(memory.read_port(domain="comb"), bank, block.count) for _ in range(readers)]


class _TableReader:
    def __init__(self, port, bank, count):
        self.port, self.bank, self.count, self.data = port, bank, count, port.data

    def __call__(self, entry):
        return self.port.addr.eq(Mux(self.bank, entry + self.count, entry))


class Controller(wiring.Component):
    """The three units with their decoders, token queues and the END barrier; see the module
    documentation. ``error`` latches on a malformed program (an unknown or misplaced opcode, an
    unknown register, a token queue overflowing) or a write response that is not OKAY."""

    def __init__(self, config):
        c = config
        self._config = c
        ifmap, psum = signed(c.ifmap_width), signed(c.glb_psum_bits)
        ifmap_addr, psum_addr = c.glb_addr_width(c.ifmap_width), c.glb_addr_width(c.glb_psum_bits)
        members = {
            "program": In(ProgramSignature()),
            "bases": In(TensorBases(config)),
            "done": Out(1),
            "error": Out(1),
            "runs": Out(1),
            "mem_rd": Out(MemoryReadSignature(c.dram_width, c.dram_addr_width)),
            "mem_wr": Out(MemoryWriteSignature(c.dram_width, c.dram_addr_width)),
            "psum_st": Out(ReadPortSignature(psum_addr, psum)),
            "ifmap_wr": Out(stream.Signature(WriteRequest(ifmap_addr, ifmap))),
            "psum_ld": Out(stream.Signature(WriteRequest(psum_addr, psum))),
            "array": Out(ArrayControlSignature(c)),
            **_network_ports(c),
        }
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        c = self._config
        units = {"load": LoadController(c), "execute": ExecuteController(c), "store": StoreController(c)}
        errors = []
        for name, unit in units.items():
            m.submodules[name] = unit
            decoder = InstructionDecoder(name)
            m.submodules[f"{name}_decoder"] = decoder
            wiring.connect(m, wiring.flipped(getattr(self.program, name)), decoder.program)
            wiring.connect(m, decoder.instr, unit.instr)
            m.d.comb += [decoder.resume.eq(unit.release), unit.bases.eq(self.bases)]
            errors.append(decoder.error)
        load, execute, store = units["load"], units["execute"], units["store"]
        errors += [execute.error, store.error]

        for token in Token:
            m.submodules[f"tokens_{token.name.lower()}"] = queue = TokenQueue()
            producer, consumer = units[TOKEN_PRODUCER[token]], units[TOKEN_CONSUMER[token]]
            m.d.comb += [queue.push.eq(producer.push[token]), queue.pop.eq(consumer.pop[token]),
                         consumer.tokens[token].eq(queue.available)]
            errors.append(queue.overflow)

        barrier = Cat(unit.at_end for unit in units.values()).all()
        m.d.comb += [unit.release.eq(barrier) for unit in units.values()]
        m.d.comb += [self.done.eq(barrier), self.error.eq(Cat(errors).any()),
                     self.runs.eq(execute.runs)]

        m.submodules.mem_rd_arbiter = arbiter = BurstArbiter(2, width=c.dram_width, addr_width=c.dram_addr_width)
        wiring.connect(m, execute.mem_rd, arbiter.readers[0])
        wiring.connect(m, load.mem_rd, arbiter.readers[1])
        wiring.connect(m, arbiter.memory, wiring.flipped(self.mem_rd))
        wiring.connect(m, store.mem_wr, wiring.flipped(self.mem_wr))
        wiring.connect(m, store.psum_st, wiring.flipped(self.psum_st))
        wiring.connect(m, load.ifmap_wr, wiring.flipped(self.ifmap_wr))
        wiring.connect(m, load.psum_ld, wiring.flipped(self.psum_ld))
        wiring.connect(m, execute.array, wiring.flipped(self.array))
        for name in _network_ports(c):
            for theirs, ours in _lanes_of(getattr(execute, name), getattr(self, name)):
                wiring.connect(m, theirs, wiring.flipped(ours))
        return m


def _lanes_of(a, b):
    """Pairs of the interfaces ``a`` and ``b``, lane by lane if they are arrays of lanes."""
    return zip(a, b) if isinstance(a, list) else [(a, b)]
