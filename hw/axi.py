"""AXI4-Lite control registers and the AXI4 memory manager.

The signatures name their members as the AXI specification names the signals (``awaddr``,
``wvalid``, ...), from the manager's side, so the exported ports read ``s_axil_awaddr`` and
``m_axi_arlen`` as every AXI tool expects.
"""

from amaranth import *
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from ..gen.csr import Access
from .memory import MemoryReadSignature, MemoryWriteSignature


__all__ = ["AXI4LiteSignature", "AXI4Signature", "RegisterFile", "AXI4Manager", "OKAY", "SLVERR"]

OKAY, SLVERR = 0, 2
INCR = 1


class AXI4LiteSignature(wiring.Signature):
    def __init__(self, *, addr_width=32, data_width=32):
        super().__init__({
            "awaddr": Out(addr_width), "awprot": Out(3), "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wvalid": Out(1), "wready": In(1),
            "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            "araddr": Out(addr_width), "arprot": Out(3), "arvalid": Out(1), "arready": In(1),
            "rdata": In(data_width), "rresp": In(2), "rvalid": In(1), "rready": Out(1),
        })


class AXI4Signature(wiring.Signature):
    def __init__(self, *, data_width, addr_width, id_width=1):
        address = {"id": id_width, "addr": addr_width, "len": 8, "size": 3, "burst": 2, "lock": 1,
                   "cache": 4, "prot": 3}
        super().__init__({
            **{f"aw{name}": Out(width) for name, width in address.items()},
            "awvalid": Out(1), "awready": In(1),
            "wdata": Out(data_width), "wstrb": Out(data_width // 8), "wlast": Out(1), "wvalid": Out(1),
            "wready": In(1),
            "bid": In(id_width), "bresp": In(2), "bvalid": In(1), "bready": Out(1),
            **{f"ar{name}": Out(width) for name, width in address.items()},
            "arvalid": Out(1), "arready": In(1),
            "rid": In(id_width), "rdata": In(data_width), "rresp": In(2), "rlast": In(1),
            "rvalid": In(1), "rready": Out(1),
        })


def field_port(register, field):
    """The :class:`RegisterFile` port name of a field."""
    return f"{register.name.lower()}_{field.name}"


class RegisterFile(wiring.Component):
    """The registers of a :class:`~rowstation.gen.csr.ControlRegisters` map on an AXI4-Lite
    subordinate port (``bus``), one transaction at a time; an address outside the map answers
    SLVERR, a write to a read-only field is ignored. Ports, per field ``<register>_<field>``:
    RW fields ``Out`` (their value), RO fields ``In``, PULSE fields ``Out`` (a one-cycle
    strobe), W1C fields ``Out`` (their value) and ``In`` ``..._set``."""

    def __init__(self, registers):
        self._registers = registers
        members = {"bus": In(AXI4LiteSignature())}
        for r in registers:
            for f in r.fields:
                name = field_port(r, f)
                if f.access in (Access.RW, Access.PULSE, Access.W1C):
                    members[name] = Out(f.width, init=f.value if f.access is Access.RW else 0)
                if f.access is Access.RO:
                    members[name] = In(f.width)
                if f.access is Access.W1C:
                    members[f"{name}_set"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        index_bits = (self._registers.size - 1).bit_length()

        # Writes: address and data together, then the response.
        for r in self._registers:
            for f in r.fields:
                if f.access is Access.PULSE:
                    m.d.sync += getattr(self, field_port(r, f)).eq(0)
                if f.access is Access.W1C:
                    with m.If(getattr(self, f"{field_port(r, f)}_set")):
                        m.d.sync += getattr(self, field_port(r, f)).eq(1)
        with m.If(bus.bvalid & bus.bready):
            m.d.sync += bus.bvalid.eq(0)
        take = bus.awvalid & bus.wvalid & ~bus.bvalid
        m.d.comb += [bus.awready.eq(take), bus.wready.eq(take)]
        with m.If(take):
            m.d.sync += [bus.bvalid.eq(1), bus.bresp.eq(SLVERR)]
            with m.Switch(bus.awaddr[2:index_bits]):
                for r in self._registers:
                    with m.Case(r.offset >> 2, *((r.offset + 4 >> 2,) if r.counter else ())):
                        m.d.sync += bus.bresp.eq(OKAY)
                        for f in r.fields:
                            self._write_field(m, r, f)

        # Reads: the address, then the data.
        high = Signal(32)   # a counter's high half, taken with its low half
        with m.If(bus.rvalid & bus.rready):
            m.d.sync += bus.rvalid.eq(0)
        m.d.comb += bus.arready.eq(~bus.rvalid)
        with m.If(bus.arvalid & bus.arready):
            m.d.sync += [bus.rvalid.eq(1), bus.rresp.eq(SLVERR), bus.rdata.eq(0)]
            with m.Switch(bus.araddr[2:index_bits]):
                for r in self._registers:
                    with m.Case(r.offset >> 2):
                        m.d.sync += bus.rresp.eq(OKAY)
                        if r.counter:
                            value = getattr(self, field_port(r, r.fields[0]))
                            m.d.sync += [bus.rdata.eq(value[:32]), high.eq(value[32:])]
                        else:
                            m.d.sync += bus.rdata.eq(self._read_value(r))
                    if r.counter:
                        with m.Case(r.offset + 4 >> 2):
                            m.d.sync += [bus.rresp.eq(OKAY), bus.rdata.eq(high)]
        return m

    def _write_field(self, m, register, f):
        if register.counter or f.access in (Access.RO, Access.CONST):
            return
        bus, port = self.bus, getattr(self, field_port(register, f))
        data = bus.wdata[f.offset:f.offset + f.width]
        if f.access is Access.RW:
            for bit in range(f.width):   # byte strobes
                with m.If(bus.wstrb[(f.offset + bit) // 8]):
                    m.d.sync += port[bit].eq(data[bit])
        elif f.access is Access.PULSE:
            m.d.sync += port.eq(data & bus.wstrb[f.offset // 8])
        elif f.access is Access.W1C:
            with m.If(data[0] & bus.wstrb[f.offset // 8]):
                m.d.sync += port.eq(0)

    def _read_value(self, register):
        value = C(0, 32)
        for f in register.fields:
            if f.access is Access.CONST:
                part = C(f.value, f.width)
            elif f.access is Access.PULSE:
                continue
            else:
                part = getattr(self, field_port(register, f))
            value = value | (part.as_unsigned() << f.offset)
        return value[:32]


class AXI4Manager(wiring.Component):
    """The memory port contract (:mod:`rowstation.hw.memory`) on an AXI4 manager port: INCR
    bursts with ID 0 (so reads return in order), several reads and writes outstanding; a burst's
    write data leave without waiting for its address to be taken. A read or write response
    other than OKAY latches ``error`` (until ``clear``); the data still flow.

    While ``drain`` is high the port takes no new commands and completes what it started:
    write bursts already announced get their remaining beats with no byte enabled, read data
    and write responses are taken and dropped. ``idle``: nothing outstanding."""

    #: Write bursts whose commands or data are queued here.
    DEPTH = 8

    def __init__(self, width, addr_width):
        self._width = width
        super().__init__({"rd": In(MemoryReadSignature(width, addr_width)),
                          "wr": In(MemoryWriteSignature(width, addr_width)),
                          "bus": Out(AXI4Signature(data_width=width, addr_width=addr_width)),
                          "drain": In(1), "clear": In(1), "idle": Out(1), "error": Out(1)})

    def elaborate(self, platform):
        m = Module()
        bus, rd, wr, drain = self.bus, self.rd, self.wr, self.drain
        size = (self._width // 8).bit_length() - 1

        # Reads.
        reads = Signal(16)   # bursts in flight
        m.d.comb += [
            bus.araddr.eq(rd.cmd.payload.addr), bus.arlen.eq(rd.cmd.payload.length),
            bus.arsize.eq(size), bus.arburst.eq(INCR), bus.arvalid.eq(rd.cmd.valid & ~drain),
            rd.cmd.ready.eq(bus.arready & ~drain),
            rd.data.valid.eq(bus.rvalid & ~drain), rd.data.payload.eq(bus.rdata),
            bus.rready.eq(rd.data.ready | drain),
        ]
        read_issued = bus.arvalid & bus.arready
        read_done = bus.rvalid & bus.rready & bus.rlast
        m.d.sync += reads.eq(reads + read_issued - read_done)

        # Writes: each command queued both for AW and for the W side's burst lengths.
        m.submodules.aw = aw = fifo.SyncFIFO(width=len(wr.cmd.payload.as_value()), depth=2)
        m.submodules.lengths = lengths = fifo.SyncFIFO(width=8, depth=self.DEPTH)
        take = wr.cmd.valid & aw.w_rdy & lengths.w_rdy & ~drain
        m.d.comb += [
            wr.cmd.ready.eq(aw.w_rdy & lengths.w_rdy & ~drain),
            aw.w_en.eq(take), aw.w_data.eq(wr.cmd.payload), lengths.w_en.eq(take),
            lengths.w_data.eq(wr.cmd.payload.length),
        ]
        queued = wr.cmd.payload.shape()(aw.r_data)
        m.d.comb += [bus.awaddr.eq(queued.addr), bus.awlen.eq(queued.length), bus.awsize.eq(size),
                     bus.awburst.eq(INCR), bus.awvalid.eq(aw.r_rdy), aw.r_en.eq(bus.awready)]
        beat = Signal(8)
        m.d.comb += [
            bus.wvalid.eq(lengths.r_rdy & (wr.data.valid | drain)),
            bus.wdata.eq(Mux(drain, 0, wr.data.payload.data)),
            bus.wstrb.eq(Mux(drain, 0, wr.data.payload.strb)),
            bus.wlast.eq(beat == lengths.r_data),
            wr.data.ready.eq(lengths.r_rdy & bus.wready & ~drain),
        ]
        with m.If(bus.wvalid & bus.wready):
            m.d.sync += beat.eq(Mux(bus.wlast, 0, beat + 1))
            m.d.comb += lengths.r_en.eq(bus.wlast)
        writes = Signal(16)  # bursts announced, response not yet back
        m.d.comb += [wr.resp.valid.eq(bus.bvalid & ~drain), wr.resp.payload.eq(bus.bresp),
                     bus.bready.eq(wr.resp.ready | drain)]
        m.d.sync += writes.eq(writes + (bus.awvalid & bus.awready) - (bus.bvalid & bus.bready))

        with m.If(self.clear):
            m.d.sync += self.error.eq(0)
        with m.If((bus.rvalid & bus.rready & (bus.rresp != OKAY))
                  | (bus.bvalid & bus.bready & (bus.bresp != OKAY))):
            m.d.sync += self.error.eq(1)
        m.d.comb += self.idle.eq((reads == 0) & (writes == 0) & ~aw.r_rdy & ~lengths.r_rdy)
        return m
