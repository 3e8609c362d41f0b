"""Global buffer allocation: how a mapping's working set is laid out in the global buffer, and in
what order its passes run so that psums never leave the chip before their last fold.

The buffer holds two kinds of data with different lifetimes:

- **Psum buffers** hold the psums of a *tile*: a run of consecutive pass groups (a *group* is
  the outputs one pass computes). A tile's psums start in its first fold (whose chain bottoms
  take zeros), stay on chip through every fold (chunk) of its outputs, and are stored (the
  bias added on the way) when its last pass ends.
- **Ifmap buffers** together are a cache of ifmap rows (:func:`row_schedule`): a row loaded
  for one pass stays while later passes read it (across tiles too), and a missing row evicts
  one that is not read again, or read furthest ahead, preferring rows the pass in flight does
  not read so the load overlaps it. All padding rows share one slot of zeros.

With two psum buffers, the next tile's passes start while the previous tile's store drains it
(ping-pong); with room for two passes' rows, the next pass's rows load while the current one
computes. Buffers start at bank boundaries where that fits, so the streams of a pass and the
loads beside it seldom meet in a bank; so do the psums of each lane of the psum network. Passes run tile by tile, chunk by chunk within a tile,
group by group within a chunk.
"""

from dataclasses import dataclass
from math import ceil


__all__ = ["Allocation", "allocate", "pass_words", "ZERO_ROW", "RowStep", "row_schedule"]


@dataclass(frozen=True)
class Allocation:
    """Buffer counts and sizes (global buffer words) and the tile size (pass groups)."""

    ifmap_buffers: int
    psum_buffers: int
    ifmap_words: int    # words of one ifmap buffer (at least one pass's rows)
    psum_words: int     # words of one psum buffer
    tile_groups: int    # pass groups whose psums share a psum buffer

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

    Preference: two buffers of each kind (overlap), then two ifmap buffers, then one of each
    (only arrangements of ``mapping.psum_buffers`` psum buffers when it is set); bank-aligned
    before packed. Within the first arrangement that fits, a tile takes as many
    groups as the psum buffers can hold beside one pass's ifmap rows; the psum buffers keep
    what a tile needs and the ifmap row cache the rest.
    """
    c = mapping.config
    lanes_p = c.glb_lanes(c.glb_psum_bits)
    ifmap_words, smallest = pass_words(mapping)
    if ifmap_words + smallest > c.glb_words:
        return None
    for ifmap_buffers, psum_buffers in ((2, 2), (2, 1), (1, 1)):
        if mapping.psum_buffers not in (None, psum_buffers):
            continue
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
            per_group = psum_elements(mapping, max(len(group) for group in mapping.groups))
            groups = max(1, min(len(mapping.groups), psum_words * lanes_p // per_group))
            # The psum buffers keep what a tile needs; the rest goes to the ifmap row cache.
            need = max(smallest, ceil(groups * per_group / lanes_p))
            if aligned:
                need = ceil(need / c.glb_bank_depth) * c.glb_bank_depth
                # Where it fits, a bank more per extra psum network lane: each lane's psums
                # then start at a bank boundary, so the lanes never meet in a bank.
                extra = (c.psum_noc_lanes - 1) * c.glb_bank_depth
                if need + extra <= psum_words:
                    need += extra
            spare = (psum_words - need) * psum_buffers // ifmap_buffers
            if aligned:
                spare -= spare % c.glb_bank_depth
            return Allocation(ifmap_buffers, psum_buffers, size + spare, need, groups)
    if mapping.psum_buffers is None:  # pragma: no cover
        raise AssertionError("one buffer of each kind fits when the largest pass fits")
    return None


#: The key of a padding row in :func:`row_schedule`: every padding row is the same zeros.
ZERO_ROW = "zero"


@dataclass(frozen=True)
class RowStep:
    """What the ifmap row cache does for one pass (:func:`row_schedule`)."""

    slots: dict      # row key -> cache slot, for each row the pass reads
    loads: list      # (row key, slot) brought in before the pass
    wait: int        # the pass that must have finished before those loads start (-1: none)


def row_schedule(pass_rows, slots, ahead=4):
    """The ifmap buffer as a cache of ``slots`` row slots: per pass (``pass_rows``: each
    pass's row keys, :data:`ZERO_ROW` for padding), where its rows are, which it loads and
    which earlier pass the loads wait for.

    A row stays resident while the passes that follow read it. A row that is missing evicts,
    in this order: a row no later pass reads (the longest finished first), else the row read
    again furthest ahead; both first among rows the pass in flight does not read, so the load
    need not wait for it. The loads of a pass also wait for the pass before the load ``ahead``
    loads earlier, so no more than ``ahead`` + 1 loads, or passes the load unit waits for, are
    ever outstanding (each dependency token queue holds :data:`~rowstation.gen.isa.TOKEN_DEPTH`)."""
    uses = {}
    for j, rows in enumerate(pass_rows):
        for row in rows:
            uses.setdefault(row, []).append(j)
    seen = dict.fromkeys(uses, 0)   # per row: its uses up to the current pass
    resident, holder, last_read = {}, [None] * slots, [-1] * slots
    steps, loaded, floor = [], [], -1   # loaded: the passes that load, in order
    for j, rows in enumerate(pass_rows):
        rows = list(dict.fromkeys(rows))
        for row in rows:
            seen[row] += 1
        missing = [row for row in rows if row not in resident]
        if len(rows) > slots:
            raise ValueError(f"a pass reads {len(rows)} ifmap rows, the buffer holds {slots}")

        def victim_key(slot):
            row = holder[slot]
            if row is None:
                return (0, 0, slot)
            later = uses[row][seen[row]] if seen[row] < len(uses[row]) else None
            recent = last_read[slot] >= j - 1   # a load over it waits for the pass in flight
            return (1 + 2 * recent + (later is not None), last_read[slot] if later is None else -later, slot)

        needed = set(rows)
        free = sorted((slot for slot in range(slots) if holder[slot] not in needed), key=victim_key)
        loads, wait = [], -1
        for row, slot in zip(missing, free):
            if holder[slot] is not None:
                del resident[holder[slot]]
                wait = max(wait, last_read[slot])
            holder[slot], resident[row] = row, slot
            loads.append((row, slot))
        if loads:
            if len(loaded) >= ahead:
                wait = max(wait, loaded[-ahead] - 1)
            wait = floor = max(wait, floor)
            loaded.append(j)
        for row in rows:
            last_read[resident[row]] = j
        steps.append(RowStep({row: resident[row] for row in rows}, loads, wait))
    return steps
