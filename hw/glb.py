"""The global buffer: banked on-chip SRAM shared by the controller's streams.

``glb_banks`` banks of ``glb_bank_depth`` words of ``glb_bank_width`` bits, each bank one
``amaranth.lib.memory.Memory`` with one read and one write port (a simple dual-port block
RAM). Words are numbered bank by bank, so a region of whole banks (ifmaps in some, psums in
others, as in Eyeriss) is served without conflicts. A port sees elements of its own width,
packed ``lanes`` to a word (the largest power of two that fits): element address
``word * lanes + lane`` (``AcceleratorConfig.glb_lanes`` and ``glb_capacity``). Each cycle a bank serves one read and one write; ports that address
the same bank take turns (round robin), so conflicts cost cycles, never data.
"""

from math import gcd

from amaranth import *
from amaranth.lib import data, stream, wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from .arbiter import RoundRobin, or_tree


__all__ = ["GlobalBuffer", "ReadPortSignature", "WriteRequest"]

_READ_QUEUE = 2   # a read port's queue: room for the word in flight keeps one word a cycle


class ReadPortSignature(wiring.Signature):
    """A reader's side: element addresses out (``addr``), the elements back in the same order
    (``data``)."""

    def __init__(self, addr_width, element_shape):
        super().__init__({"addr": Out(stream.Signature(addr_width)),
                          "data": In(stream.Signature(element_shape))})


class WriteRequest(data.StructLayout):
    def __init__(self, addr_width, element_shape):
        super().__init__({"addr": addr_width, "data": element_shape})


class GlobalBuffer(wiring.Component):
    """``reads`` and ``writes`` map port names to element shapes (e.g. ``signed(16)``).

    A read port returns one element per cycle while its ``data`` is taken, the cycle after its
    address; a write port writes one element per cycle. Reads and writes of the same address in
    one cycle are unordered: the controller orders dependent accesses.
    """

    def __init__(self, config, *, reads, writes):
        self._config = config
        self._reads, self._writes = dict(reads), dict(writes)
        widths = [Shape.cast(shape).width for shape in (*self._reads.values(), *self._writes.values())]
        self._granularity = gcd(config.glb_bank_width, *widths)
        members = {}
        for name, shape in self._reads.items():
            members[name] = In(ReadPortSignature(config.glb_addr_width(Shape.cast(shape).width), shape))
        for name, shape in self._writes.items():
            members[name] = In(stream.Signature(WriteRequest(config.glb_addr_width(Shape.cast(shape).width),
                                                             shape)))
        super().__init__(members)

    def _lanes(self, shape):
        return self._config.glb_lanes(Shape.cast(shape).width)

    def _locate(self, m, name, addr, shape):
        """(bank, row, lane) signals of element address ``addr`` for a port of ``shape``."""
        lane_bits = (self._lanes(shape) - 1).bit_length()
        row_bits = (self._config.glb_bank_depth - 1).bit_length()
        bank = Signal(range(self._config.glb_banks), name=f"{name}_bank")
        row = Signal(row_bits, name=f"{name}_row")
        lane = Signal(max(1, lane_bits), name=f"{name}_lane")
        m.d.comb += [lane.eq(addr[:lane_bits]), row.eq(addr[lane_bits:lane_bits + row_bits]),
                     bank.eq(addr[lane_bits + row_bits:])]
        return bank, row, lane

    def elaborate(self, platform):
        m = Module()
        c = self._config
        g = self._granularity
        banks = []
        for b in range(c.glb_banks):
            memory = Memory(shape=c.glb_bank_width, depth=c.glb_bank_depth, init=[])
            m.submodules[f"bank_{b}"] = memory
            banks.append((memory.read_port(), memory.write_port(granularity=g)))

        # Read ports: a request goes to its bank's arbiter and the word arrives the next cycle.
        # It goes on to the consumer if ready and nothing is queued, else into the port's queue.
        # A request issues while the queue has room for it and the word in flight (registered
        # counts only), so the consumer's ready (the networks' AND over their PEs, the store
        # path) ends at the queue and never reaches the arbiters or the banks.
        read_requests = [[] for _ in banks]  # per bank: (request, row, granted)
        for name, shape in self._reads.items():
            port, width = getattr(self, name), Shape.cast(shape).width
            bank, row, lane = self._locate(m, name, port.addr.payload, shape)
            m.submodules[f"{name}_queue"] = queue = SyncFIFO(width=width, depth=_READ_QUEUE)
            inflight = Signal(name=f"{name}_inflight")
            at_bank = Signal.like(bank, name=f"{name}_at_bank")
            at_lane = Signal.like(lane, name=f"{name}_at_lane")
            can_issue = queue.level + inflight < _READ_QUEUE
            grants = []
            for b in range(len(banks)):
                granted = Signal(name=f"{name}_grant_{b}")
                read_requests[b].append((port.addr.valid & can_issue & (bank == b), row, granted))
                grants.append(granted)
            accepted = Cat(grants).any()
            word = Signal(c.glb_bank_width, name=f"{name}_word")
            m.d.comb += word.eq(or_tree(Mux(at_bank == b, read.data, 0) for b, (read, _) in enumerate(banks)))
            fresh = word.word_select(at_lane, width) if self._lanes(shape) > 1 else word[:width]
            bypass = ~queue.r_rdy
            m.d.comb += [port.addr.ready.eq(accepted),
                         queue.w_data.eq(fresh), queue.w_en.eq(inflight & ~(bypass & port.data.ready)),
                         port.data.valid.eq(queue.r_rdy | (bypass & inflight)),
                         port.data.payload.eq(Mux(queue.r_rdy, queue.r_data, fresh)),
                         queue.r_en.eq(port.data.ready)]
            m.d.sync += inflight.eq(accepted)
            with m.If(accepted):
                m.d.sync += [at_bank.eq(bank), at_lane.eq(lane)]

        # Write ports: one element per cycle into its lane(s) of the addressed word.
        write_requests = [[] for _ in banks]
        for name, shape in self._writes.items():
            port, width = getattr(self, name), Shape.cast(shape).width
            bank, row, lane = self._locate(m, name, port.payload.addr, shape)
            lanes = self._lanes(shape)
            value = Value.cast(port.payload.data).as_unsigned()
            word = Cat(value for _ in range(lanes))
            enables = Array(C(((1 << width // g) - 1) << (l * width // g), c.glb_bank_width // g)
                            for l in range(lanes))
            grants = []
            for b in range(len(banks)):
                granted = Signal(name=f"{name}_wgrant_{b}")
                write_requests[b].append((port.valid & (bank == b), row, granted, word,
                                          enables[lane]))
                grants.append(granted)
            m.d.comb += port.ready.eq(Cat(grants).any())

        for b, (read, write) in enumerate(banks):
            m.d.comb += read.en.eq(0)
            for kind, requests in (("read", read_requests[b]), ("write", write_requests[b])):
                if not requests:
                    continue
                arbiter = RoundRobin(len(requests))
                m.submodules[f"bank_{b}_{kind}_arbiter"] = arbiter
                m.d.comb += [arbiter.requests.eq(Cat(req[0] for req in requests)),
                             arbiter.advance.eq(1)]
                for i, req in enumerate(requests):
                    m.d.comb += req[2].eq(arbiter.grant[i])
                    with m.If(arbiter.grant[i]):
                        if kind == "read":
                            m.d.comb += [read.addr.eq(req[1]), read.en.eq(1)]
                        else:
                            m.d.comb += [write.addr.eq(req[1]), write.data.eq(req[3]),
                                         write.en.eq(req[4])]
        return m
