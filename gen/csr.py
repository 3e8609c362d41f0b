"""The accelerator's control registers, as a host sees them on its AXI4-Lite port: the one
definition from which the gateware (:class:`rowstation.hw.axi.RegisterFile`), the C header, the
documentation table and the Python driver's offsets are built. Pure Python.

Registers are 32 bits at byte offsets; a field has an access kind (:class:`Access`). A
*counter* is 64 bits over two registers, ``_LO`` then ``_HI``: reading ``_LO`` also takes the
high half, which the following ``_HI`` read returns, so a count read low-then-high is
consistent while it changes.
"""

import enum
import hashlib
from dataclasses import dataclass

from .isa import COUNTERS


__all__ = ["Access", "ErrorCode", "Field", "Register", "ControlRegisters", "MAGIC", "VERSION"]


#: ``ID`` register value: "RSTA" in ASCII.
MAGIC = 0x52535441
#: (major, minor) of the register map and descriptor format.
VERSION = (1, 1)


class Access(enum.Enum):
    RW = "rw"        # written by the host, read by the hardware
    RO = "ro"        # driven by the hardware
    CONST = "const"  # a constant of the generated hardware
    W1C = "w1c"      # set by the hardware, cleared by writing 1
    PULSE = "pulse"  # writing 1 strobes the hardware for one cycle; reads 0


class ErrorCode(enum.IntEnum):
    """``STATUS.error``: why the last run stopped (the run stops at the first error)."""
    NONE = 0
    DESCRIPTOR = 1  # a descriptor with an unknown kind, no program words or reserved bits set
    ALIGNMENT = 2   # a descriptor or tensor address not on a memory word, a program not on 4 bytes
    PROGRAM = 3     # the core refused its program: an unknown opcode or register, a token overflow
    BUS = 4         # the memory answered a read or a write with an error response
    TIMEOUT = 5     # no progress for WATCHDOG cycles
    ABORTED = 6     # the host wrote CTRL.abort
    ADDRESS = 7     # the descriptor list, or an address or size a descriptor names, beyond dram_addr_width bits


@dataclass(frozen=True)
class Field:
    name: str
    offset: int       # first bit
    width: int
    access: Access
    value: int = 0    # the reset value (RW), or the constant (CONST)
    doc: str = ""


@dataclass(frozen=True)
class Register:
    name: str
    offset: int       # byte offset
    fields: tuple
    doc: str = ""
    counter: bool = False   # 64 bits: this register is the low half, ``offset + 4`` the high

    def field(self, name):
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(f"register {self.name} has no field {name!r}")


def _config_hash(config):
    return int.from_bytes(hashlib.sha256(config.to_json().encode()).digest()[:4], "little")


class ControlRegisters:
    """The register map of the accelerator generated for ``config``."""

    COUNTERS_BASE = 0x100

    def __init__(self, config):
        self.config = c = config
        A = Access
        regs = [
            Register("ID", 0x00, (Field("magic", 0, 32, A.CONST, MAGIC),), "identifies a rowstation accelerator"),
            Register("VERSION", 0x04, (Field("minor", 0, 16, A.CONST, VERSION[1]),
                                       Field("major", 16, 16, A.CONST, VERSION[0])),
                     "register map and descriptor format version"),
            Register("CTRL", 0x08, (
                Field("start", 0, 1, A.PULSE, doc="run the descriptor list (ignored and flagged while busy)"),
                Field("abort", 1, 1, A.PULSE, doc="soft reset: stop the run cleanly (error ABORTED)"),
                Field("irq_enable", 8, 1, A.RW, doc="drive `irq` while IRQ.pending")), "control"),
            Register("STATUS", 0x0C, (
                Field("busy", 0, 1, A.RO, doc="a run is in progress"),
                Field("done", 1, 1, A.RO, doc="the last run finished (cleared by start)"),
                Field("start_ignored", 2, 1, A.W1C, doc="start was written while busy"),
                Field("error", 8, 4, A.RO, doc="ErrorCode of the last run"),
                Field("layer", 16, 16, A.RO, doc="the descriptor running, or where the run stopped")),
                "status"),
            Register("IRQ", 0x10, (Field("pending", 0, 1, A.W1C, doc="a run finished"),),
                     "interrupt: `irq` = pending & irq_enable"),
            Register("DESC_BASE", 0x14, (Field("addr", 0, 32, A.RW),),
                     "byte address of the first descriptor (a multiple of the memory word)"),
            Register("DESC_COUNT", 0x18, (Field("count", 0, 16, A.RW),), "descriptors in the list"),
            Register("WATCHDOG", 0x1C, (Field("cycles", 0, 32, A.RW, 1 << 24),),
                     "cycles without memory traffic or a finished pass before error TIMEOUT; 0: off"),
            Register("CONFIG_ARRAY", 0x20, (Field("rows", 0, 16, A.CONST, c.array_rows),
                                            Field("cols", 16, 16, A.CONST, c.array_cols)), "PE array"),
            Register("CONFIG_WIDTHS", 0x24, (Field("weight", 0, 8, A.CONST, c.weight_width),
                                             Field("ifmap", 8, 8, A.CONST, c.ifmap_width),
                                             Field("psum", 16, 8, A.CONST, c.psum_width),
                                             Field("glb_psum", 24, 8, A.CONST, c.glb_psum_bits)),
                     "operand widths (bits)"),
            Register("CONFIG_GLB", 0x28, (Field("bytes", 0, 32, A.CONST, c.glb_bytes),),
                     "global buffer size"),
            Register("CONFIG_MEMORY", 0x2C, (Field("width", 0, 16, A.CONST, c.dram_width),
                                             Field("burst", 16, 16, A.CONST, c.dram_burst)),
                     "memory port: data bits, most words per burst"),
            Register("CONFIG_HASH", 0x30, (Field("hash", 0, 32, A.CONST, _config_hash(c)),),
                     "first 4 bytes (little-endian) of the SHA-256 of the configuration's JSON"),
        ]
        for i, name in enumerate(COUNTERS):
            regs.append(Register(f"COUNT_{name.upper()}", self.COUNTERS_BASE + 8 * i,
                                 (Field("value", 0, c.counter_width, A.RO),),
                                 f"counter `{name}` since start", counter=True))
        self.registers = {r.name: r for r in regs}
        self.size = self.COUNTERS_BASE + 8 * len(COUNTERS)

    def __iter__(self):
        return iter(self.registers.values())

    def __getitem__(self, name):
        return self.registers[name]

    def offset(self, name):
        return self.registers[name].offset

    def counter_offset(self, name):
        return self.registers[f"COUNT_{name.upper()}"].offset

    def c_lines(self, prefix):
        """``#define`` lines: each register's offset, each field's shift and mask, the error codes."""
        lines = [f"/* Control registers ({__name__}), byte offsets on the AXI4-Lite port */",
                 f"#define {prefix}_MAGIC 0x{MAGIC:08x}u",
                 f"#define {prefix}_VERSION_MAJOR {VERSION[0]}u", f"#define {prefix}_VERSION_MINOR {VERSION[1]}u"]
        for r in self:
            if r.counter:
                lines += [f"#define {prefix}_{r.name}_LO 0x{r.offset:03x}u",
                          f"#define {prefix}_{r.name}_HI 0x{r.offset + 4:03x}u"]
                continue
            lines.append(f"#define {prefix}_{r.name} 0x{r.offset:03x}u")
            for f in r.fields:
                lines += [f"#define {prefix}_{r.name}_{f.name.upper()}_SHIFT {f.offset}u",
                          f"#define {prefix}_{r.name}_{f.name.upper()}_MASK 0x{(1 << f.width) - 1:x}u"]
        lines += [f"#define {prefix}_ERROR_{code.name} {int(code)}u" for code in ErrorCode]
        return lines

    def markdown(self):
        """The register map as a Markdown table."""
        rows = ["| Offset | Register | Bits | Field | Access | Reset / value | Description |",
                "|---|---|---|---|---|---|---|"]
        for r in self:
            for i, f in enumerate(r.fields):
                bits = f"{f.offset + f.width - 1}:{f.offset}" if f.width > 1 else f"{f.offset}"
                offset = f"0x{r.offset:03x}" + (f" / 0x{r.offset + 4:03x}" if r.counter else "")
                value = f"0x{f.value:x}" if f.access is Access.CONST else str(f.value)
                if r.counter:
                    value, bits = "0", f"{f.width - 1}:0 (64-bit, LO/HI)"
                doc = f.doc or (r.doc if i == 0 else "")
                rows.append(f"| {offset if i == 0 else ''} | {r.name if i == 0 else ''} | {bits} | "
                            f"{f.name} | {f.access.value} | {value} | {doc} |")
        return "\n".join(rows)
