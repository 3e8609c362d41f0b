"""The host driver: runs compiled networks on the accelerator through any :class:`Transport`
(the cocotb simulation's, or a board's UART bridge), the same code in every case.

A transport moves register and memory words; the driver checks it talks to the hardware the
network was compiled for (ID, version, configuration hash), loads the memory image, starts the
descriptor list, waits for done and reads the output and the per-layer counters. Its methods
are coroutines, so a simulation transport can let simulated time pass; a blocking transport
simply never awaits (run it with :func:`asyncio.run`).
"""

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from .csr import MAGIC, VERSION, ControlRegisters, ErrorCode
from .isa import COUNTERS


__all__ = ["Transport", "Job", "AcceleratorError", "Driver", "summed"]


class Transport:
    """What a driver needs of the hardware; subclasses implement these coroutines."""

    async def read_register(self, offset):
        raise NotImplementedError

    async def write_register(self, offset, value):
        raise NotImplementedError

    async def read_memory(self, address, length):
        raise NotImplementedError

    async def write_memory(self, address, data):
        raise NotImplementedError

    async def pause(self, cycles):
        """Let about ``cycles`` accelerator clock cycles pass."""
        raise NotImplementedError


@dataclass
class Job:
    """Everything one run needs, as plain data: the memory image from ``base``, the descriptor
    list, where to write the input and whence to read the output and each layer's counters."""

    base: int
    image: bytes
    descriptors: int
    count: int
    input: tuple           # (address, bytes)
    output: tuple          # (address, length)
    stats: list = field(default_factory=list)   # per descriptor: its counters' address

    def save(self, directory):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "image.bin").write_bytes(bytes(self.image))
        (directory / "input.bin").write_bytes(bytes(self.input[1]))
        (directory / "job.json").write_text(json.dumps({
            "base": self.base, "descriptors": self.descriptors, "count": self.count,
            "input": self.input[0], "output": list(self.output), "stats": self.stats}))

    @classmethod
    def load(cls, directory):
        directory = Path(directory)
        spec = json.loads((directory / "job.json").read_text())
        return cls(spec["base"], (directory / "image.bin").read_bytes(), spec["descriptors"], spec["count"],
                   (spec["input"], (directory / "input.bin").read_bytes()), tuple(spec["output"]), spec["stats"])


class AcceleratorError(RuntimeError):
    def __init__(self, code, layer):
        self.code, self.layer = ErrorCode(code), layer
        super().__init__(f"the accelerator stopped with error {self.code.name} at descriptor {layer}")


class Driver:
    """Drives the accelerator generated for ``config`` through ``transport``."""

    def __init__(self, transport, config):
        self.transport, self.config = transport, config
        self.registers = ControlRegisters(config)

    async def _read(self, name):
        return await self.transport.read_register(self.registers.offset(name))

    async def _field(self, register, name):
        f = self.registers[register].field(name)
        return (await self._read(register)) >> f.offset & ((1 << f.width) - 1)

    async def check(self):
        """Raise RuntimeError unless the hardware is a rowstation accelerator of this
        register map version and configuration."""
        magic = await self._read("ID")
        if magic != MAGIC:
            raise RuntimeError(f"ID register reads {magic:#010x}, not a rowstation accelerator ({MAGIC:#010x})")
        version = await self._read("VERSION")
        if version >> 16 != VERSION[0]:
            raise RuntimeError(f"the hardware's register map is version {version >> 16}.{version & 0xffff}, "
                               f"this driver speaks {VERSION[0]}.x")
        want = self.registers["CONFIG_HASH"].fields[0].value
        have = await self._read("CONFIG_HASH")
        if have != want:
            raise RuntimeError(f"the hardware was generated for another configuration (hash {have:#010x}, "
                               f"this one {want:#010x}): its arrays, widths or buffers may differ")

    async def status(self):
        value = await self._read("STATUS")
        return {f.name: value >> f.offset & ((1 << f.width) - 1) for f in self.registers["STATUS"].fields}

    async def start(self, descriptors, count, *, irq=False):
        t, r = self.transport, self.registers
        await t.write_register(r.offset("DESC_BASE"), descriptors)
        await t.write_register(r.offset("DESC_COUNT"), count)
        ctrl = r["CTRL"]
        await t.write_register(r.offset("CTRL"), 1 << ctrl.field("start").offset
                               | int(irq) << ctrl.field("irq_enable").offset)

    async def finished(self, *, poll=200, timeout=None):
        """The status once the run is done (polling every ``poll`` cycles); after ``timeout``
        cycles, aborts the run and raises TimeoutError naming the status and the counters."""
        waited = 0
        while True:
            status = await self.status()
            if not status["busy"] and status["done"]:
                return status
            if timeout is not None and waited >= timeout:
                counters = await self.counters()
                await self.abort()
                raise TimeoutError(f"the accelerator did not finish within {timeout} cycles (aborted it): "
                                   f"status {status}, counters {counters}")
            await self.transport.pause(poll)
            waited += poll

    async def wait(self, *, poll=200, timeout=None):
        """:meth:`finished`, then acknowledges the interrupt; raises :class:`AcceleratorError`
        if the run failed."""
        status = await self.finished(poll=poll, timeout=timeout)
        irq = self.registers["IRQ"].field("pending")
        await self.transport.write_register(self.registers.offset("IRQ"), 1 << irq.offset)
        if status["error"]:
            raise AcceleratorError(status["error"], status["layer"])
        return status

    async def abort(self):
        ctrl = self.registers["CTRL"]
        await self.transport.write_register(self.registers.offset("CTRL"), 1 << ctrl.field("abort").offset)

    async def counters(self):
        """Every counter (since start), read low half then high half."""
        out = {}
        for name in COUNTERS:
            offset = self.registers.counter_offset(name)
            lo = await self.transport.read_register(offset)
            hi = await self.transport.read_register(offset + 4)
            out[name] = lo | hi << 32
        return out

    async def run_inputs(self, job, inputs, *, done=None, poll=200, timeout=None):
        """Run ``job`` once per input (bytes) of ``inputs``, loading its image only before the
        first; ``done(i, output, counters)`` after each run. Returns the list of (output bytes,
        per-descriptor counters)."""
        results = []
        for i, data in enumerate(inputs):
            output, counters = await self.run(replace(job, input=(job.input[0], data)), poll=poll,
                                              timeout=timeout, load=i == 0)
            results.append((output, counters))
            if done is not None:
                done(i, output, counters)
        return results

    async def run(self, job, *, poll=200, timeout=None, load=True):
        """Load ``job`` (without ``load``: only its input, the image being in place from a
        previous run), run it; returns (output bytes, per-descriptor counters)."""
        t = self.transport
        if load:
            await self.check()
            await t.write_memory(job.base, job.image)
        await t.write_memory(*job.input)
        await self.start(job.descriptors, job.count)
        await self.wait(poll=poll, timeout=timeout)
        output = await t.read_memory(*job.output)
        modulo, before, layers = 1 << self.config.counter_width, dict.fromkeys(COUNTERS, 0), []
        for address in job.stats:
            raw = await t.read_memory(address, 8 * len(COUNTERS))
            now = {name: int.from_bytes(raw[8 * i:8 * i + 8], "little") for i, name in enumerate(COUNTERS)}
            layers.append({name: (now[name] - before[name]) % modulo for name in COUNTERS})
            before = now
        return output, layers


def summed(runs):
    """Per-descriptor counters summed over ``runs`` (each a list of per-descriptor dicts)."""
    return [{name: sum(run[k][name] for run in runs) for name in runs[0][k]} for k in range(len(runs[0]))]
