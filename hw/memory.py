"""The external memory port: byte addresses, ``dram_width``-bit words, bursts.

Tensors lie in external memory packed at their element's memory width (8, 16, 32 or 64 bits,
:meth:`~rowstation.gen.config.AcceleratorConfig.memory_width`), so a word carries several
elements. The core moves *runs*, ``count`` consecutive elements from a byte address, and
splits them into bursts of whole words: a burst never crosses a multiple of ``dram_burst``
words (so never a 4 KB page, as AXI4 requires). The port is three or two streams, as an AXI4
master adapter wraps them:

- reads (:class:`MemoryReadSignature`): burst commands out (``cmd``), the words back in order
  (``data``), several bursts in flight, any latency;
- writes (:class:`MemoryWriteSignature`): burst commands out (``cmd``), the words with byte
  strobes (``data``, a burst's words in order after its command), and one response per burst
  (``resp``: 0 is OKAY, anything else an error, as AXI4's BRESP).
"""

from amaranth import *
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.wiring import In, Out

from .arbiter import RoundRobin, or_tree


__all__ = ["Burst", "Run", "WriteBeat", "MemoryReadSignature", "MemoryWriteSignature",
           "BurstPlanner", "ElementGroup", "ElementReader", "ElementWriter", "BurstArbiter"]


RUNS_QUEUED = 4     # runs a reader or writer accepts ahead of the one it moves
#: Words a reader keeps room for, and bursts a read arbiter tracks, at least: more than a
#: burst's round trip (arbiter, command queue, memory latency, word queue), so that bursts of
#: a word or two still stream a word a cycle.
IN_FLIGHT = 16


class Burst(data.StructLayout):
    """``length + 1`` words from the byte address ``addr`` (word-aligned, ``addr_width`` bits)."""

    def __init__(self, addr_width):
        super().__init__({"addr": addr_width, "length": 8})


class Run(data.StructLayout):
    """``count`` elements of ``2 ** size`` bytes from the byte address ``addr``: both
    ``addr_width`` bits, as a run lies in the memory's address space."""

    def __init__(self, addr_width):
        super().__init__({"addr": addr_width, "count": addr_width, "size": 2})


class WriteBeat(data.StructLayout):
    def __init__(self, width):
        super().__init__({"data": width, "strb": width // 8})


class MemoryReadSignature(wiring.Signature):
    def __init__(self, width, addr_width):
        super().__init__({"cmd": Out(stream.Signature(Burst(addr_width))), "data": In(stream.Signature(width))})


class MemoryWriteSignature(wiring.Signature):
    def __init__(self, width, addr_width):
        super().__init__({"cmd": Out(stream.Signature(Burst(addr_width))),
                          "data": Out(stream.Signature(WriteBeat(width))),
                          "resp": In(stream.Signature(2))})


class _Element(data.StructLayout):
    """What the data side needs of a run: where its first element sits in its word."""

    def __init__(self, word_bytes, addr_width):
        super().__init__({"offset": range(word_bytes), "count": addr_width, "size": 2})


class BurstPlanner(wiring.Component):
    """Runs in, bursts out: the words a run spans, cut at multiples of ``burst`` words. Each
    run it takes is queued on ``element`` (up to :data:`RUNS_QUEUED`) with where its first
    element sits, for the side that moves the words; runs of no elements pass without either."""

    def __init__(self, *, width, burst, addr_width):
        self._word_bytes, self._burst, self._addr_width = width // 8, burst, addr_width
        super().__init__({"run": In(stream.Signature(Run(addr_width))),
                          "burst": Out(stream.Signature(Burst(addr_width))),
                          "element": Out(stream.Signature(_Element(width // 8, addr_width))),
                          "busy": Out(1)})

    def elaborate(self, platform):
        m = Module()
        shift = (self._word_bytes - 1).bit_length()
        burst_bits = (self._burst - 1).bit_length()
        run = self.run.payload
        addr_width = self._addr_width
        # The next burst (its first word, its words and whether it is the run's last) and the
        # words left from it are registers, computed when the run is taken and as each burst
        # leaves: a burst's command is a register, so the arbiters' ready logic starts at flops.
        word, left = Signal(addr_width - shift), Signal(addr_width - shift + 1)
        beats, last = Signal(range(self._burst + 1)), Signal()
        element = _Element(self._word_bytes, addr_width)
        m.submodules.queue = queue = fifo.SyncFIFO(width=element.size, depth=RUNS_QUEUED)
        first = Signal(element)
        m.d.comb += [
            self.run.ready.eq(~self.busy & (queue.w_rdy | (run.count == 0))),
            first.offset.eq(run.addr[:shift] if shift else 0),
            first.count.eq(run.count), first.size.eq(run.size),
            queue.w_data.eq(first), queue.w_en.eq(self.run.valid & self.run.ready & (run.count != 0)),
            self.element.valid.eq(queue.r_rdy), self.element.payload.eq(queue.r_data),
            queue.r_en.eq(self.element.ready),
        ]

        def next_burst(words, to_boundary):
            fits = ~_less(to_boundary, words)       # words <= to_boundary, at most a burst
            return [beats.eq(Mux(fits, words, to_boundary)), last.eq(fits)]

        with m.If(self.run.valid & self.run.ready & (run.count != 0)):
            span = (run.count << run.size)[:addr_width]
            words = (span + ((run.addr[:shift] if shift else 0) + self._word_bytes - 1))[shift:]
            in_burst = run.addr[shift:shift + burst_bits] if burst_bits else 0
            m.d.sync += [self.busy.eq(1), word.eq(run.addr[shift:]), left.eq(words),
                         next_burst(words, (C(self._burst) - in_burst)[:burst_bits + 1])]
        m.d.comb += [self.burst.valid.eq(self.busy), self.burst.payload.addr.eq(word << shift),
                     self.burst.payload.length.eq(beats - 1)]
        with m.If(self.burst.valid & self.burst.ready):
            rest = left - beats
            # A burst that is not the run's last ends on a multiple of the burst size.
            m.d.sync += [word.eq(word + beats), left.eq(rest), next_burst(rest, self._burst)]
            with m.If(last):
                m.d.sync += self.busy.eq(0)
        return m


def _less(a, b):
    """``a < b`` where one side has few bits (a constant or a narrow signal): a comparison of
    as many bits and a zero test of the other side's rest, not a carry chain over the wide one."""
    width = lambda v: v.bit_length() if isinstance(v, int) else len(v)
    bits = min(width(a), width(b))
    if max(width(a), width(b)) <= bits:
        return a < b
    if width(a) > bits:
        return (a[bits:] == 0) & (a[:bits] < b)
    return (b[bits:] != 0) | (a < b[:bits])


def _sized(value, size):
    """``value`` cut to an element of ``2 ** size`` bytes (zero above)."""
    return Mux(size == 0, value[:8], Mux(size == 1, value[:16], Mux(size == 2, value[:32], value[:64])))


class _BlockQueue(fifo.SyncFIFOBuffered):
    """A :class:`~amaranth.lib.fifo.SyncFIFOBuffered` whose storage asks for block RAM: a
    reader's word queue fills one, and LUT RAM is scarce (none on iCE40)."""

    def elaborate(self, platform):
        m = super().elaborate(platform)
        m.submodules.storage.attrs["ram_style"] = "block"
        return m


class ElementGroup(data.StructLayout):
    """Up to ``lanes`` consecutive elements of a run: ``count`` of them, the first in
    ``data[0]``; ``last`` on the run's last group."""

    def __init__(self, element_width, lanes):
        super().__init__({"data": data.ArrayLayout(element_width, lanes), "count": range(lanes + 1),
                          "last": 1})


class ElementReader(wiring.Component):
    """Runs in (``runs``), their elements out (``elements``, ``2 ** size`` bytes each,
    zero-extended to ``element_width``), up to ``lanes`` a cycle from one word: as many as the
    word and the run still hold. A burst is requested only when the word queue (``depth``
    words) has room for all of it, so the memory's data never waits on this reader's consumer:
    readers sharing the port cannot block each other. The queue is read through a register
    (block RAM on FPGAs, not flip-flops: no LUT RAM on iCE40); its storage holds ``depth``
    words besides the output register, so it takes every reserved word at once."""

    def __init__(self, *, width, burst, addr_width, element_width=64, lanes=1, depth=None):
        self._width, self._burst, self._addr_width, self._lanes = width, burst, addr_width, lanes
        self._element_width = element_width
        self._depth = depth or max(2 * burst, IN_FLIGHT)
        super().__init__({"runs": In(stream.Signature(Run(addr_width))),
                          "memory": Out(MemoryReadSignature(width, addr_width)),
                          "elements": Out(stream.Signature(ElementGroup(element_width, lanes)))})

    def elaborate(self, platform):
        m = Module()
        word_bytes, lanes = self._width // 8, self._lanes
        m.submodules.planner = planner = BurstPlanner(width=self._width, burst=self._burst,
                                                      addr_width=self._addr_width)
        m.submodules.words = words = _BlockQueue(width=self._width, depth=self._depth + 1)
        wiring.connect(m, wiring.flipped(self.runs), planner.run)
        pending = planner.element

        # Bursts only with room for their words.
        free = Signal(range(self._depth + 1), init=self._depth)
        beats = planner.burst.payload.length + 1
        room = free >= beats
        cmd = self.memory.cmd
        m.d.comb += [cmd.valid.eq(planner.burst.valid & room), cmd.payload.eq(planner.burst.payload),
                     planner.burst.ready.eq(cmd.ready & room)]
        m.d.comb += [words.w_data.eq(self.memory.data.payload), words.w_en.eq(self.memory.data.valid),
                     self.memory.data.ready.eq(words.w_rdy)]
        m.d.sync += free.eq(free - Mux(cmd.valid & cmd.ready, beats, 0) + words.r_en)

        # Elements: the head run's, from its first element's offset, a word popped when its
        # last element or the run's leaves. The elements left count down (no subtraction
        # before the comparisons), compared narrowly.
        head = pending.payload
        started, offset, remaining = Signal(), Signal(range(word_bytes)), Signal(self._addr_width)
        at = Mux(started, offset, head.offset)
        left = Mux(started, remaining, head.count)
        in_word = Signal(range(word_bytes + 1))
        group = Signal(range(lanes + 1))
        m.d.comb += [in_word.eq((word_bytes - at) >> head.size),
                     group.eq(Mux((in_word < lanes) & _less(in_word, left), in_word,
                                  Mux(_less(left, lanes), left, lanes)))]
        following = at + (group << head.size)
        last = _less(left, lanes + 1) & (left[:lanes.bit_length()] == group)
        fire = self.elements.valid & self.elements.ready
        out = self.elements.payload
        m.d.comb += [self.elements.valid.eq(pending.valid & words.r_rdy), out.count.eq(group), out.last.eq(last),
                     words.r_en.eq(fire & (last | (following >= word_bytes))),
                     pending.ready.eq(fire & last)]
        for lane in range(lanes):
            m.d.comb += out.data[lane].eq(
                _sized(words.r_data >> ((at + (C(lane, 4) << head.size)) * 8), head.size))
        with m.If(fire):
            m.d.sync += [started.eq(~last), remaining.eq(left - group),
                         offset.eq(following[:len(offset)] if word_bytes > 1 else 0)]
        return m


class ElementWriter(wiring.Component):
    """Runs in (``runs``), then their elements (``elements``, one per cycle, ``2 ** size`` bytes
    each from the low bits), packed into words with byte strobes and written in bursts.
    ``idle`` when every run taken has been written and its responses are back; ``error``
    latches on a response that is not OKAY."""

    def __init__(self, *, width, burst, addr_width, element_width=64):
        self._width, self._burst, self._addr_width = width, burst, addr_width
        super().__init__({"runs": In(stream.Signature(Run(addr_width))),
                          "elements": In(stream.Signature(element_width)),
                          "memory": Out(MemoryWriteSignature(width, addr_width)),
                          "idle": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        word_bytes = self._width // 8
        m.submodules.planner = planner = BurstPlanner(width=self._width, burst=self._burst,
                                                      addr_width=self._addr_width)
        wiring.connect(m, wiring.flipped(self.runs), planner.run)
        wiring.connect(m, planner.burst, wiring.flipped(self.memory.cmd))
        pending = planner.element

        # Responses: one per burst.
        outstanding = Signal(16)
        resp = self.memory.resp
        m.d.comb += resp.ready.eq(1)
        m.d.sync += outstanding.eq(outstanding + (self.memory.cmd.valid & self.memory.cmd.ready)
                                   - (resp.valid & resp.ready))
        with m.If(resp.valid & (resp.payload != 0)):
            m.d.sync += self.error.eq(1)

        # Packing: each element into the word being filled; the word leaves when full or
        # when the run ends.
        head = pending.payload
        started, offset, remaining = Signal(), Signal(range(word_bytes)), Signal(self._addr_width)
        fill, strobes = Signal(self._width), Signal(word_bytes)
        beat = self.memory.data
        at = Mux(started, offset, head.offset)
        left = Mux(started, remaining, head.count)      # elements left, this one included
        following = at + (C(1, 4) << head.size)
        last = left == 1
        width_bytes = Mux(head.size == 0, 1, Mux(head.size == 1, 3, Mux(head.size == 2, 0xF, 0xFF)))
        merged = fill | (_sized(self.elements.payload, head.size) << (at * 8))[:self._width]
        merged_strobes = strobes | (width_bytes << at)[:word_bytes]
        fire = self.elements.valid & self.elements.ready
        leaves = last | (following >= word_bytes)
        m.d.comb += [self.elements.ready.eq(pending.valid & (~beat.valid | beat.ready)),
                     pending.ready.eq(fire & last)]
        with m.If(beat.valid & beat.ready):
            m.d.sync += beat.valid.eq(0)
        with m.If(fire):
            m.d.sync += [started.eq(~last), remaining.eq(left - 1),
                         offset.eq(following[:len(offset)] if word_bytes > 1 else 0)]
            with m.If(leaves):
                m.d.sync += [beat.valid.eq(1), beat.payload.data.eq(merged),
                             beat.payload.strb.eq(merged_strobes), fill.eq(0), strobes.eq(0)]
            with m.Else():
                m.d.sync += [fill.eq(merged), strobes.eq(merged_strobes)]
        m.d.comb += self.idle.eq(~planner.busy & ~pending.valid & ~beat.valid & (outstanding == 0)
                                 & ~self.runs.valid)
        return m


class BurstArbiter(wiring.Component):
    """Shares one read port among ``count`` readers: burst commands by round robin into a
    two-entry command queue (so the memory's ready ends there instead of running back
    through the arbitration into the readers), each burst's words back to the reader that
    asked, through a queue of ``depth`` bursts in flight."""

    def __init__(self, count, *, width, addr_width, depth=IN_FLIGHT):
        self._count, self._depth = count, depth
        super().__init__({"readers": In(MemoryReadSignature(width, addr_width)).array(count),
                          "memory": Out(MemoryReadSignature(width, addr_width))})

    def elaborate(self, platform):
        m = Module()
        n, readers, memory = self._count, self.readers, self.memory
        source_bits = max(1, (n - 1).bit_length())
        m.submodules.arbiter = arbiter = RoundRobin(n)
        m.submodules.sources = sources = fifo.SyncFIFO(width=source_bits + 8, depth=self._depth)
        burst = memory.cmd.payload.shape()
        m.submodules.commands = commands = fifo.SyncFIFO(width=burst.size, depth=2)
        grant = arbiter.grant
        take = sources.w_rdy & commands.w_rdy       # registered levels only
        chosen = burst(or_tree(Mux(grant[i], readers[i].cmd.payload.as_value(), 0) for i in range(n)))
        m.d.comb += [
            arbiter.requests.eq(Mux(take, Cat(reader.cmd.valid for reader in readers), 0)),
            arbiter.advance.eq(1),
            commands.w_en.eq(grant.any()), commands.w_data.eq(chosen),
            memory.cmd.valid.eq(commands.r_rdy), memory.cmd.payload.eq(commands.r_data),
            commands.r_en.eq(memory.cmd.ready),
            sources.w_en.eq(grant.any()),
            sources.w_data.eq(Cat(or_tree(Mux(grant[i], i, 0) for i in range(n))[:source_bits],
                                  chosen.length)),
        ]
        source, length = sources.r_data[:source_bits], sources.r_data[source_bits:]
        beat = Signal(8)
        for i, reader in enumerate(readers):
            mine = sources.r_rdy & (source == i)
            m.d.comb += [reader.cmd.ready.eq(grant[i]),
                         reader.data.valid.eq(memory.data.valid & mine),
                         reader.data.payload.eq(memory.data.payload)]
        m.d.comb += memory.data.ready.eq(or_tree(reader.data.ready & sources.r_rdy & (source == i)
                                                 for i, reader in enumerate(readers)))
        with m.If(memory.data.valid & memory.data.ready):
            with m.If(beat == length):
                m.d.sync += beat.eq(0)
                m.d.comb += sources.r_en.eq(1)
            with m.Else():
                m.d.sync += beat.eq(beat + 1)
        return m
