"""A UART (8 data bits, no parity, one stop bit) as byte streams."""

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out


__all__ = ["UARTReceiver", "UARTTransmitter"]


class UARTReceiver(wiring.Component):
    """Bytes from the line ``rx`` (``divisor`` clock cycles a bit), sampled mid-bit after a
    two-flop synchroniser. A byte whose stop bit is low is dropped and ``framing`` strobes; a
    byte the consumer has not taken when the next one completes is lost and ``overrun`` strobes
    (the bridge answers OVERRUN): the stream never holds a stale or duplicated byte."""

    def __init__(self, divisor):
        if divisor < 4:
            raise ValueError(f"a UART needs at least 4 clock cycles a bit, not {divisor}")
        self._divisor = divisor
        super().__init__({"rx": In(1, init=1), "data": Out(stream.Signature(8)), "framing": Out(1),
                          "overrun": Out(1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        line = Signal(2, init=0b11)
        m.d.sync += line.eq(Cat(self.rx, line[0]))
        bit = line[1]
        timer = Signal(range(d + d // 2 + 1))
        shift = Signal(8)
        index = Signal(range(9))
        with m.If(self.data.ready):
            m.d.sync += self.data.valid.eq(0)
        m.d.sync += [self.framing.eq(0), self.overrun.eq(0)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(~bit):
                    m.d.sync += [timer.eq(d + d // 2 - 1), index.eq(0)]   # to the middle of bit 0
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer == 0):
                    m.d.sync += [shift.eq(Cat(shift[1:], bit)), index.eq(index + 1), timer.eq(d - 1)]
                    with m.If(index == 7):
                        m.next = "STOP"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("STOP"):
                with m.If(timer == 0):
                    with m.If(bit):
                        m.d.sync += [self.data.payload.eq(shift), self.data.valid.eq(1)]
                        with m.If(self.data.valid & ~self.data.ready):
                            m.d.sync += self.overrun.eq(1)
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += self.framing.eq(1)
                        m.next = "BREAK"
                with m.Else():
                    m.d.sync += timer.eq(timer - 1)
            with m.State("BREAK"):      # wait for the line to go idle again
                with m.If(bit):
                    m.next = "IDLE"
        return m


class UARTTransmitter(wiring.Component):
    """Bytes of ``data`` onto the line ``tx``, ``divisor`` clock cycles a bit."""

    def __init__(self, divisor):
        if divisor < 1:
            raise ValueError(f"divisor must be at least 1, not {divisor}")
        self._divisor = divisor
        super().__init__({"data": In(stream.Signature(8)), "tx": Out(1, init=1)})

    def elaborate(self, platform):
        m = Module()
        d = self._divisor
        frame = Signal(10, init=0x3FF)      # start bit, 8 data bits, stop bit; LSB first
        bits = Signal(range(11))
        timer = Signal(range(d))
        m.d.comb += [self.tx.eq(frame[0]), self.data.ready.eq(bits == 0)]
        with m.If(self.data.valid & self.data.ready):
            m.d.sync += [frame.eq(Cat(0, self.data.payload, 1)), bits.eq(10), timer.eq(d - 1)]
        with m.Elif(bits != 0):
            with m.If(timer == 0):
                m.d.sync += [frame.eq(Cat(frame[1:], 1)), bits.eq(bits - 1), timer.eq(d - 1)]
            with m.Else():
                m.d.sync += timer.eq(timer - 1)
        return m
