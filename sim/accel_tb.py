"""cocotb tests of ``rowstation_accel``: the host driver (:mod:`rowstation.gen.driver`) over
cocotbext-axi's ``AxiLiteMaster`` (registers) and ``AxiRam`` (memory, every channel pausing at
random), so the simulated accelerator is driven as a board's host would drive it.

The JSON file named by ROWSTATION_CASE gives the run folder (``dir``), the configuration, and
a saved :class:`~rowstation.gen.driver.Job` (``job``): ``run_job`` runs it (with ``stall``,
``seed``, ``timeout_us``) on each of ``inputs`` (files of input bytes; default: the job's own),
loading the image once, and writes ``output_<i>.bin`` and ``counters_<i>.json``;
``registers`` and ``errors`` recover with it.
"""

import json
import logging
import os
import random
from functools import partial
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from ..gen.config import AcceleratorConfig
from ..gen.csr import MAGIC, Access, ControlRegisters, ErrorCode
from ..gen.descriptor import DESCRIPTOR_BYTES, Kind, encode
from ..gen.driver import Driver, Job, Transport
from ..gen.isa import Opcode
from ..gen.isa import encode as encode_op
from .network import write_run


CASE = json.loads(Path(os.environ["ROWSTATION_CASE"]).read_text())
OUT = Path(CASE["dir"])
CONFIG = AcceleratorConfig(**CASE["config"]["config"])
REGS = ControlRegisters(CONFIG)
PERIOD_NS = 10
JOB = Job.load(CASE["job"])
# The simulated memory covers the job (AxiRam wraps addresses beyond its size), at least 16 MB.
MEMORY_BYTES = 1 << max(24, (JOB.base + len(JOB.image) - 1).bit_length())


class CocotbTransport(Transport):
    def __init__(self, dut, axil, ram):
        self.dut, self.axil, self.ram = dut, axil, ram

    async def read_register(self, offset):
        return await self.axil.read_dword(offset)

    async def write_register(self, offset, value):
        await self.axil.write_dword(offset, value)

    async def read_memory(self, address, length):
        return self.ram.read(address, length)

    async def write_memory(self, address, data):
        self.ram.write(address, bytes(data))

    async def pause(self, cycles):
        await ClockCycles(self.dut.clk, cycles)


def _pauses(probability, rng):
    while True:
        yield rng.random() < probability


async def setup(dut, *, stall=0.0, seed=1):
    for name in ("s_axil", "m_axi"):
        logging.getLogger(f"cocotb.{dut._name}.{name}").setLevel(logging.WARNING)
    cocotb.start_soon(Clock(dut.clk, PERIOD_NS, unit="ns").start())
    axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk, dut.rst)
    ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk, dut.rst, size=MEMORY_BYTES)
    if stall:
        rng = random.Random(seed)
        for channel in (ram.write_if.aw_channel, ram.write_if.w_channel, ram.write_if.b_channel,
                        ram.read_if.ar_channel, ram.read_if.r_channel):
            channel.set_pause_generator(_pauses(stall, rng))
    dut.rst.value = 1
    await ClockCycles(dut.clk, 4)
    dut.rst.value = 0
    await ClockCycles(dut.clk, 2)
    return Driver(CocotbTransport(dut, axil, ram), CONFIG), axil, ram


@cocotb.test(timeout_time=CASE.get("timeout_us", 100000), timeout_unit="us")
async def run_job(dut):
    """Run a saved job; write the output and the per-layer counters for the caller to check."""
    driver, _, _ = await setup(dut, stall=CASE.get("stall", 0.0), seed=CASE.get("seed", 1))
    inputs = CASE.get("inputs", [str(Path(CASE["job"]) / "input.bin")])
    budget = CASE.get("timeout_us", 100000) * 1000 // PERIOD_NS * 9 // 10 // len(inputs)   # cycles a run
    await driver.run_inputs(JOB, [Path(path).read_bytes() for path in inputs], done=partial(write_run, OUT),
                            timeout=budget)      # a timeout names status and counters
    assert not dut.irq.value, "irq without irq_enable"


def _words(values):
    return b"".join(w.to_bytes(4, "little") for w in values)


async def _run_list(driver, ram, descriptors, *, base=0x100, irq=False):
    """Write ``descriptors`` (lists of words) at ``base``, start, wait until done (the
    interrupt left pending); the status."""
    for i, words in enumerate(descriptors):
        ram.write(base + DESCRIPTOR_BYTES * i, _words(words))
    await driver.start(base, len(descriptors), irq=irq)
    return await driver.finished(poll=20, timeout=200_000)


_PROGRAMS = iter(range(0x10000, MEMORY_BYTES, 0x1000))


def _descriptor(ram, *, kind=Kind.CONV, programs=None, **fields):
    """A descriptor whose three streams are ``programs`` ({unit: words}; END if not given),
    placed where no other descriptor's are."""
    values, at = {"kind": kind}, next(_PROGRAMS)
    for unit in ("load", "execute", "store"):
        words = (programs or {}).get(unit, [encode_op(Opcode.END)])
        ram.write(at, _words(words))
        values[f"{unit}_program"], values[f"{unit}_words"] = at, len(words)
        at += 0x400
    values.update(fields)
    return encode(**values)


@cocotb.test(timeout_time=2000, timeout_unit="us")
async def registers(dut):
    """Reset values, read-only fields, write-one-to-clear, unmapped addresses, start with an
    empty list, start while busy, the interrupt."""
    driver, axil, ram = await setup(dut)
    for r in REGS:
        if r.counter:
            continue
        want = sum((f.value if f.access in (Access.CONST, Access.RW) else 0) << f.offset for f in r.fields)
        assert await axil.read_dword(r.offset) == want, f"{r.name} resets to {want:#x}"
    # Read-only fields ignore writes.
    for name in ("ID", "CONFIG_ARRAY", "STATUS", "COUNT_MAC"):
        before = await axil.read_dword(REGS.offset(name))
        await axil.write_dword(REGS.offset(name), 0xFFFF_FFFF if name != "STATUS" else 0xFFFF_FFFB)
        assert await axil.read_dword(REGS.offset(name)) == before, f"{name} changed on a write"
    assert await axil.read_dword(REGS.offset("ID")) == MAGIC
    # Outside the map: SLVERR.
    unmapped = REGS.COUNTERS_BASE - 4
    assert (await axil.read(unmapped, 4)).resp == 2
    assert (await axil.write(unmapped, b"\0\0\0\0")).resp == 2
    # Byte strobes on a RW register.
    await axil.write_dword(REGS.offset("DESC_BASE"), 0x1234_5678)
    await axil.write(REGS.offset("DESC_BASE") + 1, b"\xab")
    assert await axil.read_dword(REGS.offset("DESC_BASE")) == 0x1234_AB78
    # An empty list: done at once; the interrupt only when enabled, cleared by writing 1.
    await driver.start(0x100, 0, irq=True)
    await ClockCycles(dut.clk, 5)
    status = await driver.status()
    assert status["done"] and not status["busy"] and status["error"] == 0
    assert dut.irq.value == 1
    await axil.write_dword(REGS.offset("IRQ"), 1)
    await RisingEdge(dut.clk)
    assert dut.irq.value == 0 and await axil.read_dword(REGS.offset("IRQ")) == 0
    # Start while busy: ignored and flagged (W1C); a stream without END runs until aborted.
    no_end = {"load": [encode_op(Opcode.LOAD, 0)]}   # waits for its arguments forever
    ram.write(0x100, _words(_descriptor(ram, programs=no_end)))
    await axil.write_dword(REGS.offset("WATCHDOG"), 0)
    await driver.start(0x100, 1)
    await ClockCycles(dut.clk, 50)
    await driver.start(0x100, 1)
    status = await driver.status()
    assert status["busy"] and status["start_ignored"]
    await driver.abort()
    await ClockCycles(dut.clk, 50)
    status = await driver.status()
    assert status["done"] and not status["busy"] and status["error"] == ErrorCode.ABORTED
    await axil.write_dword(REGS.offset("STATUS"), 1 << 2)
    assert not (await driver.status())["start_ignored"]
    await _recovers(driver)


async def _recovers(driver):
    """A real run after whatever happened before: bit-exact output (checked by the caller)."""
    output, layers = await driver.run(JOB)
    (OUT / "output.bin").write_bytes(bytes(output))
    (OUT / "counters.json").write_text(json.dumps(layers))


@cocotb.test(timeout_time=4000, timeout_unit="us")
async def errors(dut):
    """Each error stops the run cleanly (done, the error code, the interrupt) and the next run
    works."""
    driver, axil, ram = await setup(dut)
    word = CONFIG.dram_width // 8
    await axil.write_dword(REGS.offset("WATCHDOG"), 2000)
    cases = {
        ErrorCode.DESCRIPTOR: [_descriptor(ram, kind=0)],
        ErrorCode.ALIGNMENT: [_descriptor(ram, ifmap=word // 2 or 1)],
        ErrorCode.PROGRAM: [_descriptor(ram, programs={"store": [15 << 28]})],
        ErrorCode.TIMEOUT: [_descriptor(ram, programs={"load": [encode_op(Opcode.LOAD, 0)]})],
    }
    for code, descriptors in cases.items():
        status = await _run_list(driver, ram, descriptors, irq=True)
        assert status["error"] == code, f"{code.name}: status {status}"
        assert dut.irq.value == 1, f"{code.name}: no interrupt"
        await axil.write_dword(REGS.offset("IRQ"), 1)
    # A descriptor list at an address that is not a memory word.
    await driver.start(0x102, 1)
    await ClockCycles(dut.clk, 5)
    assert (await driver.status())["error"] == ErrorCode.ALIGNMENT
    # A descriptor list running past the end of the address space.
    await driver.start((1 << CONFIG.dram_addr_width) - DESCRIPTOR_BYTES, 2)
    await ClockCycles(dut.clk, 5)
    assert (await driver.status())["error"] == ErrorCode.ADDRESS
    # The memory answering with an error response (reads of one region, then writes).
    faulty = 0x8000
    read, write = ram.read_if._read, ram.write_if._write

    async def failing_read(address, length):
        if faulty <= address < faulty + 0x1000:
            raise ValueError("injected read error")
        return await read(address, length)

    async def failing_write(address, data):
        if faulty <= address < faulty + 0x1000:
            raise ValueError("injected write error")
        return await write(address, data)

    ram.read_if._read, ram.write_if._write = failing_read, failing_write
    status = await _run_list(driver, ram, [_descriptor(ram, stats=faulty)])
    assert status["error"] == ErrorCode.BUS, f"write error: status {status}"
    status = await _run_list(driver, ram, [[0] * 16], base=faulty)
    assert status["error"] == ErrorCode.BUS, f"read error: status {status}"
    ram.read_if._read, ram.write_if._write = read, write
    await _recovers(driver)
