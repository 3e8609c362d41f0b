"""The host bridge protocol: framed, checksummed register and memory access over a byte link
(a board's USB serial port), and the driver transport that speaks it.

Every exchange is one request and one response (little-endian; CRC-8, polynomial 0x07, initial
value 0, over every byte after the sync byte)::

    request   0x52 ('R') | command | count | address (4) | payload (writes: count x 4) | crc
    response  0x72 ('r') | status  | count | payload (successful reads: count x 4) | crc

``count`` is in 32-bit words, 1 to :data:`MAX_WORDS`; register commands move one word;
``address`` is a byte address, word-aligned. The bridge checks the whole request (checksum,
command, count, alignment, memory range) before it touches anything, so a corrupted write
changes nothing; it answers every request, and a request whose bytes stop arriving for
:data:`TIMEOUT_BYTES` byte times is answered with ``TIMEOUT`` and forgotten. Bytes before a sync
byte are ignored, so a host resynchronises by simply sending its next request.
"""

import asyncio
import enum


__all__ = ["SYNC", "REPLY", "MAX_WORDS", "TIMEOUT_BYTES", "Command", "Status", "crc8", "request", "BridgeError",
           "BridgeTransport", "SerialLink", "markdown"]

SYNC, REPLY = 0x52, 0x72
MAX_WORDS = 64
TIMEOUT_BYTES = 64


class Command(enum.IntEnum):
    READ_REGISTER = 1
    WRITE_REGISTER = 2
    READ_MEMORY = 3
    WRITE_MEMORY = 4


class Status(enum.IntEnum):
    OK = 0
    CHECKSUM = 1    # the request's CRC did not match: nothing was done
    COMMAND = 2     # unknown command, or a count out of range for it
    ALIGNMENT = 3   # the address is not a multiple of 4
    RANGE = 4       # the memory access reaches beyond the board's memory
    BUS = 5         # the register access was answered with an AXI error (SLVERR)
    TIMEOUT = 6     # the request's bytes stopped arriving
    OVERRUN = 7     # bytes arrived faster than the bridge took them (some were lost)


STATUS_MEANING = {
    Status.OK: "done",
    Status.CHECKSUM: "the request's CRC did not match; nothing was done",
    Status.COMMAND: "unknown command, or a count out of range for it; nothing was done",
    Status.ALIGNMENT: "the address is not a multiple of 4; nothing was done",
    Status.RANGE: "the memory access reaches beyond the board's memory; nothing was done",
    Status.BUS: "a register access was answered with an AXI error (SLVERR)",
    Status.TIMEOUT: f"the request's bytes stopped for {TIMEOUT_BYTES} byte times; it was dropped",
    Status.OVERRUN: "bytes arrived faster than the bridge took them; the request was dropped",
}


def crc8(data, crc=0):
    """CRC-8 with polynomial x^8 + x^2 + x + 1 (0x07), initial value ``crc``, no reflection."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def request(command, address, count=1, payload=b""):
    """The bytes of one request."""
    body = bytes([command, count]) + address.to_bytes(4, "little") + payload
    return bytes([SYNC]) + body + bytes([crc8(body)])


class BridgeError(RuntimeError):
    """A request the bridge refused (``status`` a :class:`Status`), or a link failure
    (``status`` "no response" or "corrupted response")."""

    def __init__(self, status, what):
        self.status = status
        reason = f"{status.name} ({STATUS_MEANING[status]})" if isinstance(status, Status) else str(status)
        super().__init__(f"host bridge: {what}: {reason}")


class BridgeTransport:
    """A :class:`~rowstation.gen.driver.Transport` over a byte ``link`` with coroutines
    ``send(bytes)`` and ``receive(count, timeout)`` (bytes, or fewer on timeout)."""

    def __init__(self, link, *, timeout=1.0, retries=2, clock_hz=None):
        self.link, self.timeout, self.retries, self.clock_hz = link, timeout, retries, clock_hz

    async def exchange(self, command, address, count=1, payload=b""):
        """Send one request; return the response's payload, retrying on transmission errors."""
        what = f"{Command(command).name} at {address:#x} ({count} words)"
        for attempt in range(self.retries + 1):
            await self.link.send(request(command, address, count, payload))
            try:
                return await self._response(command, count, what)
            except BridgeError as error:
                if error.status not in (Status.CHECKSUM, Status.TIMEOUT, "no response", "corrupted response") \
                        or attempt == self.retries:
                    raise

    async def _response(self, command, count, what):
        while True:     # skip anything before the reply's sync byte
            first = await self.link.receive(1, self.timeout)
            if not first:
                raise BridgeError("no response", what)
            if first[0] == REPLY:
                break
        head = await self.link.receive(2, self.timeout)
        if len(head) < 2:
            raise BridgeError("no response", what)
        status, words = head
        size = 4 * words if status == Status.OK and command in (Command.READ_REGISTER, Command.READ_MEMORY) else 0
        rest = await self.link.receive(size + 1, self.timeout)
        if len(rest) < size + 1 or crc8(head + rest[:-1]) != rest[-1]:
            raise BridgeError("corrupted response", what)
        if status != Status.OK:
            raise BridgeError(Status(status) if status in Status._value2member_map_ else status, what)
        return rest[:-1]

    async def read_register(self, offset):
        return int.from_bytes(await self.exchange(Command.READ_REGISTER, offset), "little")

    async def write_register(self, offset, value):
        await self.exchange(Command.WRITE_REGISTER, offset, 1, (value & 0xFFFFFFFF).to_bytes(4, "little"))

    async def read_memory(self, address, length):
        start, end = address & ~3, -(-(address + length) // 4) * 4
        data = bytearray()
        for at in range(start, end, 4 * MAX_WORDS):
            words = min(MAX_WORDS, (end - at) // 4)
            data += await self.exchange(Command.READ_MEMORY, at, words)
        return bytes(data[address - start:address - start + length])

    async def write_memory(self, address, data):
        start, end = address & ~3, -(-(address + len(data)) // 4) * 4
        if (start, end) != (address, address + len(data)):   # partial words: read, merge, write
            merged = bytearray(await self.read_memory(start, end - start))
            merged[address - start:address - start + len(data)] = data
            data, address = bytes(merged), start
        for at in range(0, len(data), 4 * MAX_WORDS):
            chunk = data[at:at + 4 * MAX_WORDS]
            await self.exchange(Command.WRITE_MEMORY, address + at, len(chunk) // 4, chunk)

    async def pause(self, cycles):
        if self.clock_hz:
            await asyncio.sleep(cycles / self.clock_hz)


class SerialLink:
    """A serial port (pyserial) as a bridge link."""

    def __init__(self, port, baud):
        import serial

        self.port = serial.Serial(port, baud, timeout=0.1)

    async def send(self, data):
        self.port.write(data)

    async def receive(self, count, timeout):
        self.port.timeout = timeout
        return self.port.read(count)

    def close(self):
        self.port.close()


def markdown():
    rows = ["| command | code | count | payload | response payload |", "|---|--:|---|---|---|"]
    rows += ["| READ_REGISTER | 1 | 1 | none | the register's value |",
             "| WRITE_REGISTER | 2 | 1 | the value | none |",
             f"| READ_MEMORY | 3 | 1-{MAX_WORDS} | none | the words |",
             f"| WRITE_MEMORY | 4 | 1-{MAX_WORDS} | the words | none |", "",
             "| status | code | meaning |", "|---|--:|---|"]
    rows += [f"| {status.name} | {status.value} | {STATUS_MEANING[status]} |" for status in Status]
    return "\n".join(rows)
