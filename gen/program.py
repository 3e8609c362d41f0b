"""The controller's program for a layer: what the mapper decided, as three instruction streams
(one per unit of the controller, see :mod:`rowstation.gen.isa`) that the hardware controller
(:mod:`rowstation.hw.controller`) runs concurrently without host help.

**Passes.** :func:`pass_plans` turns a mapping into per-pass plans: which PE computes which
term of which output (and so holds which filter block), the multicast IDs and chain links, and
the stream tables (ifmap rows, chain bottoms) in the order the networks carry them. The filter
stream depends on the pass before as well: a PE that held the same filter block there keeps it
(:func:`kept_filters`), and :func:`filter_table` streams the blocks of the others.

**Address generators.** Each stream is a loop nest walked by an address generator: per level a
count and a *step* (what the address gains when that level advances and the inner ones wrap);
one level may walk a table of (base address, tag) entries. :data:`~rowstation.gen.isa.LOOPS`
gives each stream's levels.

**Memory.** External memory is byte-addressed (:mod:`rowstation.hw.memory`); each tensor lies
packed at its elements' memory width from the byte address a :class:`DramLayout` gives: the
ifmap (N, C, H, W) and the output (N, M, E, F, requantised or the exact accumulation)
row-major, the weights in filter blocks, each block one run in the order the filter network
carries it (:func:`weight_order`; the host arranges them so). The global buffer holds a cache
of ifmap rows and psums per *tile* (:mod:`rowstation.gen.allocation`): the load stream loads
the rows a pass is missing (padding rows are one slot of zeros), the execute stream runs the
passes (a first fold's chain bottoms take zeros, not buffer reads), and the store stream writes
a tile's psums out after its last fold, adding the bias and requantising on the way;
dependency tokens let each run ahead as far as the buffers allow.
"""

import bisect
import itertools
from dataclasses import dataclass, field

import numpy as np

from .allocation import ZERO_ROW, Allocation, row_schedule
from .isa import ARGUMENTS, LOAD_FIELDS, NETWORKS, PE_SETTINGS, STORE_FIELDS, UNITS, WORD_WIDTH, Opcode, Region, \
    RegisterMap, Token, encode, load_operand, store_operand


__all__ = ["PassPlan", "pass_plans", "filter_table", "kept_filters", "DramLayout", "filter_blocks", "filter_stride", "filter_block",
           "weight_order", "words_spanned", "stored_psum_bits", "ifmap_lanes", "load_bound", "Program",
           "compile_layer"]


@dataclass
class PassPlan:
    """One pass: PE assignment, IDs, chain links and stream tables, in network order."""

    assign: dict                  # (row, col) -> (output, term)
    bottoms: list                 # [((row, col), output index)] in psum feed order
    tops: dict                    # (row, col) of a chain top -> output index
    jobs: list                    # the mapping's (slot, output index, chunk) of this pass
    ids: dict = field(default_factory=dict)   # ifmap, psum -> (row_ids, col_ids[row][col])
    chain_bottom: list = None
    chain_top: list = None
    filter_keys: dict = None      # (row, col) -> (g, mb, cb, r, sb), the filter block of each PE
    ifmap_rows: list = None       # [(g, cb, padded row, sb)], the column tag is the index


def pass_plans(mapping):
    """The :class:`PassPlan` of every pass of ``mapping`` (Row 0 is the top of the array)."""
    c, L = mapping.config, mapping.layer
    unused = c.unused_col_id
    rows, cols = range(c.array_rows), range(c.array_cols)
    grid = [[(r, col) for col in cols] for r in rows]
    plans = []
    for jobs in mapping.passes:
        assign, bottoms, tops = {}, [], {}
        for slot, o, k in jobs:
            col, base = mapping.slot_position(slot)
            terms = mapping.chunk_terms(k)
            for t, term in enumerate(terms):
                assign[(base + mapping.chain - 1 - t, col)] = (mapping.outputs[o], term)
            bottoms.append(((base + mapping.chain - 1, col), o))
            tops[(base + mapping.chain - len(terms), col)] = o
        ifmap_keys = {}
        ifmap_ids = [[unused for _ in cols] for _ in rows]
        for (r, col), ((g, mb, e), (cb, rr, sb)) in sorted(assign.items()):
            ifmap_ids[r][col] = ifmap_keys.setdefault((g, cb, e * L.U + rr, sb), len(ifmap_keys))
        bottom_pes = {pe for pe, _ in bottoms}
        plan = PassPlan(assign, bottoms, tops, jobs)
        plan.filter_keys = {pe: (g, mb, cb, rr, sb) for pe, ((g, mb, _), (cb, rr, sb)) in assign.items()}
        plan.ids = {
            "ifmap": ([0 for _ in rows], ifmap_ids),
            "psum": (list(rows), [[pe[1] if pe in bottom_pes else unused for pe in row] for row in grid]),
        }
        plan.chain_bottom = [[int(pe in bottom_pes or pe not in assign) for pe in row] for row in grid]
        plan.chain_top = [[int(pe in tops or pe not in assign) for pe in row] for row in grid]
        plan.ifmap_rows = list(ifmap_keys)
        plans.append(plan)
    return plans


def filter_table(config, keys):
    """The filter stream that gives each PE of ``keys`` ((row, col) -> filter block key) its
    block: ([(row, col tag, key)] in stream order, each block once per array row, multicast to
    the PEs of the row that hold it), and the filter network's column IDs (unused elsewhere)."""
    c = config
    blocks = [{} for _ in range(c.array_rows)]
    col_ids = [[c.unused_col_id] * c.array_cols for _ in range(c.array_rows)]
    for (r, col), key in sorted(keys.items()):
        col_ids[r][col] = blocks[r].setdefault(key, len(blocks[r]))
    return [(r, kid, key) for r in range(c.array_rows) for key, kid in blocks[r].items()], col_ids


def kept_filters(before, after):
    """The PEs that keep their filters from a pass to the next one: those holding the same
    filter block in both (``filter_keys`` of each)."""
    return {pe for pe, key in after.items() if before.get(pe) == key}


def _steps(counts, strides):
    """Per level: the address change when it advances and every inner level wraps."""
    return [strides[k] - sum((counts[j] - 1) * strides[j] for j in range(k + 1, len(counts)))
            for k in range(len(counts))]


@dataclass(frozen=True)
class DramLayout:
    """Byte addresses of the layer's tensors in external memory, and their elements' bytes."""

    weights: int
    ifmap: int
    output: int
    end: int                 # the first byte after the output
    weight_bytes: int
    ifmap_bytes: int
    output_bytes: int

    @classmethod
    def packed(cls, mapping, base=0, *, requantized=False):
        """Weights (arranged for ``mapping``, :func:`weight_order`), ifmap and output one
        after the other from ``base``, each from a word boundary; the output at the
        activation's memory width if ``requantized``, else at the psum's (the exact
        accumulation)."""
        config, L = mapping.config, mapping.layer
        word = config.dram_width // 8
        sizes = [config.memory_width(width) // 8 for width in
                 (config.weight_width, config.ifmap_width,
                  config.ifmap_width if requantized else config.psum_width)]
        bases, at = [], base
        for count, size in zip((filter_blocks(mapping) * filter_stride(mapping), L.N * L.C * L.H * L.W,
                                L.N * L.M * L.E * L.F), sizes):
            at = -(-at // word) * word
            bases.append(at)
            at += count * size
        return cls(*bases, at, *sizes)


def _block_counts(mapping):
    m, L = mapping, mapping.layer
    return L.G, (L.M // L.G) // m.p, (L.C // L.G) // m.q, L.R, L.S // m.seg


def filter_blocks(mapping):
    """Filter blocks of the layer: the p x q x seg weights a PE holds in a pass."""
    total = 1
    for count in _block_counts(mapping):
        total *= count
    return total


def filter_stride(mapping):
    """Elements from one filter block to the next in external memory: its weights, rounded up
    to a whole filter network transfer so that every block starts a transfer."""
    return mapping.filter_transfers * mapping.config.filter_noc_width


def filter_block(mapping, key):
    """Index of the filter block ``key`` (g, mb, cb, r, sb) in external memory, where the
    weights lie block after block (:func:`weight_order`)."""
    index = 0
    for value, count in zip(key, _block_counts(mapping)):
        index = index * count + value
    return index


def _filter_address(mapping, dram, key):
    """Byte address of filter block ``key`` in external memory."""
    return dram.weights + filter_block(mapping, key) * filter_stride(mapping) * dram.weight_bytes


def weight_order(mapping):
    """Flat indices into the weights (M, C/G, R, S) in the order external memory holds them
    (None where it holds a zero): the filter blocks of :func:`filter_block` one after another,
    :func:`filter_stride` apart, each in the order the filter network carries it (filter row
    tap, channel, filter; the filters padded to whole rows of MAC lanes), so each block is one
    run."""
    m, L = mapping, mapping.layer
    Cg = L.C // L.G
    pe = m.pe_config
    padding = [None] * (filter_stride(m) - pe.filter_words)
    order = []
    for g, mb, cb, rr, sb in itertools.product(*(range(count) for count in _block_counts(m))):
        m0 = m.first_filter((g, mb, 0))
        order += [(((m0 + f) * Cg + cb * m.q + ch) * L.R + rr) * L.S + sb * m.seg + s if f < m.p else None
                  for s in range(m.seg) for ch in range(m.q) for f in range(pe.lane_rows * pe.lanes)] + padding
    return order


def arranged_weights(mapping, w):
    """The weights ``w`` (M, C/G, R, S) in external memory order (:func:`weight_order`), zeros
    in the padding."""
    order = np.array([-1 if i is None else i for i in weight_order(mapping)], dtype=np.int64)
    return np.where(order < 0, 0, np.asarray(w).ravel()[np.maximum(order, 0)])


_TYPES = {1: "<i1", 2: "<i2", 4: "<i4", 8: "<i8"}


def element_bytes(values, size):
    """Little-endian bytes of ``values`` as signed ``size``-byte elements (as external memory
    holds them)."""
    return np.asarray(values, dtype=np.int64).ravel().astype(_TYPES[size]).tobytes()


def read_elements(memory, addr, count, size):
    """``count`` signed elements of ``size`` bytes from byte ``addr`` of ``memory`` (bytes or uint8)."""
    return np.frombuffer(memory, dtype=np.uint8)[addr:addr + count * size].view(_TYPES[size]).astype(np.int64)


def write_elements(memory, addr, values, size):
    """``values`` into ``memory`` (a uint8 array) from byte ``addr``."""
    data = element_bytes(values, size)
    memory[addr:addr + len(data)] = np.frombuffer(data, dtype=np.uint8)


def words_spanned(addr, count, size, word):
    """External memory words that ``count`` elements of ``size`` bytes from ``addr`` touch."""
    return (addr + count * size - 1) // word - addr // word + 1 if count else 0


@dataclass
class Program:
    streams: dict        # unit ("load", "execute", "store") -> 32-bit words
    layout: DramLayout
    allocation: Allocation
    epochs: int          # passes that load ifmap rows first (each starts an epoch of resident rows)
    tiles: int
    dram_reads: int      # external memory words the LOADs and the filter streams read
    dram_writes: int     # external memory words the STOREs write
    filter_entries: list  # per pass run, the filter blocks its stream carries
    filter_loads: int    # filter blocks the PEs load in all (a PE that keeps its filters loads none)
    bank_reads: list     # per pass run, the most reads its streams make in one buffer bank
    bank_writes: list    # per pass run, the most psum writes its chain tops make in one buffer bank


class _Writer:
    """Emits the units' instructions; plain registers only where the value changes, table
    entries only where the half of the double-buffered table that the next pass reads holds
    another value (each RUN swaps the halves: a pass reads what was written for it and, where
    nothing was, for the pass two before; a layer starts with both halves unknown)."""

    def __init__(self, regmap):
        self.regmap, self.values, self.blocks = regmap, {}, {}
        self.heads = {}     # register address -> its WRITE word
        self.streams = {unit: [] for unit in ("load", "execute", "store")}
        self.dram_reads = self.dram_writes = 0
        self.halves, self.runs = ({}, {}), 0    # table entries by address, per half

    def op(self, opcode, operand=0, *args, pop=(), push=()):
        assert len(args) == ARGUMENTS[opcode], (opcode, args)
        self.streams[UNITS[opcode]] += [encode(opcode, operand, pop=pop, push=push), *args]
        if opcode == Opcode.RUN:
            self.runs += 1

    def group(self, unit, instructions, pop=(), push=()):
        """Emit ``instructions`` [(opcode, operand, args)]: the first pops ``pop``, the last
        pushes ``push`` (an empty group that carries tokens is one instruction of no words)."""
        if not instructions and (pop or push):
            empty = {"load": (Opcode.FILL, Region.IFMAP, (0, 0, 0, 0)),
                     "store": (Opcode.STORE, 0, (0, 0, 0, 0, 0, 0))}
            instructions = [empty[unit]]
        last = len(instructions) - 1
        for i, (opcode, operand, args) in enumerate(instructions):
            self.op(opcode, operand, *args, pop=pop if i == 0 else (), push=push if i == last else ())

    def write_block(self, name, values):
        """``values`` into the plain registers ``name[0..]``, skipped at once when unchanged."""
        if self.blocks.get(name) != values:
            self.blocks[name] = values
            for index, value in enumerate(values):
                self.write(name, value, index)

    def write(self, name, value, index=0):
        address = self.regmap.address(name, index)
        value &= 0xFFFF_FFFF
        known = self.halves[self.runs % 2] if self.regmap.blocks[name].table else self.values
        if known.get(address) != value:
            known[address] = value
            head = self.heads.get(address)
            if head is None:
                head = self.heads[address] = encode(Opcode.WRITE, address)
            self.streams["execute"] += (head, value)


def _bank_accesses(config, reads, writes):
    """The most element reads and the most writes that one global buffer bank serves for
    ``reads`` and ``writes``: runs of elements [(first, count, element bits, repeats, stride)],
    each repeated ``repeats`` times ``stride`` elements apart. A bank reads one element a cycle
    and writes one, whichever port asks (:class:`rowstation.hw.glb.GlobalBuffer`)."""
    most = []
    for runs in (reads, writes):
        banks = {}
        for first, count, bits, repeats, stride in runs:
            span = config.glb_lanes(bits) * config.glb_bank_depth    # elements a bank holds
            bank = first // span
            if (first + (repeats - 1) * stride + count - 1) // span == bank:
                banks[bank] = banks.get(bank, 0) + repeats * count
                continue
            for repeat in range(repeats):
                at, left = first + repeat * stride, count
                while left:
                    bank = at // span
                    take = min(left, (bank + 1) * span - at)
                    banks[bank] = banks.get(bank, 0) + take
                    at, left = at + take, left - take
        most.append(max(banks.values(), default=0))
    return tuple(most)


def _strided(loads, pad):
    """``loads`` [(glb, dram, count)] as LOADs of several rows: (glb, dram, count, rows,
    stride) for each run of loads of the same count, each written right after the one before
    (with its ``pad`` zeros on both sides) and read the same ``stride`` bytes further on."""
    most = (1 << dict(LOAD_FIELDS)["rows"]) - 1
    strided = []
    for glb, addr, count in loads:
        if strided:
            glb0, addr0, count0, rows, stride = strided[-1]
            if (count == count0 and rows < most and glb == glb0 + rows * (count + 2 * pad)
                    and addr > addr0 and (rows == 1 or addr == addr0 + rows * stride)):
                strided[-1] = (glb0, addr0, count0, rows + 1, addr - addr0 if rows == 1 else stride)
                continue
        strided.append((glb, addr, count, 1, 0))
    return strided


def _merged(transfers, size=1):
    """Consecutive (glb, dram, count, *rest) transfers joined where both addresses continue
    (``dram`` in bytes, elements of ``size`` bytes) and the rest (e.g. a bias) is the same."""
    out = []
    for glb, dram, count, *rest in transfers:
        last = out[-1] if out else None
        if last and last[0] + last[2] == glb and last[1] + last[2] * size == dram and list(last[3:]) == rest:
            out[-1] = (last[0], last[1], last[2] + count, *rest)
        elif count:
            out.append((glb, dram, count, *rest))
    return out


def _stores(rows, count, bias, size, word):
    """A tile's STOREs (glb, dram, count, row, glb_step, stride, bias) of its ``rows`` of
    ``count`` psums each (glb, dram, filter, image, e): a filter's rows taken in turn, in
    external memory order (an image's rows, which continue one another there) or image by image
    (one row of each), whichever moves fewer bytes (the STOREs' own and the words they write,
    ``word`` bytes each)."""
    rows = [(glb, dram, f, n, e, 0 if bias is None else int(bias[f]) & (1 << 64) - 1)
            for glb, dram, f, n, e in rows]
    in_memory = _store_runs(sorted(rows, key=lambda r: r[1]), count, size)
    # By image, a STORE per filter and row at least, and no fewer words written than one run
    # per row: better only where the memory order needs more STOREs.
    if len(in_memory) <= len({(f, e) for _, _, f, _, e, _ in rows}):
        return in_memory
    by_image = _store_runs(sorted(rows, key=lambda r: (r[2], r[4], r[3])), count, size)
    store_bytes = (1 + ARGUMENTS[Opcode.STORE]) * WORD_WIDTH // 8
    return min((in_memory, by_image),
               key=lambda stores: sum(store_bytes + _written(store, size, word) * word for store in stores))


def _written(store, size, word):
    """External memory words a STORE (glb, dram, count, row, glb_step, stride, bias) writes."""
    _, addr, count, row, _, stride, _ = store
    runs = [(addr + r * stride, row) for r in range(count // row)] if stride else [(addr, count)]
    return sum(words_spanned(at, n, size, word) for at, n in runs)


def _store_runs(rows, count, size):
    """Consecutive (glb, dram, ..., bias) rows of ``count`` psums (elements of ``size`` bytes in
    external memory) as STOREs (:data:`~rowstation.gen.isa.STORE_FIELDS`): rows with the same
    bias join where both addresses continue (one run, ``row`` 0), or where each lies as far past
    the one before in the buffer (``glb_step``) and in external memory (``stride``; 0 where
    that continues the row before) as the second past the first."""
    most = (1 << dict(STORE_FIELDS)["row"]) - 1
    runs = []   # [glb, dram, row, rows, glb_step, stride, bias]: rows of row psums
    for glb, dram, *_, bias in rows:
        if runs and runs[-1][6] == bias:
            run = runs[-1]
            glb0, dram0, row, taken, step, stride, _ = run
            if taken == 1 and glb == glb0 + row and dram == dram0 + row * size:
                run[2] += count          # one run, longer
                continue
            if row == count and (taken == 1 and count <= most and glb > glb0 and dram > dram0
                                 or taken > 1 and (glb, dram) == (glb0 + taken * step, dram0 + taken * stride)):
                if taken == 1:
                    run[4], run[5] = glb - glb0, dram - dram0
                run[3] += 1
                continue
        runs.append([glb, dram, count, 1, 0, 0, bias])
    return [(glb, dram, row * taken, row if taken > 1 else 0, step, 0 if stride == row * size else stride, bias)
            for glb, dram, row, taken, step, stride, bias in runs]


def _fills(runs):
    """Consecutive (glb, count, value) fills joined where the address continues with the same value."""
    return [(glb, count, value) for glb, _, count, value in _merged((glb, glb, count, value)
                                                                   for glb, count, value in runs)]


def _fill(region, glb, count, value):
    value &= (1 << 64) - 1
    return Opcode.FILL, region, (glb, count, value & 0xFFFF_FFFF, value >> 32)


def _pass_rows(m, jobs):
    """Ifmap rows (g, cb, padded row) of a pass, in first-use order."""
    rows = {}
    for _, o, k in jobs:
        g, _, e = m.outputs[o]
        for cb, rr, _ in m.chunk_terms(k):
            rows.setdefault((g, cb, e * m.layer.U + rr), None)
    return list(rows)


def stored_psum_bits(config, layer, weights=None):
    """Bits a psum of ``layer`` needs at most (any partial sum of an output, bias excluded):
    from the sum of each filter's absolute ``weights`` (nested sequences (M, C/G, R, S)) times
    the largest activation, or, without weights, from the configured widths."""
    L, top = layer, 1 << (config.ifmap_width - 1)       # the largest activation's magnitude
    if weights is None:
        bound = (L.C // L.G) * L.R * L.S * (1 << (config.weight_width - 1)) * top
    else:
        bound = max(sum(abs(int(w)) for channel in f for row in channel for w in row) for f in weights) * top
    return bound.bit_length() + 1


def compile_layer(mapping, bias=None, dram=None, *, shift=None, relu=False, weights=None,
                  check_storage=True):
    """The :class:`Program` that runs ``mapping`` (bias: one int per filter, or None). The
    output is the exact accumulation, or with ``shift`` requantised on chip (rounding shift,
    ``relu``, saturation to ``ifmap_width``) as :func:`rowstation.sim.golden.requantize`.

    When the global buffer holds psums narrower than the accumulator (``glb_psum_width``),
    the layer is refused unless every partial sum fits (:func:`stored_psum_bits`, from the
    ``weights`` if given); ``check_storage=False`` skips that, for a program only modelled."""
    c, L, m = mapping.config, mapping.layer, mapping
    if check_storage and c.glb_psum_bits < c.psum_width:
        need = stored_psum_bits(c, L, weights)
        if need > c.glb_psum_bits:
            source = "from its weights" if weights is not None else "in the worst case of its widths"
            raise ValueError(f"{L} needs {need}-bit psums ({source}), more than the global buffer "
                             f"holds: glb_psum_width = {c.glb_psum_bits}")
    alloc = m.allocation
    if alloc is None:
        raise ValueError(f"no pass of this mapping of {L} fits the global buffer: a pass needs "
                         f"{m.glb_words} words, the buffer holds {c.glb_words}")
    dram = dram or DramLayout.packed(m, requantized=shift is not None)
    c.check_dram_span(dram.end, f"the tensors of {L}")
    word = c.dram_width // 8
    if shift is not None and not (isinstance(shift, int) and 0 <= shift < c.psum_width):
        raise ValueError(f"shift must be between 0 and {c.psum_width - 1} (psum_width - 1), "
                         f"not {shift!r}")
    if bias is not None:
        limit = 1 << (c.psum_width - 1)
        bad = [int(b) for b in bias if not -limit <= int(b) < limit]
        if len(bias) != L.M or bad:
            raise ValueError(f"bias must hold M = {L.M} values in the signed {c.psum_width}-bit "
                             f"range (psum_width), not {len(bias)} values" + (f" with {bad[0]}" if bad else ""))
    post = dict(shift=shift or 0, relu=relu and shift is not None, requantize=shift is not None)
    out = _Writer(RegisterMap(c))
    Cg, Wp = L.C // L.G, L.W + 2 * L.P
    lanes_p = c.glb_lanes(c.glb_psum_bits)
    block_f = m.n * m.p * L.F         # psums of one output: [n][filter][column]
    for name in PE_SETTINGS:
        out.write(f"cfg_{name}", int(getattr(m.pe_config, name)))
    plans = m.plans
    order = list(m.pass_order())

    # Tiles: runs of pass groups sharing a psum buffer.
    tile_of = [g // alloc.tile_groups for g, _ in order]
    tiles = tile_of[-1] + 1
    # Per tile: output -> its psums' offset in the psum buffer (elements), the outputs of each
    # psum network lane together, each lane's from a bank boundary where the buffer has room,
    # so the lanes' psum reads and writes do not meet in a bank.
    lane_of = [{} for _ in range(tiles)]
    for plan, t in zip(plans, tile_of):
        for (_, col), o in plan.tops.items():
            lane_of[t].setdefault(o, c.psum_lane(col))
    bank, room = c.glb_bank_depth * lanes_p, alloc.psum_words * lanes_p
    slots = []
    for lanes in lane_of:
        offsets, at = {}, 0
        for lane in range(c.psum_noc_lanes):
            outputs = [o for o, l in lanes.items() if l == lane]
            rest = sum(1 for l in lanes.values() if l >= lane) * block_f
            if at % bank and -(-at // bank) * bank + rest <= room:
                at = -(-at // bank) * bank
            for o in outputs:
                offsets[o], at = at, at + block_f
        slots.append(offsets)

    cache, schedule, row_size, row_key = _row_cache(m)
    count = len(plans)
    signals = {step.wait for step in schedule if step.loads and step.wait >= 0}   # passes the loads wait for
    syncs = sorted(signals)
    zeroed = set()    # slots that hold the zero row

    plane, size = L.H * L.W, dram.ifmap_bytes
    # A slot's rows [n][channel]: each one's offset in the slot and in the ifmap (elements).
    offsets = [(i * Wp, (n * L.C + qc) * plane)
               for i, (n, qc) in enumerate(itertools.product(range(m.n), range(m.q)))]

    def row_loads(step):
        """The loads (and zero fills) that bring ``step``'s missing rows into their slots."""
        loads, zeros = [], []
        for row, slot in step.loads:
            if row == ZERO_ROW:
                if slot not in zeroed:
                    zeros.append((cache[slot], row_size, 0))
                zeroed.add(slot)
                continue
            zeroed.discard(slot)
            block, g, cb, r = row
            at = cache[slot]
            first = dram.ifmap + (((block * m.n * L.C + g * Cg + cb * m.q) * L.H + r - L.P) * L.W) * size
            loads += [(at + into, first + offset * size, L.W) for into, offset in offsets]
        if not L.P:
            loads = _merged(loads, size)
        out.dram_reads += sum(words_spanned(addr, count, size, word) for _, addr, count in loads)
        return ([_fill(Region.IFMAP, glb, count, 0) for glb, count, _ in _fills(zeros)]
                + [(Opcode.LOAD, load_operand(Region.IFMAP, L.P, rows), (glb, addr, count, stride))
                   for glb, addr, count, rows, stride in _strided(loads, L.P)])

    def psum_rows(t, first_image):
        """(glb, dram, filter, image, row e) of each F-psum row of tile ``t``'s outputs."""
        base = alloc.psum_base(t % alloc.psum_buffers) * lanes_p
        for o, slot in slots[t % tiles].items():
            e, m0 = m.outputs[o][2], m.first_filter(m.outputs[o])
            for n in range(m.n):
                for pf in range(m.p):
                    index = (((first_image + n) * L.M + m0 + pf) * L.E + e) * L.F
                    yield (base + slot + (n * m.p + pf) * L.F, dram.output + index * dram.output_bytes, m0 + pf,
                           n, e)

    # A PE that holds the same filter block in consecutive passes keeps it: the first pass
    # tells it so (chain bit 2) and the second streams it nothing.
    addresses = {}     # filter block -> its byte address in external memory
    total = m.blocks * count
    keys = [plan.filter_keys for plan in plans]
    filter_entries, filter_loads, bank_reads, bank_writes = [], 0, [], []

    # The passes run once per block of images; tiles are numbered across blocks, so the
    # ping-pong psum buffers and their tokens carry on from one block to the next.
    waited = -1
    for i in range(m.blocks * count):
        plan, block, j = plans[i % count], i // count, i % count
        step, t = schedule[i], block * tiles + tile_of[j]
        first_of_tile = j == 0 or tile_of[j - 1] != tile_of[j]
        last_of_tile = j == count - 1 or tile_of[j + 1] != tile_of[j]
        stored = first_of_tile and t >= alloc.psum_buffers       # psums still being stored
        run_pop = []
        if step.loads or stored:
            loads = row_loads(step)
            # The loads start once the passes that read the slots they overwrite are done
            # (one token from each pass that signals the load unit, up to the one waited for).
            pops = max(0, bisect.bisect_right(syncs, step.wait) - bisect.bisect_right(syncs, waited))
            waited = max(waited, step.wait)
            for _ in range(pops - 1):
                out.group("load", [], pop=[Token.EXECUTE_LOAD])
            pop = [Token.EXECUTE_LOAD] if pops else []
            # Only the pass waits for the store (its first fold overwrites the psum buffer),
            # so that token is taken last, after the loads.
            if stored:
                out.group("load", loads, pop=pop)
                out.group("load", [], pop=[Token.STORE_LOAD], push=[Token.LOAD_EXECUTE])
            else:
                out.group("load", loads, pop=pop, push=[Token.LOAD_EXECUTE])
            run_pop = [Token.LOAD_EXECUTE]
        psum_base = alloc.psum_base(t % alloc.psum_buffers) * lanes_p
        row_bases = [cache[step.slots[row_key(block, g, cb, row)]] + sb * m.seg
                     for g, cb, row, sb in plan.ifmap_rows]
        kept = kept_filters(keys[(i - 1) % count], keys[j]) if i else set()
        keep = kept_filters(keys[j], keys[(i + 1) % count]) if i + 1 < total else set()
        filters, filt_col_ids = filter_table(c, {pe: key for pe, key in keys[j].items() if pe not in kept})
        for _, _, key in filters:
            if key not in addresses:
                addresses[key] = _filter_address(m, dram, key)
            out.dram_reads += words_spanned(addresses[key], m.pe_config.filter_words, dram.weight_bytes, word)
        filter_entries.append(len(filters))
        filter_loads += len(keys[j]) - len(kept)
        _write_pass(out, m, plan, [(r, kid, addresses[key]) for r, kid, key in filters], filt_col_ids,
                    keep, row_bases, slots[tile_of[j]], psum_base)
        first_fold = order[j][1] == m.first_chunk(order[j][0])
        out.write("psum_zero", int(first_fold))
        reads, writes = _pass_bank_accesses(m, plan, row_bases, slots[tile_of[j]], psum_base, first_fold=first_fold)
        bank_reads.append(reads)
        bank_writes.append(writes)
        push = [Token.EXECUTE_LOAD] if i in signals else []
        if last_of_tile:
            push.append(Token.EXECUTE_STORE)
        out.op(Opcode.RUN, pop=run_pop, push=push)
        if last_of_tile:
            stores = _stores(psum_rows(t, block * m.n), L.F, bias, dram.output_bytes, word)
            out.dram_writes += sum(_written(store, dram.output_bytes, word) for store in stores)
            out.group("store", [(Opcode.STORE, store_operand(row=row, **post),
                                 (glb, addr, psums, step, stride, b & 0xFFFF_FFFF, b >> 32))
                                for glb, addr, psums, row, step, stride, b in stores], pop=[Token.EXECUTE_STORE],
                      push=[Token.STORE_LOAD] if t + alloc.psum_buffers < m.blocks * tiles else [])
    for unit in out.streams:
        out.streams[unit].append(encode(Opcode.END))
    return Program(out.streams, dram, alloc, sum(1 for step in schedule if step.loads), m.blocks * tiles,
                   out.dram_reads, out.dram_writes, filter_entries, filter_loads, bank_reads, bank_writes)


def _row_cache(m):
    """The ifmap buffers together are a cache of row slots ([n][channel][column] each) over
    every pass of every block of images of mapping ``m`` (:func:`row_schedule`); all padding
    rows share one slot of zeros, and a LOAD writes a row's padding columns as zeros around
    its data. Returns the slots' addresses, the schedule, a slot's elements and the function
    that keys a row (block, g, cb, padded row)."""
    c, L, alloc = m.config, m.layer, m.allocation
    row_size = m.n * m.q * (L.W + 2 * L.P)

    def row_key(block, g, cb, row):
        return ZERO_ROW if not L.P <= row < L.H + L.P else (block, g, cb, row)

    passes = m.passes
    pass_rows = [[row_key(i // len(passes), *row) for row in _pass_rows(m, passes[i % len(passes)])]
                 for i in range(m.blocks * len(passes))]
    cache = _slot_addresses(c, alloc.ifmap_buffers * alloc.ifmap_words * c.glb_lanes(c.ifmap_width) // row_size,
                            row_size)
    return cache, row_schedule(pass_rows, len(cache)), row_size, row_key


def load_bound(mapping):
    """Cycles that no run of ``mapping`` beats, from its row cache alone: the load unit writes
    one element a cycle (each row it loads with its images' channels and padding columns; the
    zero row's fills left out), a pass's loads start once the pass they wait for has
    finished, the pass once they are in, and every pass takes its MAC slots."""
    _, schedule, row_size, _ = _row_cache(mapping)
    slots, written, end = mapping.pe_config.mac_cycles, 0, []
    for step in schedule:
        start = end[-1] if end else 0
        rows = sum(row != ZERO_ROW for row, _ in step.loads)
        if rows:
            written = max(written, end[step.wait] if step.wait >= 0 else 0) + rows * row_size
            start = max(start, written)
        end.append(start + slots)
    return end[-1] if end else 0


def _slot_addresses(config, count, row_size):
    """The global buffer address of each of ``count`` row cache slots of ``row_size``
    elements: in order, or with several ifmap network lanes a bank's worth of slots apart, so
    the rows a pass takes from consecutive slots lie in different banks for the lanes to read
    side by side."""
    places = range(count)
    if config.ifmap_noc_lanes > 1:
        stride = max(1, config.glb_bank_depth * config.glb_lanes(config.ifmap_width) // row_size)
        places = [place for first in range(stride) for place in range(first, count, stride)]
    return [place * row_size for place in places]


def ifmap_lanes(config, row_bases):
    """The rows (indices into ``row_bases``, their global buffer addresses) each lane of the
    ifmap network carries, in index order (the PEs' order): consecutive shares of
    ``ceil(rows / ifmap_noc_lanes)`` in address order, so the lanes read apart in the buffer's
    banks."""
    share = config.ifmap_lane_rows(len(row_bases)) or 1
    order = sorted(range(len(row_bases)), key=row_bases.__getitem__)
    return [sorted(order[lane * share:(lane + 1) * share]) for lane in range(config.ifmap_noc_lanes)]


def _pass_bank_accesses(m, plan, row_bases, slots, psum_base, *, first_fold):
    """:func:`_bank_accesses` of one pass's streams: its ifmap rows (each image and channel a
    run, or a run per output column when the feeder skips columns) and its chain bottoms'
    psums (none in a first fold) read, its chain tops' psums written."""
    c, L = m.config, m.layer
    Wp, block = L.W + 2 * L.P, m.n * m.p * L.F
    # Per row: a run of each image's channels, or with the feeder skipping columns one per column.
    columns = [(0, m.pe_config.row_length)] if L.U <= m.seg else [(f * L.U, m.seg) for f in range(L.F)]
    reads = [(base + at, count, c.ifmap_width, m.n * m.q, Wp) for base in row_bases for at, count in columns]
    if not first_fold:
        reads += [(psum_base + slots[o], block, c.glb_psum_bits, 1, 0) for _, o in plan.bottoms]
    writes = [(psum_base + slots[o], block, c.glb_psum_bits, 1, 0) for o in plan.tops.values()]
    return _bank_accesses(c, reads, writes)


def _write_pass(out, m, plan, filters, filt_col_ids, keep, row_bases, slots, psum_base):
    """The register writes of one pass: ``filters`` [(row, col tag, byte address)] the filter
    stream with the column IDs ``filt_col_ids``, ``keep`` the PEs that keep their filters for
    the next pass, ``slots`` each output's psum offset from ``psum_base``."""
    c, L = m.config, m.layer
    rw = c.row_id_width
    cols, Wp = c.array_cols, L.W + 2 * L.P
    blocks = {}    # plain register blocks: name -> values by index
    for net in NETWORKS:     # filters: row ID = array row, the column IDs of this pass's stream
        if net == "filt" and not filters:
            continue         # no stream: the IDs stay as they are (no register writes)
        row_ids, col_ids = plan.ids[net] if net != "filt" else (range(c.array_rows), filt_col_ids)
        blocks[f"{net}_row_ids"] = tuple(row_ids)
        blocks[f"{net}_col_ids"] = tuple(col for row in col_ids for col in row)
    blocks["chain"] = tuple(plan.chain_bottom[r][col] | plan.chain_top[r][col] << 1 | ((r, col) in keep) << 2
                            for r in range(c.array_rows) for col in range(cols))
    for name, values in blocks.items():
        out.write_block(name, values)

    def loops(stream, counts, strides, entries, lane=0):
        """A loop nest's registers (lane ``lane``'s of the psum stream)."""
        first, table = out.regmap.lane_base(stream, lane)
        for k, step in enumerate(_steps(counts, strides)):
            out.write(f"{stream}_count", counts[k], first + k)
            out.write(f"{stream}_step", step, first + k)
        for i, (base, row, col) in enumerate(entries):
            out.write(f"{stream}_base", base, table + i)
            out.write(f"{stream}_tag", row | col << rw, table + i)

    # Filters: a run of each filter block from external memory (:func:`weight_order`).
    words = m.pe_config.filter_words
    out.write("filt_entries", len(filters))
    out.write("filt_words", words)
    for i, (r, kid, address) in enumerate(filters):
        out.write("filt_base", address, i)
        out.write("filt_tag", r | kid << rw, i)

    # Ifmap rows, column by column across rows so the PEs of a chain advance together, each
    # from its cache slot [n][channel][column] (``row_bases``: per entry of ``plan.ifmap_rows``).
    # Each lane of the ifmap network carries a share of the rows (:func:`ifmap_lanes`).
    if L.U <= m.seg:
        f_count, f_stride, s_count = 1, 0, m.pe_config.row_length
    else:
        f_count, f_stride, s_count = L.F, L.U, m.seg
    s_c, s_n = Wp, m.q * Wp
    for lane, kids in enumerate(ifmap_lanes(c, row_bases)):
        entries = [(row_bases[kid], 0, kid) for kid in kids]
        loops("ifmap", [m.n, f_count, s_count, len(entries), m.q], [s_n, f_stride, 1, 0, s_c], entries, lane)

    # Psums to chain bottoms and back from chain tops: [n][filter][column] per output slot;
    # the psum stream of each lane walks the chain bottoms in its PE columns (none: it idles).
    for lane in range(c.psum_noc_lanes):
        bottoms = [(psum_base + slots[o], r, col) for (r, col), o in plan.bottoms
                   if c.psum_lane(col) == lane]
        loops("psum", [m.n, L.F, len(bottoms), m.p], [m.p * L.F, 1, 0, L.F], bottoms, lane)
    loops("store", [m.n, L.F, m.p], [m.p * L.F, 1, L.F], [])
    for (r, col), o in plan.tops.items():
        out.write("store_base", psum_base + slots[o], r * cols + col)
    out.write("store_total", len(plan.tops) * m.n * L.F * m.p)
