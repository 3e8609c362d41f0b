"""Layer descriptors: what the accelerator reads from memory to run one layer of a network.
The one definition the gateware (:class:`rowstation.hw.accelerator.Accelerator`), the network
compiler, the C header and the documentation use. Pure Python.

A descriptor is :data:`DESCRIPTOR_WORDS` little-endian 32-bit words (:data:`FIELDS`, in
order); a list is descriptors back to back from ``DESC_BASE``. A ``CONV`` descriptor names the
layer's three instruction streams (:mod:`rowstation.gen.isa`: byte address and word count of
each, the streams ending in ``END``) and the tensor addresses its program's addresses are
relative to. If ``stats`` is not zero, the accelerator writes every counter
(:data:`rowstation.gen.isa.COUNTERS`, 8 bytes each, counted since start) there when the layer
ends, so a host reads per-layer counts as differences.
"""

import enum


__all__ = ["Kind", "FIELDS", "NAMES", "DESCRIPTOR_WORDS", "DESCRIPTOR_BYTES", "encode", "decode", "c_lines",
           "markdown"]


class Kind(enum.IntEnum):
    CONV = 1    # a convolution or fully connected layer: its program


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
    ("ifmap", "ifmap base: added to ifmap LOAD addresses (a multiple of the memory word)"),
    ("output", "output base: added to psum LOAD and STORE addresses (a multiple of the memory word)"),
    ("stats", "where to write the counters when the layer ends (a multiple of 8), or 0"),
) + tuple((f"reserved{i}", "zero") for i in range(5))

DESCRIPTOR_WORDS = len(FIELDS)
DESCRIPTOR_BYTES = 4 * DESCRIPTOR_WORDS
NAMES = tuple(name for name, _ in FIELDS)


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
