"""The host bridge: the framed, checksummed protocol of :mod:`rowstation.gen.bridge` on byte
streams (a UART's), driving the accelerator's registers (an AXI4-Lite manager) and the board's
memory (:class:`HostMemorySignature`)."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen.bridge import MAX_WORDS, REPLY, SYNC, Command, Status, crc8
from .axi import OKAY, AXI4LiteSignature


__all__ = ["HostMemorySignature", "HostBridge", "crc8_step"]


class HostMemorySignature(wiring.Signature):
    """One 32-bit word at a byte ``addr`` (word-aligned): ``req`` held until ``ack``; a read's
    ``rdata`` is valid with ``ack``."""

    def __init__(self, addr_width):
        super().__init__({"addr": Out(addr_width), "we": Out(1), "wdata": Out(32), "req": Out(1),
                          "ack": In(1), "rdata": In(32)})


def crc8_step(crc, byte):
    """The CRC-8 (polynomial 0x07) of ``crc`` followed by ``byte``, as logic: the CRC is linear,
    so each output bit is the XOR of the bits of ``crc ^ byte`` whose unit vectors set it."""
    c = crc ^ byte
    columns = [crc8([1 << k]) for k in range(8)]     # crc8 of each unit vector, initial value 0
    return Cat(*(Cat(*(c[k] for k in range(8) if columns[k] >> i & 1)).xor() for i in range(8)))


class HostBridge(wiring.Component):
    """Parses requests from ``rx``, checks them whole (checksum, command, count, alignment, the
    memory's ``memory_bytes``) before acting, executes them and answers on ``tx``. A request
    whose bytes stop for ``timeout`` cycles is answered with TIMEOUT; an ``overrun`` strobe from
    the receiver turns the current request's answer into OVERRUN."""

    def __init__(self, *, memory_bytes, timeout):
        self._memory_bytes, self._timeout = memory_bytes, timeout
        super().__init__({"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8)), "overrun": In(1),
                          "ctrl": Out(AXI4LiteSignature()),
                          "mem": Out(HostMemorySignature(max(1, (memory_bytes - 1).bit_length())))})

    def elaborate(self, platform):
        m = Module()
        m.submodules.buffer = buffer = Memory(shape=32, depth=MAX_WORDS, init=[])
        write, read = buffer.write_port(), buffer.read_port()
        command, count, status = Signal(8), Signal(8), Signal(8)
        address = Signal(32)
        crc = Signal(8)
        index = Signal(range(4 * 256 + 1))       # bytes or words of the current phase
        word = Signal(32)
        overrun = Signal()
        idle = Signal(range(self._timeout + 1))
        rx, tx, ctrl, mem = self.rx, self.tx, self.ctrl, self.mem
        byte = rx.payload
        took = rx.valid & rx.ready
        is_read = (command == Command.READ_REGISTER) | (command == Command.READ_MEMORY)
        is_memory = (command == Command.READ_MEMORY) | (command == Command.WRITE_MEMORY)
        with m.If(self.overrun):
            m.d.sync += overrun.eq(1)
        # The verdict on a whole request, as its last (CRC) byte arrives.
        verdict = Signal(8)
        with m.If(overrun):
            m.d.comb += verdict.eq(Status.OVERRUN)
        with m.Elif(byte != crc):
            m.d.comb += verdict.eq(Status.CHECKSUM)
        with m.Elif((command < Command.READ_REGISTER) | (command > Command.WRITE_MEMORY) | (count == 0) |
                    (count > MAX_WORDS) | (~is_memory & (count != 1))):
            m.d.comb += verdict.eq(Status.COMMAND)
        with m.Elif(address[:2] != 0):
            m.d.comb += verdict.eq(Status.ALIGNMENT)
        with m.Elif(is_memory & (address + (count << 2) > self._memory_bytes)):
            m.d.comb += verdict.eq(Status.RANGE)
        with m.Else():
            m.d.comb += verdict.eq(Status.OK)

        def receiving():
            """Common to the states that take a request's bytes: the CRC and the timeout."""
            m.d.comb += rx.ready.eq(1)
            with m.If(took):
                m.d.sync += [crc.eq(crc8_step(crc, byte)), idle.eq(0)]
            with m.Elif(idle == self._timeout):
                m.d.sync += [status.eq(Status.TIMEOUT), count.eq(0), command.eq(0), index.eq(0)]
                m.next = "REPLY"
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        with m.FSM():
            with m.State("SYNC"):
                m.d.comb += rx.ready.eq(1)
                with m.If(took & (byte == SYNC)):
                    m.d.sync += [crc.eq(0), index.eq(0), idle.eq(0), overrun.eq(self.overrun)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                receiving()
                with m.If(took):
                    m.d.sync += index.eq(index + 1)
                    with m.Switch(index):
                        with m.Case(0):
                            m.d.sync += command.eq(byte)
                        with m.Case(1):
                            m.d.sync += count.eq(byte)
                        with m.Default():
                            m.d.sync += address.eq(Cat(address[8:], byte))
                    with m.If(index == 5):
                        m.d.sync += index.eq(0)
                        m.next = "CHECK"
                        with m.If(((command == Command.WRITE_REGISTER) | (command == Command.WRITE_MEMORY)) &
                                  (count != 0)):
                            m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                receiving()
                m.d.comb += [write.addr.eq(index[2:]), write.data.eq(Cat(word[8:], byte))]
                with m.If(took):
                    m.d.sync += [word.eq(Cat(word[8:], byte)), index.eq(index + 1)]
                    with m.If((index[:2] == 3) & (index[2:] < MAX_WORDS)):
                        m.d.comb += write.en.eq(1)
                    with m.If(index == Cat(C(3, 2), count - 1)):
                        m.next = "CHECK"
            with m.State("CHECK"):
                receiving()
                with m.If(took):
                    m.d.sync += [status.eq(verdict), index.eq(0)]
                    m.next = "REPLY"
                    with m.If(verdict == Status.OK):
                        m.next = "FETCH"

            # Execute, one word at a time: the buffer's word is read the cycle before it is used.
            m.d.comb += read.addr.eq(index)
            with m.State("FETCH"):
                m.next = "EXECUTE"
            with m.State("EXECUTE"):
                with m.If(is_memory):
                    m.d.comb += [mem.req.eq(1), mem.addr.eq(address), mem.we.eq(~is_read),
                                 mem.wdata.eq(read.data)]
                    with m.If(mem.ack):
                        m.d.comb += [write.addr.eq(index), write.data.eq(mem.rdata), write.en.eq(is_read)]
                        m.d.sync += [address.eq(address + 4), index.eq(index + 1)]
                        m.next = "FETCH"
                        with m.If(index == count - 1):
                            m.d.sync += index.eq(0)
                            m.next = "REPLY"
                with m.Elif(is_read):
                    m.d.comb += [ctrl.araddr.eq(address), ctrl.arvalid.eq(1)]
                    with m.If(ctrl.arready):
                        m.next = "REGISTER_READ"
                with m.Else():
                    m.d.sync += [ctrl.awvalid.eq(1), ctrl.wvalid.eq(1)]
                    m.next = "REGISTER_WRITE"
            with m.State("REGISTER_READ"):
                m.d.comb += [ctrl.rready.eq(1), write.addr.eq(0), write.data.eq(ctrl.rdata)]
                with m.If(ctrl.rvalid):
                    m.d.comb += write.en.eq(1)
                    with m.If(ctrl.rresp != OKAY):
                        m.d.sync += status.eq(Status.BUS)
                    m.next = "REPLY"
            with m.State("REGISTER_WRITE"):
                m.d.comb += [ctrl.awaddr.eq(address), ctrl.wdata.eq(read.data), ctrl.wstrb.eq(0xF),
                             read.addr.eq(0), ctrl.bready.eq(~ctrl.awvalid & ~ctrl.wvalid)]
                with m.If(ctrl.awready):
                    m.d.sync += ctrl.awvalid.eq(0)
                with m.If(ctrl.wready):
                    m.d.sync += ctrl.wvalid.eq(0)
                with m.If(ctrl.bvalid & ctrl.bready):
                    with m.If(ctrl.bresp != OKAY):
                        m.d.sync += status.eq(Status.BUS)
                    m.next = "REPLY"

            # Reply: sync, status, count, the words read (if any and all went well), CRC.
            payload = (status == Status.OK) & is_read
            with m.State("REPLY"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(REPLY)]
                with m.If(tx.ready):
                    m.d.sync += [crc.eq(0), index.eq(0)]
                    m.next = "STATUS"
            with m.State("STATUS"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(status)]
                with m.If(tx.ready):
                    m.d.sync += crc.eq(crc8_step(crc, status))
                    m.next = "COUNT"
            with m.State("COUNT"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(count)]
                with m.If(tx.ready):
                    m.d.sync += crc.eq(crc8_step(crc, count))
                    m.next = "LOAD"
                    with m.If(~payload):
                        m.next = "CRC"
            with m.State("LOAD"):       # the word index[2:] reaches the read port's output
                m.d.comb += read.addr.eq(index[2:])
                m.next = "WORD"
            with m.State("WORD"):
                m.d.comb += read.addr.eq(index[2:])
                value = read.data.word_select(index[:2], 8)
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(value)]
                with m.If(tx.ready):
                    m.d.sync += [crc.eq(crc8_step(crc, value)), index.eq(index + 1)]
                    with m.If(index == Cat(C(3, 2), count - 1)):
                        m.next = "CRC"
                    with m.Elif(index[:2] == 3):
                        m.next = "LOAD"
            with m.State("CRC"):
                m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc)]
                with m.If(tx.ready):
                    m.next = "SYNC"
        return m
