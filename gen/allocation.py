"""Global buffer allocation: how a mapping's working set is laid out in the global buffer, and in
what order its passes run so that psums never leave the chip before their last fold.

The buffer holds two kinds of data with different lifetimes:

- **Psum buffers** hold the psums of a *tile*: a run of consecutive pass groups (a *group* is
  the outputs one pass computes). A tile's psums are filled with the bias when it starts, stay
  on chip through every fold (chunk) of its outputs, and are stored when its last pass ends.
- **Ifmap buffers** hold the ifmap rows of an *epoch*: consecutive passes whose rows fit. An
  epoch is loaded (only the padding is zero-filled) before its first pass.

With two buffers of a kind, the next tile's bias fill and the previous tile's store, or the
next epoch's rows, move while the current passes compute (ping-pong). Buffers start at bank
boundaries where that fits, so the streams of a pass and the loads beside it seldom meet in a
bank. Passes run tile by tile, chunk by chunk within a tile, group by group within a chunk.
"""

from dataclasses import dataclass
from math import ceil


__all__ = ["Allocation", "allocate", "pass_words"]


@dataclass(frozen=True)
class Allocation:
    """Buffer counts and sizes (global buffer words) and the tile size (pass groups)."""

    ifmap_buffers: int
    psum_buffers: int
    ifmap_words: int    # words of one ifmap buffer
    psum_words: int     # words of one psum buffer
    tile_groups: int    # pass groups whose psums share a psum buffer

    def ifmap_base(self, index):
        """First word of ifmap buffer ``index``."""
        return index * self.ifmap_words

    def psum_base(self, index):
        """First word of psum buffer ``index``."""
        return self.ifmap_buffers * self.ifmap_words + index * self.psum_words


def ifmap_elements(mapping, rows):
    """Ifmap elements of ``rows`` padded rows (q channels, the images of a pass each)."""
    L = mapping.layer
    return rows * mapping.q * mapping.n * (L.W + 2 * L.P)


def psum_elements(mapping, outputs):
    """Psum elements of ``outputs`` outputs (p filters x F columns x the images of a pass)."""
    L = mapping.layer
    return outputs * mapping.n * mapping.p * L.F


def pass_words(mapping):
    """Words the largest pass needs on its own: (ifmap rows, psums)."""
    c = mapping.config
    rows = mapping.most_rows
    outputs = max(len(group) for group in mapping.groups)
    return (ceil(ifmap_elements(mapping, rows) / c.glb_lanes(c.ifmap_width)),
            ceil(psum_elements(mapping, outputs) / c.glb_lanes(c.glb_psum_bits)))


def allocate(mapping):
    """The allocation of ``mapping``, or None when not even one pass fits the global buffer.

    Preference: two buffers of each kind (overlap), then two ifmap buffers, then one of each;
    bank-aligned before packed. Within the first arrangement that fits, the psum buffers take
    what the ifmap buffers leave, and a tile as many groups as they hold.
    """
    c = mapping.config
    lanes_p = c.glb_lanes(c.glb_psum_bits)
    ifmap_words, smallest = pass_words(mapping)
    if ifmap_words + smallest > c.glb_words:
        return None
    for ifmap_buffers, psum_buffers in ((2, 2), (2, 1), (1, 1)):
        for aligned in (True, False):
            size = ifmap_words
            if aligned:
                size = ceil(size / c.glb_bank_depth) * c.glb_bank_depth
            left = c.glb_words - ifmap_buffers * size
            psum_words = left // psum_buffers
            if aligned:
                psum_words -= psum_words % c.glb_bank_depth
            if psum_words < smallest:
                continue
            groups = max(1, min(len(mapping.groups), psum_words * lanes_p
                                // psum_elements(mapping, mapping.chains_per_pass)))
            if len(mapping.groups) == 1:
                groups = 1
            return Allocation(ifmap_buffers, psum_buffers, size, psum_words, groups)
    raise AssertionError("one buffer of each kind fits when the largest pass fits")  # pragma: no cover
