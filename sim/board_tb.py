"""cocotb tests of the board top ``rowstation_board`` through its UART, as a board's host would
drive it: the host driver (:mod:`rowstation.gen.driver`) over :class:`~rowstation.gen.bridge.BridgeTransport`,
whose byte link is cocotbext-uart's ``UartSource`` and ``UartSink`` on the ``rx`` and ``tx`` lines.

The JSON file named by ROWSTATION_CASE gives the run folder (``dir``), the configuration, the
UART ``divisor`` and a saved :class:`~rowstation.gen.driver.Job` (``job``) with ``inputs``:
``run_job`` runs it on each input and writes ``output_<i>.bin`` and ``counters_<i>.json``;
``bridge_errors`` sends corrupted, truncated and refused requests, checks each is answered with
its status and changes nothing, runs a descriptor beyond the address space (error ADDRESS),
then runs the job.
"""

import json
import logging
import os
from functools import partial
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, Timer
from cocotbext.uart import UartSink, UartSource

from ..gen.bridge import MAX_WORDS, REPLY, SYNC, TIMEOUT_BYTES, BridgeError, BridgeTransport, Command, Status, crc8, request
from ..gen import descriptor
from ..gen.config import AcceleratorConfig
from ..gen.csr import ErrorCode
from ..gen.driver import AcceleratorError, Driver, Job
from .network import write_run


CASE = json.loads(Path(os.environ["ROWSTATION_CASE"]).read_text())
OUT = Path(CASE["dir"])
CONFIG = AcceleratorConfig(**CASE["config"]["config"])
PERIOD_NS = 10
DIVISOR = CASE["divisor"]
BYTE_NS = 10 * DIVISOR * PERIOD_NS
JOB = Job.load(CASE["job"])


class CocotbUartLink:
    """The simulated UART as a bridge link; timeouts in byte times of simulated time."""

    def __init__(self, dut):
        baud = 1e9 / (DIVISOR * PERIOD_NS)
        self.source, self.sink = UartSource(dut.rx, baud=baud), UartSink(dut.tx, baud=baud)
        for uart in (self.source, self.sink):
            uart.log.setLevel(logging.WARNING)

    async def send(self, data):
        await self.source.write(data)
        await self.source.wait()

    async def receive(self, count, timeout):
        data = bytearray()
        while len(data) < count:
            if self.sink.empty():
                await self.sink.wait(timeout=int(timeout * 1e9), timeout_unit="ns")
                if self.sink.empty():
                    break
            data += self.sink.read_nowait(min(count - len(data), self.sink.count()))
        return bytes(data)


async def setup(dut):
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    dut.rx.value = 1
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    link = CocotbUartLink(dut)
    # A reply takes at most (MAX_WORDS x 4 + 4) byte times after the request's last byte.
    transport = BridgeTransport(link, timeout=(4 * MAX_WORDS + 2 * TIMEOUT_BYTES) * BYTE_NS * 1e-9, retries=0)
    return Driver(transport, CONFIG), transport, link


async def _run_inputs(driver):
    inputs = CASE.get("inputs", [str(Path(CASE["job"]) / "input.bin")])
    await driver.run_inputs(JOB, [Path(path).read_bytes() for path in inputs], done=partial(write_run, OUT), poll=1)


@cocotb.test(timeout_time=CASE.get("timeout_us", 100000), timeout_unit="us")
async def run_job(dut):
    driver, _, _ = await setup(dut)
    await _run_inputs(driver)


async def _raw(link, data, what):
    """Send raw request bytes; the reply's (status, payload)."""
    await link.send(data)
    head = await link.receive(3, (len(data) + 2 * TIMEOUT_BYTES + 8) * BYTE_NS * 1e-9)
    assert len(head) == 3 and head[0] == REPLY, f"{what}: no reply ({head!r})"
    status, count = head[1], head[2]
    command = data[data.index(SYNC) + 1]
    size = 4 * count if status == Status.OK and command in (Command.READ_MEMORY, Command.READ_REGISTER) else 0
    rest = await link.receive(size + 1, 8 * BYTE_NS * 1e-9 * (size + 1))
    assert crc8(head[1:] + rest[:-1]) == rest[-1], f"{what}: reply CRC"
    return Status(status), rest[:-1]


@cocotb.test(timeout_time=CASE.get("timeout_us", 100000), timeout_unit="us")
async def bridge_errors(dut):
    driver, transport, link = await setup(dut)
    base = JOB.base
    await transport.write_memory(base, bytes(range(16)))
    await transport.write_memory(base + 5, b"\xa1\xa2\xa3")       # partial words: read, merge, write
    assert await transport.read_memory(base + 3, 7) == bytes([3, 4, 0xA1, 0xA2, 0xA3, 8, 9])
    await transport.write_memory(base + 5, bytes([5, 6, 7]))

    # A write with a corrupted payload byte: refused as a whole, memory unchanged.
    frame = bytearray(request(Command.WRITE_MEMORY, base, 4, bytes(16 * [0xEE])))
    frame[9] ^= 0x01
    assert (await _raw(link, bytes(frame), "corrupted"))[0] == Status.CHECKSUM
    assert await transport.read_memory(base, 16) == bytes(range(16))
    # A truncated request: answered TIMEOUT after TIMEOUT_BYTES byte times, then forgotten.
    assert (await _raw(link, request(Command.WRITE_MEMORY, base, 4, bytes(16))[:12], "truncated"))[0] == Status.TIMEOUT
    assert await transport.read_memory(base, 16) == bytes(range(16))
    # Noise before a request is skipped; refused requests name their reason.
    assert (await _raw(link, b"\x00\xff" + request(Command.READ_MEMORY, base, 1), "noise"))[0] == Status.OK
    for data, status in [(request(9, base), Status.COMMAND), (request(Command.READ_MEMORY, base, 0), Status.COMMAND),
                         (request(Command.READ_MEMORY, base, MAX_WORDS + 1), Status.COMMAND),
                         (request(Command.READ_REGISTER, 0, 2), Status.COMMAND),
                         (request(Command.READ_MEMORY, base + 2), Status.ALIGNMENT),
                         (request(Command.READ_MEMORY, CASE["memory_bytes"] - 4, 2), Status.RANGE),
                         (request(Command.READ_REGISTER, 0xFFC), Status.BUS)]:
        assert (await _raw(link, data, status.name))[0] == status, status.name
    # The transport raises them as BridgeError naming the status.
    try:
        await transport.read_memory(CASE["memory_bytes"], 4)
    except BridgeError as error:
        assert error.status == Status.RANGE and "RANGE" in str(error)
    else:
        raise AssertionError("an access beyond the memory was not refused")
    # A descriptor naming an address beyond the dram_addr_width-bit memory: error ADDRESS.
    words = descriptor.encode(kind=descriptor.Kind.CONV, load_words=1, execute_words=1, store_words=1,
                              weights=1 << CONFIG.dram_addr_width)
    await transport.write_memory(base, b"".join(word.to_bytes(4, "little") for word in words))
    await driver.start(base, 1)
    try:
        await driver.wait(poll=1)
    except AcceleratorError as error:
        assert error.code == ErrorCode.ADDRESS, error
    else:
        raise AssertionError("a descriptor beyond the address space ran")
    await Timer(1, "us")
    await _run_inputs(driver)
