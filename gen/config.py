"""The accelerator configuration: one frozen, validated object that every generator reads.

Pure Python (no Amaranth, no NumPy), so the gateware, the golden model and host software all
share it. Widths are in bits (``*_width``), storage sizes in entries (``*_depth``).
"""

import dataclasses
import json
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path


__all__ = ["AcceleratorConfig", "PEConfig", "PRESETS", "preset", "resolve_config", "c_header"]


def _check_type(name, value):
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{name} must be an integer, not {value!r}")


def _check_int(name, value, lo, hi=None, reason=None):
    _check_type(name, value)
    if value < lo or (hi is not None and value > hi):
        limit = f"at least {lo}" if hi is None else f"between {lo} and {hi}"
        why = f" ({reason})" if reason else ""
        raise ValueError(f"{name} must be {limit}{why}, not {value}")


def _signed_bits(lo, hi):
    """Smallest two's complement width holding every integer in [lo, hi]."""
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


@dataclass(frozen=True, kw_only=True)
class AcceleratorConfig:
    """Parameters of one row-stationary accelerator.

    Operands are signed two's complement. ``psum_width`` is the exact accumulation width: a layer
    whose worst-case partial sum does not fit is refused, never wrapped.
    """

    array_rows: int         # PE rows (filter rows of a logical PE set map onto rows)
    array_cols: int         # PE columns (ofmap rows of a logical PE set map onto columns)
    ifmap_width: int        # bits of an ifmap (activation) value
    weight_width: int       # bits of a filter weight
    psum_width: int         # bits of a partial sum, exact accumulation
    filter_spad_depth: int  # words of the filter scratchpad in each PE (>= p*q*S)
    filter_banks: int       # filter scratchpad banks: 2 loads the next pass while one computes
    filter_noc_width: int   # weights per filter network transfer (written to a PE's filter spad at once)
    ifmap_spad_depth: int   # words of the ifmap scratchpad in each PE (>= q*S)
    psum_spad_depth: int    # words of the psum scratchpad in each PE (>= p)
    psum_fifo_depth: int    # words of the output psum FIFO in each PE
    glb_banks: int          # global buffer banks
    glb_bank_depth: int     # words per global buffer bank
    glb_bank_width: int     # bits per global buffer word
    dram_width: int         # bits of the external memory interface (a word)
    dram_burst: int         # most words of one external memory burst (bursts never cross a multiple)
    dim_width: int          # bits of a layer dimension or loop bound in hardware descriptors
    counter_width: int      # bits of each performance counter
    glb_psum_width: int = 0  # bits of a psum held in the global buffer; 0: psum_width (layers are checked)
    dram_addr_width: int = 32  # bits of an external memory byte address (the memory's size: 2 ** bits)
    psum_noc_lanes: int = 1  # psums the psum and output networks each carry per cycle (lane: PE columns col % lanes)
    ifmap_noc_lanes: int = 1  # activations the ifmap network carries per cycle (lane: a share of the pass's rows)
    mac_lanes: int = 1      # MACs per PE per cycle: filters of one ifmap value computed side by side (SIMD)
    weight_register: int = 0  # 1: a register between the filter spad and the multipliers (one more PE stage)

    def __post_init__(self):
        for field in fields(self):
            _check_type(field.name, getattr(self, field.name))
        _check_int("array_rows", self.array_rows, 1, 64)
        _check_int("array_cols", self.array_cols, 1, 64)
        _check_int("ifmap_width", self.ifmap_width, 2, 32,
                   "a signed value needs 2 bits; products must fit 64-bit host integers")
        _check_int("weight_width", self.weight_width, 2, 32,
                   "a signed value needs 2 bits; products must fit 64-bit host integers")
        product = self.ifmap_width + self.weight_width
        _check_int("psum_width", self.psum_width, product, 64,
                   f"one {self.ifmap_width}x{self.weight_width}-bit product needs {product} bits; "
                   f"outputs are 64-bit integers")
        _check_int("filter_spad_depth", self.filter_spad_depth, 1, 4096)
        _check_int("filter_banks", self.filter_banks, 1, 2)
        k = self.filter_noc_width
        if k not in (1, 2, 4, 8):
            raise ValueError(f"filter_noc_width must be 1, 2, 4 or 8 weights, not {k!r}")
        if self.filter_spad_depth % k:
            raise ValueError(f"filter_spad_depth = {self.filter_spad_depth} must be a multiple of "
                             f"filter_noc_width = {k} (the filter spad is written {k} weights at a time)")
        _check_int("ifmap_spad_depth", self.ifmap_spad_depth, 1, 4096)
        _check_int("psum_spad_depth", self.psum_spad_depth, 1, 4096)
        _check_int("psum_fifo_depth", self.psum_fifo_depth, 2, 64,
                   "a one-entry FIFO takes a row only after the last has left: a psum every other cycle")
        _check_int("glb_banks", self.glb_banks, 1, 256)
        if self.glb_bank_depth & (self.glb_bank_depth - 1) or self.glb_bank_depth < 2:
            raise ValueError(f"glb_bank_depth must be a power of 2 of at least 2 (to simplify "
                             f"address calculation), not {self.glb_bank_depth}")
        if self.glb_psum_width:
            _check_int("glb_psum_width", self.glb_psum_width, product, self.psum_width,
                       f"0 for psum_width, else from one {self.ifmap_width}x{self.weight_width}-bit "
                       f"product to psum_width")
        _check_int("glb_bank_width", self.glb_bank_width, self.glb_psum_bits, 1024,
                   f"a global buffer word must hold one {self.glb_psum_bits}-bit psum")
        if self.dram_width & (self.dram_width - 1) or not 8 <= self.dram_width <= 1024:
            raise ValueError(f"dram_width must be a power of 2 between 8 and 1024, "
                             f"not {self.dram_width}")
        if self.dram_width < self.memory_width(self.psum_width):
            raise ValueError(f"dram_width = {self.dram_width} must hold one psum of psum_width = "
                             f"{self.psum_width} bits, stored in {self.memory_width(self.psum_width)}")
        if self.dram_burst & (self.dram_burst - 1) or not 1 <= self.dram_burst <= 256 \
                or self.dram_burst * self.dram_width > 4096 * 8:
            raise ValueError(f"dram_burst must be a power of 2 between 1 and 256 words of at most "
                             f"4096 bytes (an AXI4 burst), not {self.dram_burst}")
        if self.filter_noc_width * self.memory_width(self.weight_width) > self.dram_width:
            raise ValueError(f"filter_noc_width = {self.filter_noc_width} weights of "
                             f"{self.memory_width(self.weight_width)} bits exceed a dram_width = "
                             f"{self.dram_width}-bit word (a filter transfer comes from one word)")
        if self.mac_lanes not in (1, 2, 4, 8) or k % self.mac_lanes or self.psum_spad_depth % self.mac_lanes:
            raise ValueError(f"mac_lanes must be 1, 2, 4 or 8 and divide filter_noc_width = {k} and "
                             f"psum_spad_depth = {self.psum_spad_depth} (a PE reads a lane's weights "
                             f"from one filter spad row and its psums from one psum spad row), "
                             f"not {self.mac_lanes!r}")
        _check_int("weight_register", self.weight_register, 0, 1,
                   "1 puts a register between the filter scratchpad and the multipliers")
        _check_int("psum_noc_lanes", self.psum_noc_lanes, 1, self.array_cols,
                   f"a lane serves the PE columns col % psum_noc_lanes of the {self.array_cols}")
        _check_int("ifmap_noc_lanes", self.ifmap_noc_lanes, 1, min(4, self.pe_count),
                   f"each lane a global buffer read port and a network to every PE, at most 4 and "
                   f"one per PE of the {self.pe_count}")
        _check_int("dim_width", self.dim_width, 4, 16)
        _check_int("counter_width", self.counter_width, 16, 64)
        _check_int("dram_addr_width", self.dram_addr_width, 12, 32,
                   "from a 4 KiB memory to the 32-bit words that descriptors and registers carry")

    # Derived quantities.

    @property
    def pe_count(self):
        return self.array_rows * self.array_cols

    @property
    def pe_latency(self):
        """PE cycles from the first ifmap transfer to the last opsum transfer beyond its MAC
        cycles and drain, with filters loaded and no stalls (:class:`rowstation.hw.pe.PE`):
        ifmap write, issue, (weight register,) multiply, accumulate, two FIFOs."""
        return 4 + self.weight_register

    @property
    def peak_macs(self):
        """MACs per cycle at full utilisation: every MAC lane of every PE."""
        return self.pe_count * self.mac_lanes

    @property
    def glb_bytes(self):
        return self.glb_banks * self.glb_bank_depth * self.glb_bank_width // 8

    @property
    def row_id_width(self):
        """Bits of a network row ID (one per array row)."""
        return max(1, (self.array_rows - 1).bit_length())

    @property
    def col_id_width(self):
        """Bits of a network column ID: a key per PE, and one no tag uses (:attr:`unused_col_id`)."""
        return self.pe_count.bit_length()

    def psum_lane(self, col):
        """The psum and output network lane of PE column ``col``."""
        return col % self.psum_noc_lanes

    def psum_lane_chains(self, columns):
        """Most of the chains in PE columns ``columns`` that one psum network lane serves."""
        lanes = [self.psum_lane(col) for col in columns]
        return max((lanes.count(lane) for lane in set(lanes)), default=0)

    def network_lanes(self, net):
        """Lanes of network (or stream) ``net``: ``ifmap_noc_lanes`` of the ifmap network,
        ``psum_noc_lanes`` of the psum network, one of the others."""
        return {"ifmap": self.ifmap_noc_lanes, "psum": self.psum_noc_lanes}.get(net, 1)

    def ifmap_lane_rows(self, rows):
        """Most of a pass's ``rows`` distinct ifmap rows that one ifmap network lane carries
        (the lanes take consecutive shares of ``ceil(rows / ifmap_noc_lanes)`` rows)."""
        return -(-rows // self.ifmap_noc_lanes)

    @property
    def psum_lane_pes(self):
        """PEs of the largest psum network lane."""
        return self.array_rows * -(-self.array_cols // self.psum_noc_lanes)

    @property
    def unused_col_id(self):
        return (1 << self.col_id_width) - 1

    @property
    def glb_psum_bits(self):
        """Bits of a psum in the global buffer."""
        return self.glb_psum_width or self.psum_width

    @staticmethod
    def memory_width(width):
        """Bits an element of ``width`` bits takes in external memory: the smallest power of two
        of at least 8 that holds it, sign-extended (int8, int16, int32 or int64 tensors)."""
        return max(8, 1 << (width - 1).bit_length())

    def glb_lanes(self, width):
        """Elements of ``width`` bits per global buffer word: the largest power of two that fits."""
        return 1 << ((self.glb_bank_width // width).bit_length() - 1)

    @property
    def glb_words(self):
        """Words of the global buffer, all banks."""
        return self.glb_banks * self.glb_bank_depth

    def glb_capacity(self, width):
        """Elements of ``width`` bits the global buffer holds."""
        return self.glb_words * self.glb_lanes(width)

    def check_dram_span(self, end, what):
        """A ValueError unless ``what``, ending before the byte address ``end``, lies in the
        external memory's ``2 ** dram_addr_width`` bytes."""
        if end > 1 << self.dram_addr_width:
            raise ValueError(f"{what} ends at byte {end:#x}, beyond the {1 << self.dram_addr_width:#x} bytes "
                             f"that dram_addr_width = {self.dram_addr_width} addresses")

    def glb_addr_width(self, width):
        """Bits of a global buffer address of elements of ``width`` bits."""
        return max(1, (self.glb_capacity(width) - 1).bit_length())

    @property
    def max_filter_width(self):
        """Largest S a PE holds (p = q = 1; the filters of a pass fill whole MAC lanes)."""
        return min(self.filter_spad_depth // self.mac_lanes, self.ifmap_spad_depth)

    @property
    def max_dim(self):
        """Largest layer dimension or loop bound a hardware descriptor field holds."""
        return (1 << self.dim_width) - 1

    def psum_fits(self, lo, hi):
        return _signed_bits(lo, hi) <= self.psum_width

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return {field.name: getattr(self, field.name) for field in fields(self)}

    def to_json(self):
        derived = {"pe_count": self.pe_count, "peak_macs": self.peak_macs, "glb_bytes": self.glb_bytes,
                   "max_filter_width": self.max_filter_width}
        return json.dumps({"config": self.to_dict(), "derived": derived}, indent=2) + "\n"

    def with_overrides(self, overrides):
        """Apply ``key=value`` strings (as given to ``--set``); values are integers."""
        changes = {}
        names = [field.name for field in fields(self)]
        for item in overrides:
            key, sep, text = item.partition("=")
            key = key.strip()
            if not sep:
                raise ValueError(f"override {item!r} is not of the form key=value")
            if key not in names:
                raise ValueError(f"unknown configuration key {key!r}; known keys: {', '.join(names)}")
            try:
                changes[key] = int(text.strip(), 0)
            except ValueError:
                raise ValueError(f"configuration key {key!r} takes an integer, not {text.strip()!r}")
        return self.replace(**changes)


@dataclass(frozen=True, kw_only=True)
class PEConfig:
    """Per-pass setting of a PE's row-stationary 1-D primitive.

    The PE holds ``p`` filter rows of ``s`` weights for each of ``q`` channels, slides over an
    ifmap row at stride ``u`` producing ``f`` outputs per filter, and does so for ``rows``
    consecutive ifmap rows before it loads new filters. With ``accumulate`` it adds an incoming
    psum (from the PE below or the network) to each output.
    """

    s: int
    u: int
    p: int
    q: int
    f: int
    rows: int = 1
    accumulate: bool = False
    lanes: int = 1      # the PE's MAC lanes (``mac_lanes``): p filters in rows of ``lanes``

    def __post_init__(self):
        for name in ("s", "u", "p", "q", "f", "rows", "lanes"):
            _check_int(name, getattr(self, name), 1)
        if not isinstance(self.accumulate, bool):
            raise TypeError(f"accumulate must be a bool, not {self.accumulate!r}")
        if self.u > self.s:
            raise ValueError(f"stride u = {self.u} may not exceed the filter width s = {self.s} "
                             f"(send only the ifmap columns that are read, with u = s)")

    @property
    def row_length(self):
        """Ifmap words per channel that one row consumes."""
        return (self.f - 1) * self.u + self.s

    @property
    def lane_rows(self):
        """Rows of MAC lanes the p filters take (the last one partly idle unless lanes divide p)."""
        return -(-self.p // self.lanes)

    @property
    def filter_words(self):
        """Weights the PE holds: p filters padded with zeros to whole lane rows, x q x s."""
        return self.lane_rows * self.lanes * self.q * self.s

    @property
    def mac_cycles(self):
        """Cycles from the PE's first MAC slot to its last, no stalls: s x q steps of the lane
        rows for each output; or, when a step takes fewer cycles than the p psums of an output
        leave (one a cycle), the first output's steps and then p cycles an output."""
        steps = self.s * self.q * self.lane_rows
        return max(self.rows * self.f * steps, steps + (self.rows * self.f - 1) * self.p)

    @property
    def drain_cycles(self):
        """Cycles the last output's psums take to leave after its last MAC slot, beyond one:
        its lane rows leave one psum a cycle."""
        return self.p - self.lane_rows

    def check(self, config):
        """Raise ValueError unless this setting fits the PEs of ``config``."""
        if self.lanes != config.mac_lanes:
            raise ValueError(f"a pass for PEs of {self.lanes} MAC lanes does not fit PEs of "
                             f"mac_lanes = {config.mac_lanes}")
        if self.filter_words > config.filter_spad_depth:
            filters = self.p if self.lanes == 1 else f"{self.lane_rows * self.lanes} (p = {self.p} in rows of {self.lanes} lanes)"
            raise ValueError(f"p*q*s = {filters}*{self.q}*{self.s} = {self.filter_words} filter words "
                             f"exceed filter_spad_depth = {config.filter_spad_depth}")
        if self.q * self.s > config.ifmap_spad_depth:
            raise ValueError(f"q*s = {self.q}*{self.s} = {self.q * self.s} ifmap words exceed "
                             f"ifmap_spad_depth = {config.ifmap_spad_depth}")
        if self.p > config.psum_spad_depth:
            raise ValueError(f"p = {self.p} psums exceed psum_spad_depth = {config.psum_spad_depth}")
        for name in ("f", "rows"):
            if getattr(self, name) > config.max_dim:
                raise ValueError(f"{name} = {getattr(self, name)} exceeds {config.max_dim}, "
                                 f"the largest value of dim_width = {config.dim_width} bits")
        return self


PRESETS = {
    # Eyeriss v1 (JSSC 2017): 12 x 14 PEs, 16-bit operands, spads 224/12/24 words, 108 KiB GLB
    # (27 banks of 512 x 64 b; the chip split it as 25 ifmap/psum banks + 8 KiB of filters).
    # The chip truncated each product to 16 bits; rowstation accumulates exactly, and 48-bit
    # psums hold the worst case of every AlexNet and VGG-16 layer at 16 bits (VGG-16 FC6:
    # 25088 products of 2**30 need 46 bits). The chip's psum networks were 64 bits wide (four
    # 16-bit psums); two lanes of 48-bit psums keep AlexNet's passes off the output network,
    # and a 16-psum output FIFO per PE holds a chain top's whole column of up to 16 filters
    # while the lane's round robin serves the other tops (4 words: CONV5 5.5 % slower). Two
    # ifmap network lanes (the chip's was 16 bits wide) keep CONV3-5's passes over 20-48 rows
    # from waiting for one activation a cycle.
    "eyeriss-v1": AcceleratorConfig(
        array_rows=12, array_cols=14,
        ifmap_width=16, weight_width=16, psum_width=48,
        filter_spad_depth=224, filter_banks=2, filter_noc_width=4, ifmap_spad_depth=12, psum_spad_depth=24, psum_fifo_depth=16,
        glb_banks=27, glb_bank_depth=512, glb_bank_width=64,
        dram_width=64, dram_burst=16, dim_width=12, counter_width=48, psum_noc_lanes=2,
        ifmap_noc_lanes=2,
    ),
    # A small array with 8-bit operands for fast simulation.
    "tiny": AcceleratorConfig(
        array_rows=3, array_cols=4,
        ifmap_width=8, weight_width=8, psum_width=24,
        filter_spad_depth=48, filter_banks=2, filter_noc_width=2, ifmap_spad_depth=12, psum_spad_depth=8, psum_fifo_depth=4,
        glb_banks=4, glb_bank_depth=256, glb_bank_width=32,
        dram_width=32, dram_burst=16, dim_width=8, counter_width=32,
    ),
}


# tiny at 4 and at 16 bits: the demo's precision table compiles one model for all three.
PRESETS["tiny-4"] = PRESETS["tiny"].replace(ifmap_width=4, weight_width=4, psum_width=16)
PRESETS["tiny-16"] = PRESETS["tiny"].replace(ifmap_width=16, weight_width=16, psum_width=40, glb_bank_width=64,
                                             dram_width=64)

# The board tops' presets (rowstation.boards): tiny with addresses as wide as the on-chip memory.
PRESETS["ulx3s"] = PRESETS["tiny"].replace(dram_addr_width=16)        # up to 64 KiB
PRESETS["icebreaker"] = PRESETS["tiny"].replace(dram_addr_width=14)   # 16 KiB
# The ECP5-25F: 7 x 1 PEs of four MAC lanes (28 MACs a cycle in all 28 of its MULT18X18D; four
# weights a filter transfer feed a lane row a cycle), with the register between the filter
# scratchpad and the multipliers (its block RAM has no output register on the way to them).
PRESETS["ulx3s-25f"] = PRESETS["ulx3s"].replace(array_rows=7, array_cols=1, mac_lanes=4, filter_noc_width=4,
                                                weight_register=1)
# The ECP5-85F: 4 x 6 of those PEs (96 MACs a cycle), the largest array of them that routes
# (6 x 6 packs into 71 % of the cells, but its router does not converge).
PRESETS["ulx3s-85f"] = PRESETS["ulx3s-25f"].replace(array_rows=4, array_cols=6)


def preset(name):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}")
    return PRESETS[name]


def read_toml(path, what):
    """The table of TOML file ``path``; a ValueError naming it as ``what`` if it cannot be read."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            return tomllib.load(f)
    except OSError as error:
        raise ValueError(f"cannot read {what} {path}: {error.strerror}")
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{what} {path} is not valid TOML: {error}")


def resolve_config(preset_name=None, config_file=None, overrides=()):
    """The configuration a command runs with: a preset, then a TOML file, then ``--set`` overrides.

    The TOML file holds configuration keys at the top level and may name its base with
    ``preset = "NAME"`` (an explicit ``preset_name`` wins). Without either, ``eyeriss-v1``.
    """
    changes = {}
    if config_file is not None:
        path = Path(config_file)
        table = read_toml(path, "configuration")
        file_preset = table.pop("preset", None)
        if file_preset is not None and not isinstance(file_preset, str):
            raise TypeError(f"preset in {path} must be a string, not {file_preset!r}")
        preset_name = preset_name or file_preset
        names = {field.name for field in fields(AcceleratorConfig)}
        for key, value in table.items():
            if key not in names:
                raise ValueError(f"unknown configuration key {key!r} in {path}; "
                                 f"known keys: {', '.join(sorted(names))}")
            changes[key] = value
    config = preset(preset_name or "eyeriss-v1").replace(**changes)
    return config.with_overrides(overrides)


def c_header(config, name="rowstation"):
    """A C header with the parameters and the instruction set host software needs, so hardware
    and software agree."""
    guard = f"{name.upper()}_CONFIG_H"
    lines = ["/* Generated by rowstation from its configuration: do not edit. */",
             f"#ifndef {guard}", f"#define {guard}", ""]
    values = {**config.to_dict(), "pe_count": config.pe_count, "peak_macs": config.peak_macs, "glb_bytes": config.glb_bytes,
              "max_filter_width": config.max_filter_width}
    for key, value in values.items():
        lines.append(f"#define {name.upper()}_{key.upper()} {value}u")
    from .isa import c_definitions
    from .csr import ControlRegisters
    from . import descriptor

    lines += ["", *c_definitions(config, name.upper()), "", *ControlRegisters(config).c_lines(name.upper()),
              "", *descriptor.c_lines(name.upper()), "", f"#endif /* {guard} */", ""]
    return "\n".join(lines)
