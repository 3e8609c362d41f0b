"""The controller's instruction set: the one definition that the compiler
(:mod:`rowstation.gen.program`), the controller gateware (:mod:`rowstation.hw.controller`), the
controller model (:mod:`rowstation.sim.controller_model`) and the C header import. Pure Python.

**Words.** A program is 32-bit words. An instruction is an opcode word and its argument words
(:data:`ARGUMENTS`); the opcode word's fields are :data:`FIELDS` (low bit first).

**Units.** The controller runs three instruction queues concurrently (:data:`UNITS`): *load*
(``LOAD``, ``FILL``: external memory or a constant into the global buffer), *execute*
(``WRITE``, ``RUN``: pass settings and passes) and *store* (``STORE``: global buffer to external
memory). ``END`` waits until every queue is empty and every unit idle, then signals done.

**Dependency tokens.** Units order their work through four token queues (:class:`Token`), each
with one producing and one consuming unit (decoupled access-execute, as in VTA). An instruction
*pops* the tokens of its ``pop`` mask before it starts (waiting while one is missing) and
*pushes* those of its ``push`` mask when it has finished: for ``RUN``, when the pass's last
psum is in the global buffer.

**Registers.** ``WRITE reg, value`` sets a *shadow* register; a ``RUN`` commits the shadows of
its pass in two phases (:data:`PHASES`): the *filter* phase when the filter stream is free (so
the next pass's weights stream while the current pass computes), the *data* phase when the
previous pass has finished. Plain registers keep their shadow value until rewritten; *tables*
(entries read by index) are double-buffered, each commit swapping the halves, so a pass reads
the entries written since the RUN before it and, where none was, those of the pass two before.
"""

import enum
import functools


__all__ = ["Opcode", "Region", "Token", "UNITS", "ARGUMENTS", "FIELDS", "WORD_WIDTH",
           "TOKEN_PRODUCER", "TOKEN_CONSUMER", "TOKEN_DEPTH", "POST_FIELDS", "STORE_FIELDS", "encode", "decode",
           "store_operand", "decode_store", "LOAD_FIELDS", "load_operand", "decode_load", "LOOPS", "PE_SETTINGS",
           "NETWORKS", "PHASES", "RegisterBlock", "RegisterMap", "PE_EVENTS", "ARRAY_EVENTS",
           "CORE_EVENTS", "COUNTERS", "c_definitions"]


WORD_WIDTH = 32


class Opcode(enum.IntEnum):
    END = 0
    WRITE = 1   # WRITE reg; value
    LOAD = 2    # LOAD region, pad, rows; glb, dram, count, stride
    STORE = 3   # STORE post, row; glb, dram, count, glb_step, stride, bias_lo, bias_hi
    FILL = 4    # FILL region; glb, count, value_lo, value_hi
    RUN = 5     # RUN: one pass with the committed registers


class Region(enum.IntEnum):
    """Global buffer regions (element widths) of LOAD and FILL."""
    IFMAP = 0
    PSUM = 1


class Token(enum.IntEnum):
    """Dependency token queues: producer to consumer."""
    LOAD_EXECUTE = 0    # the rows a pass loads are in the global buffer
    EXECUTE_LOAD = 1    # a pass that read rows the next loads overwrite has finished
    EXECUTE_STORE = 2   # a tile's psums are final
    STORE_LOAD = 3      # a tile's psums are in external memory: its buffer may be refilled


#: Tokens a queue holds at most; a program never keeps more outstanding (the compiler lets
#: loads run at most four ahead, :func:`rowstation.gen.allocation.row_schedule`).
TOKEN_DEPTH = 7

#: The unit that runs each opcode (END is the front end's barrier).
UNITS = {Opcode.LOAD: "load", Opcode.FILL: "load", Opcode.WRITE: "execute", Opcode.RUN: "execute",
         Opcode.STORE: "store"}
TOKEN_PRODUCER = {Token.LOAD_EXECUTE: "load", Token.EXECUTE_LOAD: "execute",
                  Token.EXECUTE_STORE: "execute", Token.STORE_LOAD: "store"}
TOKEN_CONSUMER = {Token.LOAD_EXECUTE: "execute", Token.EXECUTE_LOAD: "load",
                  Token.EXECUTE_STORE: "store", Token.STORE_LOAD: "load"}

#: Argument words following each opcode word.
ARGUMENTS = {Opcode.END: 0, Opcode.WRITE: 1, Opcode.LOAD: 4, Opcode.STORE: 7, Opcode.FILL: 4,
             Opcode.RUN: 0}

#: The post-processing of the psums a STORE writes out: each psum plus the bias is written
#: exactly (``requantize`` clear), or requantised to the activation width: rounding right shift
#: by ``shift`` (round half up), ReLU if ``relu``, then saturation
#: (:func:`rowstation.sim.golden.requantize`).
POST_FIELDS = (("shift", 6), ("relu", 1), ("requantize", 1))

#: Fields of a STORE's operand, low bit first: the post-processing, and ``row``. A STORE moves
#: ``count`` psums: with ``row`` 0 one run from ``glb`` in the global buffer to one run from
#: the byte address ``dram`` in external memory; else rows of ``row`` psums, each ``glb_step``
#: elements after the one before in the buffer and ``stride`` bytes after it in external
#: memory (``stride`` 0: the rows continue one another there), so one STORE writes a filter's
#: output rows, or one output row of each image, whose psums lie apart in the buffer.
STORE_FIELDS = POST_FIELDS + (("row", 12),)

#: Fields of a LOAD's operand, low bit first: the region, ``pad`` zeros written before and
#: after each run (an ifmap row's padding columns), and ``rows`` runs of ``count`` elements,
#: ``stride`` bytes apart in external memory, each written ``count + 2 * pad`` elements after
#: the one before from ``glb`` (an image's channels of one ifmap row in a row cache slot).
LOAD_FIELDS = (("region", 1), ("pad", 12), ("rows", 7))

#: Fields of an opcode word, low bit first: (name, width).
FIELDS = (("operand", 20), ("push", len(Token)), ("pop", len(Token)), ("opcode", 4))
assert sum(width for _, width in FIELDS) == WORD_WIDTH


def _mask(tokens):
    mask = 0
    for token in tokens:
        mask |= 1 << Token(token)
    return mask


def _pack(fields, values, what=""):
    """``values`` ({name: int}) packed by ``fields`` ((name, width), low bit first)."""
    word, shift = 0, 0
    for name, width in fields:
        if not 0 <= values[name] < 1 << width:
            raise ValueError(f"{what}{name} {values[name]} does not fit {width} bits")
        word |= values[name] << shift
        shift += width
    return word


def _unpack(fields, word):
    values, shift = {}, 0
    for name, width in fields:
        values[name] = word >> shift & ((1 << width) - 1)
        shift += width
    return values


def encode(opcode, operand=0, *, pop=(), push=()):
    """The opcode word of ``opcode`` with ``operand`` and the token sets ``pop``/``push``."""
    return _encode(opcode, operand, tuple(pop), tuple(push))


@functools.lru_cache(maxsize=65536)
def _encode(opcode, operand, pop, push):
    opcode = Opcode(opcode)
    word = _pack(FIELDS, {"operand": operand, "push": _mask(push), "pop": _mask(pop), "opcode": opcode})
    for token in (*pop, *push):
        unit = UNITS.get(opcode)
        role = TOKEN_CONSUMER if token in pop else TOKEN_PRODUCER
        if role[Token(token)] != unit:
            raise ValueError(f"{opcode.name} runs on the {unit} unit, which cannot "
                             f"{'pop' if token in pop else 'push'} {Token(token).name}")
    return word


def decode(word):
    """``{field: value}`` of an opcode word (the opcode as an int; it may be unknown)."""
    return dict(_decode(word))


@functools.lru_cache(maxsize=65536)
def _decode(word):
    return tuple(_unpack(FIELDS, word).items())


def store_operand(*, row=0, shift=0, relu=False, requantize=False):
    """The STORE operand of a post-processing setting and buffer rows of ``row`` psums."""
    return _pack(STORE_FIELDS, {"shift": shift, "relu": int(relu), "requantize": int(requantize), "row": row},
                 "STORE ")


def decode_store(operand):
    """``{field: value}`` of a STORE operand."""
    return _unpack(STORE_FIELDS, operand)


def load_operand(region, pad=0, rows=1):
    """The LOAD operand of ``region``: ``rows`` runs (at least one) with ``pad`` zeros around
    each."""
    if rows < 1:
        raise ValueError(f"LOAD rows {rows} must be at least 1")
    return _pack(LOAD_FIELDS, {"region": int(region), "pad": pad, "rows": rows}, "LOAD ")


def decode_load(operand):
    """``{field: value}`` of a LOAD operand."""
    return _unpack(LOAD_FIELDS, operand)


#: Loop levels of each stream, outermost first; "table" walks that stream's table entries.
LOOPS = {
    "ifmap": ("n", "f", "s", "table", "c"),     # GLB ifmap rows -> ifmap network
    "psum": ("n", "x", "table", "m"),           # GLB psums -> chain bottoms
    "store": ("n", "x", "m"),                   # chain tops -> GLB psums, per source PE
}

#: The PE setting of a pass (:class:`rowstation.gen.config.PEConfig`, but for its ``lanes``,
#: which the PEs are built with), in register order.
PE_SETTINGS = ("s", "u", "p", "q", "f", "rows", "accumulate")

#: The input networks, in the order of their ID registers.
NETWORKS = ("filt", "ifmap", "psum")

#: Register commit phases of a RUN.
PHASES = ("filter", "data")


class RegisterBlock:
    """``count`` registers named ``name``, committed in ``phase``; a ``table`` is read by index
    (double-buffered, see the module documentation)."""

    def __init__(self, name, count, phase, *, table=False, address=0):
        self.name, self.count, self.phase, self.table, self.address = name, count, phase, table, address

    def __repr__(self):
        return (f"RegisterBlock({self.name!r}, {self.count}, {self.phase!r}, table={self.table}, "
                f"address={self.address})")


class RegisterMap:
    """Addresses of the controller's registers, built from the configuration.

    Filter phase: ``cfg_<setting>`` (:data:`PE_SETTINGS`); ``filt_row_ids[row]``,
    ``filt_col_ids[pe]``; the filter stream: ``filt_entries`` runs of ``filt_words`` weights,
    run ``i`` read from the external memory byte address ``filt_base[i]`` (a multiple of
    ``filter_noc_width`` weights into its word) and tagged ``filt_tag[i]``. Data phase: the same
    IDs of the ifmap and psum networks; ``chain[pe]`` (bit 0 chain bottom, bit 1 chain top,
    bit 2 the PE keeps its filters for the next pass, which then streams it none); the ifmap,
    psum and store loop nests and tables (``store_base[pe]`` per source PE); ``psum_zero``: the psum stream
    carries zeros instead of reading the global buffer (a first fold); ``store_total``, the
    psums the pass returns. PE ``pe`` is ``row * array_cols + col``; a tag is ``row | col <<
    row_id_width``. The psum stream runs once per lane of the psum network
    (``psum_noc_lanes``): lane ``l``'s loop registers are ``psum_count[l * levels + k]`` and
    ``psum_step[...]``, its table entries ``psum_base[l * psum_lane_pes + i]`` and ``psum_tag``
    (the chain bottoms in the PE columns of the lane). The ifmap stream likewise runs once per
    lane of the ifmap network (``ifmap_noc_lanes``), each lane with ``ceil(pe_count / lanes)``
    table entries: its share of the pass's rows.
    """

    def __init__(self, config):
        self.config = config
        n, rows = config.pe_count, config.array_rows
        specs = [(f"cfg_{name}", 1, "filter", False) for name in PE_SETTINGS]
        for net in NETWORKS:
            phase = "filter" if net == "filt" else "data"
            specs += [(f"{net}_row_ids", rows, phase, False), (f"{net}_col_ids", n, phase, False)]
        specs.append(("chain", n, "data", False))
        specs += [("filt_entries", 1, "filter", False), ("filt_words", 1, "filter", False),
                  ("filt_base", n, "filter", True), ("filt_tag", n, "filter", True)]
        for stream, levels in LOOPS.items():
            lanes = self.lanes(stream)
            specs += [(f"{stream}_count", len(levels) * lanes, "data", False),
                      (f"{stream}_step", len(levels) * lanes, "data", False)]
            if "table" in levels:
                entries = self.lane_entries(stream) * lanes
                specs += [(f"{stream}_base", entries, "data", True), (f"{stream}_tag", entries, "data", True)]
        specs += [("store_base", n, "data", True), ("psum_zero", 1, "data", False),
                  ("store_total", 1, "data", False)]
        self.blocks, address = {}, 0
        for name, count, phase, table in specs:
            self.blocks[name] = RegisterBlock(name, count, phase, table=table, address=address)
            address += count
        self.size = address
        operand = dict(FIELDS)["operand"]
        if self.size > 1 << operand:
            raise ValueError(f"the register map has {self.size} registers, more than the "
                             f"{1 << operand} a WRITE operand addresses")

    def lanes(self, stream):
        """Copies of ``stream``'s loop registers: one per lane of its network."""
        return self.config.network_lanes(stream)

    def lane_entries(self, stream):
        """Table entries of one lane of ``stream``: the PEs of the largest psum network lane,
        an ifmap network lane's share of a row per PE."""
        c = self.config
        return c.psum_lane_pes if stream == "psum" else c.ifmap_lane_rows(c.pe_count)

    def lane_base(self, stream, lane):
        """(first ``<stream>_count``/``_step`` register, first table entry) of lane ``lane``."""
        return lane * len(LOOPS[stream]), lane * self.lane_entries(stream)

    def address(self, name, index=0):
        block = self.blocks[name]
        if not 0 <= index < block.count:
            raise IndexError(f"register {name}[{index}] out of range (count {block.count})")
        return block.address + index

    def locate(self, address):
        """(block, index) of a register address, or None."""
        for block in self.blocks.values():
            if block.address <= address < block.address + block.count:
                return block, address - block.address
        return None


#: Events each PE strobes (summed over the array).
PE_EVENTS = ("mac", "gated_mac", "filter_read", "filter_write", "ifmap_read", "ifmap_write",
             "psum_read", "psum_write")

#: Counters of the array beyond its PEs' events: cycles since ``clear``, PE cycles spent in a
#: pass (``active_pe``), and words each network carried (a multicast word counts once).
ARRAY_EVENTS = ("cycles", "active_pe") + tuple(f"{net}_transfers" for net in NETWORKS) \
    + ("opsum_transfers",)

#: Words crossing the external memory boundary and the global buffer's ports, program words,
#: and passes run.
CORE_EVENTS = ("dram_reads", "dram_writes", "glb_reads", "glb_writes", "program_words", "passes")

#: Every counter of the core, in port order.
COUNTERS = PE_EVENTS + ARRAY_EVENTS + CORE_EVENTS


def c_definitions(config, prefix):
    """C ``#define`` lines of the instruction set for ``config``: opcodes, field positions,
    tokens, STORE and LOAD operand fields, and the register map's blocks (first address, entries)."""
    lines = [f"/* Instruction set ({__name__}) */"]
    lines += [f"#define {prefix}_OP_{op.name} {int(op)}u" for op in Opcode]
    lines += [f"#define {prefix}_ARGS_{op.name} {count}u" for op, count in ARGUMENTS.items()]
    for group, fields in (("FIELD", FIELDS), ("STORE", STORE_FIELDS), ("LOAD", LOAD_FIELDS)):
        shift = 0
        for name, width in fields:
            lines += [f"#define {prefix}_{group}_{name.upper()}_SHIFT {shift}u",
                      f"#define {prefix}_{group}_{name.upper()}_WIDTH {width}u"]
            shift += width
    lines += [f"#define {prefix}_TOKEN_{token.name} {int(token)}u" for token in Token]
    lines += [f"#define {prefix}_REGION_{region.name} {int(region)}u" for region in Region]
    for block in RegisterMap(config).blocks.values():
        lines += [f"#define {prefix}_REG_{block.name.upper()} {block.address}u",
                  f"#define {prefix}_REG_{block.name.upper()}_ENTRIES {block.count}u"]
    return lines
