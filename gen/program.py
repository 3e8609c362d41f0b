"""The controller's program for a layer: what the mapper decided, as register writes and
data-movement commands the hardware controller (:mod:`rowstation.hw.controller`) executes
without host help.

**Passes.** :func:`pass_plans` turns a mapping into per-pass plans: which PE computes which
term of which output, the multicast IDs and chain links, and the stream tables (filter blocks,
ifmap rows, chain bottoms) in the order the networks carry them.

**Address generators.** Each stream is a loop nest walked by an address generator: per level a
count and a *step* (what the address gains when that level advances and the inner ones wrap);
one level may walk a table of (base address, tag) entries. :data:`LOOPS` gives each stream's
levels.

**Memory.** External memory holds one element per word (sign-extended): weights (M, C/G, R,
S), ifmap (N, C, H, W) and the exact accumulation (N, M, E, F), row-major, at the bases of a
:class:`DramLayout`. The global buffer holds, per *epoch* (consecutive passes whose working set
fits), the padded ifmap rows and the psums of the outputs those passes touch; psums go back to
external memory at the end of each epoch and return when a later fold needs them.

**Program.** 32-bit words; an instruction is an opcode word (opcode in bits 31:28, operand in
27:0) and its argument words: ``WRITE reg, value`` | ``LOAD region; glb, dram, count`` |
``STORE; glb, dram, count`` | ``FILL region; glb, count, value_lo, value_hi`` | ``RUN`` (one
pass with the registers as written) | ``END``.
"""

from dataclasses import dataclass, field


__all__ = ["OPCODES", "ARGUMENTS", "LOOPS", "RegisterMap", "PassPlan", "pass_plans", "pass_glb_words",
           "DramLayout", "Program", "compile_layer"]


OPCODES = {"end": 0, "write": 1, "load": 2, "store": 3, "fill": 4, "run": 5}
#: Argument words following each opcode word.
ARGUMENTS = {"end": 0, "write": 1, "load": 3, "store": 3, "fill": 4, "run": 0}
REGIONS = {"ifmap": 0, "psum": 1}

#: Loop levels of each stream, outermost first; "table" walks that stream's table entries.
LOOPS = {
    "filt": ("table", "s", "c", "m"),           # DRAM weights -> filter network
    "ifmap": ("n", "f", "s", "table", "c"),     # GLB ifmap rows -> ifmap network
    "psum": ("n", "x", "table", "m"),           # GLB psums -> chain bottoms
    "store": ("n", "x", "m"),                   # chain tops -> GLB psums, per source PE
}

PE_SETTINGS = ("s", "u", "p", "q", "f", "rows", "accumulate")


class RegisterMap:
    """Addresses of the controller's registers, built from the configuration.

    ``cfg_<name>``: the PE setting; ``row_ids[r]``: the row IDs of X-bus r (filt, ifmap, psum
    packed ``row_id_width`` bits apart); ``pe[i]`` for PE i = row * cols + col: its column IDs
    (filt, ifmap, psum, ``col_id_width`` bits apart), then chain bottom and chain top bits;
    ``<stream>_count[k]``/``<stream>_step[k]`` per loop level; ``<stream>_base[i]``/
    ``<stream>_tag[i]`` (row | col << row_id_width) per table entry; ``store_base[i]`` per
    source PE; ``store_total``: psums the pass returns.
    """

    def __init__(self, config):
        self.config = config
        n = config.pe_count
        blocks = [(f"cfg_{name}", 1) for name in PE_SETTINGS]
        blocks += [("row_ids", config.array_rows), ("pe", n)]
        for stream, levels in LOOPS.items():
            blocks += [(f"{stream}_count", len(levels)), (f"{stream}_step", len(levels))]
            if "table" in levels:
                blocks += [(f"{stream}_base", n), (f"{stream}_tag", n)]
        blocks += [("store_base", n), ("store_total", 1)]
        self.blocks, address = {}, 0
        for name, count in blocks:
            self.blocks[name] = (address, count)
            address += count
        self.size = address

    def address(self, name, index=0):
        base, count = self.blocks[name]
        if not 0 <= index < count:
            raise IndexError(f"register {name}[{index}] out of range (count {count})")
        return base + index


@dataclass
class PassPlan:
    """One pass: PE assignment, IDs, chain links and stream tables, in network order."""

    assign: dict                  # (row, col) -> (output, term)
    bottoms: list                 # [((row, col), output index)] in psum feed order
    tops: dict                    # (row, col) of a chain top -> output index
    jobs: list                    # the mapping's (slot, output index, chunk) of this pass
    ids: dict = field(default_factory=dict)   # net -> (row_ids, col_ids[row][col])
    chain_bottom: list = None
    chain_top: list = None
    filters: list = None          # [(row, col tag, (g, mb, cb, r, sb))] in stream order
    ifmap_rows: list = None       # [(g, cb, padded row, sb)], the column tag is the index


def pass_plans(mapping):
    """The :class:`PassPlan` of every pass of ``mapping`` (Row 0 is the top of the array)."""
    c, L = mapping.config, mapping.layer
    unused = c.unused_col_id
    rows, cols = range(c.array_rows), range(c.array_cols)
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
        filter_keys, ifmap_keys = [{} for _ in rows], {}
        filt_ids = [[unused for _ in cols] for _ in rows]
        ifmap_ids = [[unused for _ in cols] for _ in rows]
        for (r, col), ((g, mb, e), (cb, rr, sb)) in sorted(assign.items()):
            filt_ids[r][col] = filter_keys[r].setdefault((g, mb, cb, rr, sb), len(filter_keys[r]))
            ifmap_ids[r][col] = ifmap_keys.setdefault((g, cb, e * L.U + rr, sb), len(ifmap_keys))
        bottom_pes = {pe for pe, _ in bottoms}
        plan = PassPlan(assign, bottoms, tops, jobs)
        plan.ids = {
            "filt": (list(rows), filt_ids),
            "ifmap": ([0 for _ in rows], ifmap_ids),
            "psum": (list(rows), [[col if (r, col) in bottom_pes else unused for col in cols]
                                  for r in rows]),
        }
        plan.chain_bottom = [[int((r, col) in bottom_pes or (r, col) not in assign) for col in cols]
                             for r in rows]
        plan.chain_top = [[int((r, col) in tops or (r, col) not in assign) for col in cols]
                          for r in rows]
        plan.filters = [(r, kid, key) for r in rows for key, kid in filter_keys[r].items()]
        plan.ifmap_rows = list(ifmap_keys)
        plans.append(plan)
    return plans


def _steps(counts, strides):
    """Per level: the address change when it advances and every inner level wraps."""
    return [strides[k] - sum((counts[j] - 1) * strides[j] for j in range(k + 1, len(counts)))
            for k in range(len(counts))]


@dataclass(frozen=True)
class DramLayout:
    """Word addresses of the layer's tensors in external memory (one element per word)."""

    weights: int
    ifmap: int
    output: int

    @classmethod
    def packed(cls, layer, base=0):
        """Weights, ifmap and output one after the other from ``base``."""
        L = layer
        weights = L.M * (L.C // L.G) * L.R * L.S
        ifmap = L.N * L.C * L.H * L.W
        return cls(base, base + weights, base + weights + ifmap)


@dataclass
class Program:
    words: list
    epochs: int
    dram_reads: int      # words the program's LOADs and filter streams read
    dram_writes: int
    glb_words: int       # most global buffer words an epoch uses


class _Epoch:
    """Passes sharing one global buffer allocation: ifmap rows (q channels each) and psums."""

    def __init__(self, mapping):
        self.mapping = mapping
        self.rows, self.outputs, self.plans = {}, {}, []

    def with_jobs(self, jobs):
        """The allocation grown by a pass's jobs: ifmap rows (g, cb, padded row), outputs."""
        m = self.mapping
        rows, outputs = dict(self.rows), dict(self.outputs)
        for _, o, k in jobs:
            g, _, e = m.outputs[o]
            for cb, rr, _ in m.chunk_terms(k):
                rows.setdefault((g, cb, e * m.layer.U + rr), len(rows))
            outputs.setdefault(o, len(outputs))
        return rows, outputs

    def words(self, rows, outputs):
        """Global buffer words of this allocation: ifmap, rounded to whole banks, then psums."""
        c, L, m = self.mapping.config, self.mapping.layer, self.mapping
        ifmap = L.N * len(rows) * m.q * (L.W + 2 * L.P)
        ifmap_words = -(-ifmap // c.glb_lanes(c.ifmap_width))
        psum_start = -(-ifmap_words // c.glb_bank_depth) * c.glb_bank_depth
        psums = len(outputs) * L.N * m.p * L.F
        return psum_start, psum_start + -(-psums // c.glb_lanes(c.psum_width))


def pass_glb_words(mapping, jobs):
    """Global buffer words one pass needs on its own (ifmap rows and psums)."""
    epoch = _Epoch(mapping)
    return epoch.words(*epoch.with_jobs(jobs))[1]


def _epochs(mapping, plans):
    c = mapping.config
    capacity = c.glb_words
    epochs, epoch = [], _Epoch(mapping)
    for plan in plans:
        trial = epoch.with_jobs(plan.jobs)
        if epoch.plans and epoch.words(*trial)[1] > capacity:
            epochs.append(epoch)
            epoch = _Epoch(mapping)
            trial = epoch.with_jobs(plan.jobs)
        needed = epoch.words(*trial)[1]
        if needed > capacity:
            raise ValueError(f"a pass of {mapping.layer} needs {needed} global buffer words, more "
                             f"than the {capacity} of glb_banks x glb_bank_depth = "
                             f"{c.glb_banks} x {c.glb_bank_depth}")
        epoch.rows, epoch.outputs = trial
        epoch.plans.append(plan)
    return epochs + [epoch]


class _Writer:
    """Emits instructions; register writes only where the value changes."""

    def __init__(self, regmap):
        self.regmap, self.words, self.values = regmap, [], {}
        self.dram_reads = self.dram_writes = 0

    def op(self, name, operand=0, *args):
        assert len(args) == ARGUMENTS[name], (name, args)
        self.words += [OPCODES[name] << 28 | operand, *args]

    def write(self, name, value, index=0):
        address = self.regmap.address(name, index)
        if self.values.get(address) != value:
            self.values[address] = value
            self.op("write", address, value & 0xFFFF_FFFF)

    def load(self, region, glb, dram, count):
        self.op("load", REGIONS[region], glb, dram, count)
        self.dram_reads += count

    def store(self, glb, dram, count):
        self.op("store", 0, glb, dram, count)
        self.dram_writes += count

    def fill(self, region, glb, count, value):
        value &= (1 << 64) - 1
        self.op("fill", REGIONS[region], glb, count, value & 0xFFFF_FFFF, value >> 32)


def compile_layer(mapping, bias=None, dram=None):
    """The :class:`Program` that runs ``mapping`` (bias: one int per filter, or None)."""
    c, L, m = mapping.config, mapping.layer, mapping
    dram = dram or DramLayout.packed(L)
    regmap = RegisterMap(c)
    out = _Writer(regmap)
    Cg, Wp = L.C // L.G, L.W + 2 * L.P
    lanes_p = c.glb_lanes(c.psum_width)
    pe = m.pe_config
    for name in PE_SETTINGS:
        out.write(f"cfg_{name}", int(getattr(pe, name)))
    plans = pass_plans(m)
    started = set()  # outputs whose psums external memory holds
    epochs = _epochs(m, plans)
    glb_words = 0
    for epoch in epochs:
        psum_word, used = epoch.words(epoch.rows, epoch.outputs)
        glb_words = max(glb_words, used)
        psum_base = psum_word * lanes_p
        s_c = Wp                          # ifmap: [n][row slot][channel][column]
        s_n = len(epoch.rows) * m.q * Wp
        block_f = L.N * m.p * L.F         # psums: [output slot][n][filter][column]

        if L.P:
            out.fill("ifmap", 0, L.N * s_n, 0)
        for (g, cb, row), slot in epoch.rows.items():
            if not L.P <= row < L.H + L.P:
                continue
            for qc in range(m.q):
                channel = g * Cg + cb * m.q + qc
                for n in range(L.N):
                    glb = n * s_n + (slot * m.q + qc) * Wp + L.P
                    src = dram.ifmap + ((n * L.C + channel) * L.H + row - L.P) * L.W
                    out.load("ifmap", glb, src, L.W)

        def psum_rows(o, oslot):
            """(glb, dram) addresses of each F-psum row of output ``o``, and its filter."""
            e = m.outputs[o][2]
            m0 = m.first_filter(m.outputs[o])
            for n in range(L.N):
                for pf in range(m.p):
                    glb = psum_base + oslot * block_f + (n * m.p + pf) * L.F
                    yield glb, dram.output + ((n * L.M + m0 + pf) * L.E + e) * L.F, m0 + pf

        for o, oslot in epoch.outputs.items():
            for glb, addr, filt in psum_rows(o, oslot):
                if o in started:
                    out.load("psum", glb, addr, L.F)
                else:
                    out.fill("psum", glb, L.F, 0 if bias is None else int(bias[filt]))
            started.add(o)

        for plan in epoch.plans:
            _write_pass(out, m, plan, epoch, psum_base, block_f, s_c, s_n, dram)
            out.op("run")
            out.dram_reads += len(plan.filters) * pe.filter_words
        for o, oslot in epoch.outputs.items():
            for glb, addr, _ in psum_rows(o, oslot):
                out.store(glb, addr, L.F)
    out.op("end")
    return Program(out.words, len(epochs), out.dram_reads, out.dram_writes, glb_words)


def _write_pass(out, m, plan, epoch, psum_base, block_f, s_c, s_n, dram):
    c, L = m.config, m.layer
    rw, cw = c.row_id_width, c.col_id_width
    Cg, cols = L.C // L.G, c.array_cols
    for r in range(c.array_rows):
        out.write("row_ids", sum(plan.ids[net][0][r] << (i * rw)
                                 for i, net in enumerate(("filt", "ifmap", "psum"))), r)
        for col in range(cols):
            word = sum(plan.ids[net][1][r][col] << (i * cw)
                       for i, net in enumerate(("filt", "ifmap", "psum")))
            word |= plan.chain_bottom[r][col] << 3 * cw | plan.chain_top[r][col] << (3 * cw + 1)
            out.write("pe", word, r * cols + col)

    def loops(stream, counts, strides, entries):
        for k, step in enumerate(_steps(counts, strides)):
            out.write(f"{stream}_count", counts[k], k)
            out.write(f"{stream}_step", step, k)
        for i, (base, row, col) in enumerate(entries):
            out.write(f"{stream}_base", base, i)
            out.write(f"{stream}_tag", row | col << rw, i)

    # Filters: weights (M, Cg, R, S) read from external memory, taps outer, filters inner.
    filters = []
    for r, kid, (g, mb, cb, rr, sb) in plan.filters:
        m0 = m.first_filter((g, mb, 0))
        filters.append((dram.weights + ((m0 * Cg + cb * m.q) * L.R + rr) * L.S + sb * m.seg, r, kid))
    loops("filt", [len(filters), m.seg, m.q, m.p], [0, 1, L.R * L.S, Cg * L.R * L.S], filters)

    # Ifmap rows, column by column across rows so the PEs of a chain advance together.
    if L.U <= m.seg:
        f_count, f_stride, s_count = 1, 0, m.pe_config.row_length
    else:
        f_count, f_stride, s_count = L.F, L.U, m.seg
    rows = [(epoch.rows[(g, cb, row)] * m.q * s_c + sb * m.seg, 0, kid)
            for kid, (g, cb, row, sb) in enumerate(plan.ifmap_rows)]
    loops("ifmap", [L.N, f_count, s_count, len(rows), m.q], [s_n, f_stride, 1, 0, s_c], rows)

    # Psums to chain bottoms and back from chain tops: [n][filter][column] per output slot.
    bottoms = [(psum_base + epoch.outputs[o] * block_f, r, col) for (r, col), o in plan.bottoms]
    loops("psum", [L.N, L.F, len(bottoms), m.p], [m.p * L.F, 1, 0, L.F], bottoms)
    loops("store", [L.N, L.F, m.p], [m.p * L.F, 1, L.F], [])
    for (r, col), o in plan.tops.items():
        out.write("store_base", psum_base + epoch.outputs[o] * block_f, r * cols + col)
    out.write("store_total", len(plan.tops) * L.N * L.F * m.p)
