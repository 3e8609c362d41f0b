"""What a board adds around the accelerator: on-chip memory behind its AXI4 port, and the host
bridge on a UART, so a host drives it through the same driver as in simulation."""

from amaranth import *
from amaranth.lib import fifo, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..gen.bridge import TIMEOUT_BYTES
from .accelerator import Accelerator
from .axi import OKAY, SLVERR, AXI4Signature
from .bridge import HostBridge, HostMemorySignature
from .uart import UARTReceiver, UARTTransmitter


__all__ = ["OnChipMemory", "BoardTop"]


class OnChipMemory(wiring.Component):
    """``size`` bytes of block RAM from address 0: an AXI4 subordinate (``axi``: INCR bursts,
    one write burst at a time, read bursts back to back (the next fetches as the last beats of
    one are presented), each with the next one's address accepted ahead, SLVERR
    for a burst reaching beyond the memory) and a 32-bit host port (``host``), served when no
    burst is under way."""

    def __init__(self, *, data_width, addr_width, size):
        if size & (size - 1) or size < data_width // 8 * 2:
            raise ValueError(f"on-chip memory size must be a power of 2 of at least two words, not {size}")
        self._width, self._size = data_width, size
        super().__init__({"axi": In(AXI4Signature(data_width=data_width, addr_width=addr_width)),
                          "host": In(HostMemorySignature(max(1, (size - 1).bit_length())))})

    def elaborate(self, platform):
        m = Module()
        width, lanes = self._width, self._width // 8
        depth = self._size // lanes
        shift = (lanes - 1).bit_length()
        m.submodules.storage = storage = Memory(shape=width, depth=depth, init=[])
        write = storage.write_port(granularity=8)
        read = storage.read_port()
        axi, host = self.axi, self.host

        # Reads: the address of the next beat goes to the port while the presented beat is
        # taken (or none is presented); a stalled beat keeps the port's output (en low). Each
        # fetched beat carries its burst's last and error flags, so the next burst starts
        # fetching once the current one's beats are all fetched, not presented.
        r_valid, r_last, r_bad = Signal(), Signal(), Signal()     # the presented beat
        r_addr, r_left = Signal(range(depth)), Signal(9)           # next word, beats still to fetch
        r_error = Signal()                                         # the fetching burst's
        advance = ~r_valid | axi.rready
        m.d.comb += [axi.rvalid.eq(r_valid), axi.rdata.eq(read.data), axi.rlast.eq(r_last),
                     axi.rresp.eq(Mux(r_bad, SLVERR, OKAY)), read.en.eq(advance), read.addr.eq(r_addr)]
        with m.If(advance):
            m.d.sync += r_valid.eq(r_left != 0)
            with m.If(r_left != 0):
                m.d.sync += [r_addr.eq(r_addr + 1), r_left.eq(r_left - 1), r_last.eq(r_left == 1),
                             r_bad.eq(r_error)]

        # Writes: the address burst, then its beats, then one response.
        w_active, b_valid = Signal(), Signal()
        w_addr, w_error = Signal(range(depth)), Signal()
        m.d.comb += [axi.wready.eq(w_active), axi.bvalid.eq(b_valid), axi.bresp.eq(Mux(w_error, SLVERR, OKAY)),
                     write.addr.eq(w_addr), write.data.eq(axi.wdata)]
        with m.If(axi.wvalid & axi.wready):
            m.d.comb += write.en.eq(Mux(w_error, 0, axi.wstrb))
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(axi.wlast):
                m.d.sync += [w_active.eq(0), b_valid.eq(1)]
        with m.If(axi.bvalid & axi.bready):
            m.d.sync += b_valid.eq(0)

        # New bursts: an accepted address waits in a register (so no path runs from the
        # managers' arbiters into the range check), and starts once the previous burst is done,
        # unless the host port takes the cycle.
        granted = Signal()      # a host read's word is on the port's output
        ar_held, aw_held = Signal(), Signal()
        ar_addr, aw_addr = Signal.like(axi.araddr), Signal.like(axi.awaddr)
        ar_len, aw_len = Signal(8), Signal(8)
        busy = (r_left != 0) | r_valid | w_active | b_valid | ar_held | aw_held
        host_turn = host.req & ~busy & ~granted
        m.d.comb += [axi.arready.eq(~ar_held & ~host_turn), axi.awready.eq(~aw_held & ~host_turn)]
        with m.If(axi.arvalid & axi.arready):
            m.d.sync += [ar_held.eq(1), ar_addr.eq(axi.araddr), ar_len.eq(axi.arlen)]
        with m.If(axi.awvalid & axi.awready):
            m.d.sync += [aw_held.eq(1), aw_addr.eq(axi.awaddr), aw_len.eq(axi.awlen)]

        def beyond(addr, length):
            return (addr >> shift) + length >= depth   # the burst's last word is past the end

        with m.If(ar_held & (r_left == 0)):
            m.d.sync += [ar_held.eq(0), r_addr.eq(ar_addr >> shift), r_left.eq(ar_len + 1),
                         r_error.eq(beyond(ar_addr, ar_len))]
        with m.If(aw_held & ~w_active & ~b_valid):
            m.d.sync += [aw_held.eq(0), w_active.eq(1), w_addr.eq(aw_addr >> shift),
                         w_error.eq(beyond(aw_addr, aw_len))]

        # The host port: one 32-bit word a request, read the cycle after it is granted.
        word = host.addr[2:shift] if shift > 2 else C(0, 1)
        lane = Signal.like(word)
        m.d.sync += granted.eq(0)
        with m.If(host_turn):
            m.d.comb += [read.addr.eq(host.addr >> shift), read.en.eq(1), write.addr.eq(host.addr >> shift),
                         write.data.eq(host.wdata.replicate(max(1, width // 32)))]
            with m.If(host.we):
                m.d.comb += [write.en.eq(Const(0xF, lanes) << (word * 4) if shift > 2 else 0xF), host.ack.eq(1)]
            with m.Else():
                m.d.sync += [granted.eq(1), lane.eq(word)]
        with m.If(granted):
            m.d.comb += [host.ack.eq(1), host.rdata.eq(read.data.word_select(lane, 32) if shift > 2 else read.data)]
        return m


class BoardTop(wiring.Component):
    """The accelerator for ``config`` with ``memory_bytes`` of on-chip memory and the host
    bridge on a UART of ``divisor`` clock cycles a bit. Ports: ``rx``, ``tx`` (the UART lines,
    idle high) and ``irq``. ``pe_module`` as for :class:`~rowstation.hw.accelerator.Accelerator`."""

    def __init__(self, config, *, memory_bytes, divisor, pe_module=None):
        if config.dram_width < 32:
            raise ValueError(f"the board's memory is at least 32 bits wide; dram_width is {config.dram_width}")
        if memory_bytes > 1 << config.dram_addr_width:
            raise ValueError(f"{memory_bytes} bytes of memory need more than dram_addr_width = "
                             f"{config.dram_addr_width} address bits")
        self._config, self._memory_bytes, self._divisor = config, memory_bytes, divisor
        self._pe_module = pe_module
        super().__init__({"rx": In(1, init=1), "tx": Out(1, init=1), "irq": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.accelerator = accelerator = Accelerator(self._config, pe_module=self._pe_module)
        m.submodules.memory = memory = OnChipMemory(data_width=self._config.dram_width,
                                                        addr_width=self._config.dram_addr_width,
                                                        size=self._memory_bytes)
        m.submodules.receiver = receiver = UARTReceiver(self._divisor)
        m.submodules.transmitter = transmitter = UARTTransmitter(self._divisor)
        m.submodules.rx_fifo = rx_fifo = fifo.SyncFIFOBuffered(width=8, depth=16)
        m.submodules.bridge = bridge = HostBridge(memory_bytes=self._memory_bytes,
                                                  timeout=TIMEOUT_BYTES * 10 * self._divisor)
        wiring.connect(m, accelerator.mem, memory.axi)
        wiring.connect(m, bridge.ctrl, accelerator.ctrl)
        m.d.comb += [
            receiver.rx.eq(self.rx), self.tx.eq(transmitter.tx), self.irq.eq(accelerator.irq),
            rx_fifo.w_data.eq(receiver.data.payload), rx_fifo.w_en.eq(receiver.data.valid),
            receiver.data.ready.eq(rx_fifo.w_rdy),
            bridge.rx.payload.eq(rx_fifo.r_data), bridge.rx.valid.eq(rx_fifo.r_rdy), rx_fifo.r_en.eq(bridge.rx.ready),
            bridge.overrun.eq(receiver.overrun | (receiver.data.valid & ~rx_fifo.w_rdy)),
        ]
        wiring.connect(m, bridge.tx, transmitter.data)
        wiring.connect(m, bridge.mem, memory.host)
        return m
