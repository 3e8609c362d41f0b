"""Layer descriptors: what the accelerator reads from memory to run one layer of a network.
The one definition the gateware (:class:`rowstation.hw.accelerator.Accelerator`), the network
compiler, the C header and the documentation use. Pure Python.

A descriptor is :data:`DESCRIPTOR_WORDS` little-endian 32-bit words (:data:`FIELDS`, in
order); a list is descriptors back to back from ``DESC_BASE``. A ``CONV`` descriptor names the
layer's three instruction streams (:mod:`rowstation.gen.isa`: byte address and word count of
each, the streams ending in ``END``) and the tensor addresses its program's addresses are
relative to; its ``pool_*`` words are zero. A ``MAXPOOL`` descriptor has no program (those
words zero): it pools ``ifmap`` into ``output`` (:class:`rowstation.hw.pool.MaxPooler`) as its
``pool_*`` words say. If ``stats`` is not zero, the accelerator writes every counter
(:data:`rowstation.gen.isa.COUNTERS`, 8 bytes each, counted since start) there when the layer
ends, so a host reads per-layer counts as differences.
"""

import enum


__all__ = ["MAX_WINDOW", "Kind", "FIELDS", "NAMES", "ADDRESSES", "DESCRIPTOR_WORDS", "DESCRIPTOR_BYTES", "encode", "decode", "c_lines",
           "markdown"]


#: The largest max pooling window (K) a MAXPOOL descriptor may name.
MAX_WINDOW = 8


class Kind(enum.IntEnum):
    CONV = 1    # a convolution or fully connected layer: its program
    MAXPOOL = 2  # max pooling of the ifmap into the output


#: (name, meaning) of each word, in order.
FIELDS = (
    ("kind", "Kind (other values: error DESCRIPTOR)"),
    ("load_program", "byte address of the load stream (a multiple of 4)"),
    ("load_words", "its words (at least 1: END)"),
    ("execute_program", "byte address of the execute stream"),
    ("execute_words", "its words"),
    ("store_program", "byte address of the store stream"),
    ("store_words", "its words"),
    ("weights", "weights base: added to the filter stream's addresses (a multiple of the memory word)"),
    ("ifmap", "ifmap base: added to ifmap LOAD addresses; MAXPOOL: its input (a multiple of the memory word)"),
    ("output", "output base: added to psum LOAD and STORE addresses; MAXPOOL: its output (likewise)"),
    ("stats", "where to write the counters when the layer ends (a multiple of 8), or 0"),
    ("pool_planes", "MAXPOOL: input planes, N x C"),
    ("pool_width", "MAXPOOL: input row width W (bits 15:0), output row width F (bits 31:16)"),
    ("pool_window", "MAXPOOL: window K (bits 7:0, at most 8), stride U (15:8), output rows E per plane (31:16)"),
    ("pool_row_step", "MAXPOOL: bytes from one output row's first input row to the next's, U x W x element"),
    ("pool_plane_step", "MAXPOOL: bytes from one input plane to the next, H x W x element"),
)

DESCRIPTOR_WORDS = len(FIELDS)
DESCRIPTOR_BYTES = 4 * DESCRIPTOR_WORDS
NAMES = tuple(name for name, _ in FIELDS)
#: The fields bounded by the memory's size, ``dram_addr_width`` bits (beyond: error ADDRESS): byte
#: addresses, byte steps, and planes (of at least a byte each).
ADDRESSES = ("load_program", "execute_program", "store_program", "weights", "ifmap", "output", "stats",
             "pool_planes", "pool_row_step", "pool_plane_step")


def encode(**values):
    """The words of a descriptor; unnamed fields are zero."""
    unknown = set(values) - set(NAMES)
    if unknown:
        raise ValueError(f"descriptor fields {sorted(unknown)} are not among {NAMES}")
    words = [int(values.get(name, 0)) for name in NAMES]
    for name, word in zip(NAMES, words):
        if not 0 <= word < 1 << 32:
            raise ValueError(f"descriptor field {name} = {word} does not fit 32 bits")
    return words


def decode(words):
    return dict(zip(NAMES, words))


def c_lines(prefix):
    lines = [f"/* Layer descriptors ({__name__}): 32-bit word indices */",
             f"#define {prefix}_DESCRIPTOR_WORDS {DESCRIPTOR_WORDS}u"]
    lines += [f"#define {prefix}_DESC_{name.upper()} {i}u" for i, name in enumerate(NAMES)
              if not name.startswith("reserved")]
    lines += [f"#define {prefix}_KIND_{kind.name} {int(kind)}u" for kind in Kind]
    return lines


def markdown():
    rows = ["| Word | Byte | Field | Meaning |", "|---|---|---|---|"]
    rows += [f"| {i} | {4 * i} | {name} | {meaning} |" for i, (name, meaning) in enumerate(FIELDS)]
    return "\n".join(rows)
