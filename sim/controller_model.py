"""Executable model of the controller: runs a layer's three instruction streams
(:mod:`rowstation.gen.isa`) on a NumPy external memory, with the global buffer, the address
generators and the array's arithmetic, and counts the words moved at each level. The RTL must
end with the same memory and the same counts.

The units run under an adversarial schedule: each step runs the first unit, in the priority
order ``ahead``, whose next instruction's tokens are there, so the first unit always goes as
far ahead as its tokens allow. A token the compiler forgot then shows up, under some order, as
a word read before it was written or overwritten before it was read, which the stream checks
and the result catch.
"""

import numpy as np

from ..gen.isa import ARGUMENTS, COUNTERS, LOOPS, PE_SETTINGS, PHASES, TOKEN_CONSUMER, TOKEN_DEPTH, \
    TOKEN_PRODUCER, UNITS, Opcode, Region, RegisterMap, Token, decode, decode_load, decode_store
from ..gen.program import arranged_weights, read_elements, write_elements, words_spanned
from .dataflow import ifmap_rows, pe_streams
from .golden import requantize
from .pe_model import filter_words, pe_events, pe_reference


__all__ = ["dram_image", "dram_output", "walk", "run_program"]


def dram_image(mapping, layout, x, w):
    """External memory (bytes, up to ``layout.end``) holding the weights ``w`` (arranged as
    :func:`~rowstation.gen.program.weight_order` says) and the ifmap ``x`` at ``layout``,
    everything else zero."""
    memory = np.zeros(layout.end, dtype=np.uint8)
    write_elements(memory, layout.weights, arranged_weights(mapping, w), layout.weight_bytes)
    write_elements(memory, layout.ifmap, np.asarray(x).ravel(), layout.ifmap_bytes)
    return memory


def dram_output(memory, layout, layer):
    """The output (N, M, E, F) the program stored."""
    count = int(np.prod(layer.ofmap_shape))
    return read_elements(memory, layout.output, count, layout.output_bytes).reshape(layer.ofmap_shape)


def walk(counts, steps, table=None, table_level=None):
    """The (address, entry) sequence of an address generator."""
    out, index, offset = [], [0] * len(counts), 0
    while True:
        entry = index[table_level] if table_level is not None else None
        out.append((offset + (table[entry] if table is not None else 0), entry))
        k = len(counts) - 1
        while k >= 0 and index[k] == counts[k] - 1:
            k -= 1
        if k < 0:
            return out
        index[k] += 1
        index[k + 1:] = [0] * (len(counts) - k - 1)
        offset += steps[k]


def _signed(value, bits=32):
    return value - (1 << bits) if value >> (bits - 1) else value


class _Registers:
    """Shadow and committed registers; tables in two halves, a pass reading one while the
    next pass's entries are written into the other, swapped at each commit of their phase (an
    entry never written in the half a pass reads is an error)."""

    def __init__(self, config):
        self.map = RegisterMap(config)
        self.shadow, self.active = {}, {}
        self.halves = {name: ({}, {}) for name, block in self.map.blocks.items() if block.table}
        self.reading = dict.fromkeys(PHASES, 0)     # the half each phase's tables are read from

    def write(self, address, value):
        found = self.map.locate(address)
        if found is None:
            raise ValueError(f"WRITE to unknown register {address}")
        block, index = found
        if block.table:
            self.halves[block.name][1 - self.reading[block.phase]][index] = value
        else:
            self.shadow[(block.name, index)] = value

    def commit(self, phase):
        self.reading[phase] = 1 - self.reading[phase]
        for block in self.map.blocks.values():
            if block.phase == phase and not block.table:
                for i in range(block.count):
                    if (block.name, i) in self.shadow:
                        self.active[(block.name, i)] = self.shadow[(block.name, i)]

    def __call__(self, name, index=0):
        block = self.map.blocks[name]
        if block.table:
            entries = self.halves[name][self.reading[block.phase]]
            if index not in entries:
                raise AssertionError(f"table entry {name}[{index}] was not written for this pass")
            return entries[index]
        return self.active[(name, index)]


def run_program(mapping, streams, dram, x, w, *, ahead="load", bases=None):
    """Execute the ``streams`` ({unit: words}) of one layer on ``dram`` (bytes, a uint8 array,
    modified), the program's addresses offset by ``bases`` ({"weights", "ifmap", "output"}: as
    the core's :class:`~rowstation.hw.controller.TensorBases`; zero if None);
    returns the counts the core's counters must show (words moved at each level, network
    transfers, PE events; not ``cycles`` or ``active_pe``). ``ahead`` is the units' priority
    order, or the one unit that runs ahead of the others.

    The passes' arithmetic follows the schedule (each PE's filter block and ifmap rows);
    every word the streams carry is checked against the tensors ``x`` and ``w`` it must come
    from, so a wrong address, tag or missing token fails here rather than in RTL."""
    L = mapping.layer
    regs = _Registers(mapping.config)
    glb = {Region.IFMAP: {}, Region.PSUM: {}}
    counts = {name: 0 for name in COUNTERS if name not in ("cycles", "active_pe")}
    bases = {"weights": 0, "ifmap": 0, "output": 0, **(bases or {})}
    plans = _Passes(mapping, np.pad(x, ((0, 0), (0, 0), (L.P, L.P), (L.P, L.P))))
    tokens = dict.fromkeys(Token, 0)
    pcs = dict.fromkeys(streams, 0)
    ahead = (ahead,) if isinstance(ahead, str) else tuple(ahead)
    units = list(ahead) + [u for u in ("load", "store", "execute") if u not in ahead]

    def stream(name, lane=0):
        """(address, table entry) of each word of a stream (lane ``lane`` of the psum stream)."""
        levels = LOOPS[name]
        n = len(levels)
        registers, first = regs.map.lane_base(name, lane)
        cnt = [regs(f"{name}_count", registers + k) for k in range(n)]
        steps = [_signed(regs(f"{name}_step", registers + k)) for k in range(n)]
        if "table" not in levels:
            return walk(cnt, steps)
        t = levels.index("table")
        if not cnt[t]:
            return []      # a stream with no table entries does not start
        return walk(cnt, steps, [regs(f"{name}_base", first + e) for e in range(cnt[t])], t)

    def fetch(unit):
        words, pc = streams[unit], pcs[unit]
        fields = decode(words[pc])
        try:
            opcode = Opcode(fields["opcode"])
        except ValueError:
            raise ValueError(f"unknown opcode {fields['opcode']} at word {pc} of the {unit} stream")
        if opcode != Opcode.END and UNITS[opcode] != unit:
            raise ValueError(f"{opcode.name} in the {unit} stream at word {pc}")
        return opcode, fields, words[pc + 1:pc + 1 + ARGUMENTS[opcode]]

    def tokens_of(mask):
        return [token for token in Token if mask >> token & 1]

    while True:
        for unit in units:
            opcode, fields, args = fetch(unit)
            if opcode == Opcode.END or any(tokens[t] == 0 for t in tokens_of(fields["pop"])):
                continue
            for t in tokens_of(fields["pop"]):
                assert TOKEN_CONSUMER[t] == unit
                tokens[t] -= 1
            _execute(mapping, opcode, fields["operand"], args, regs, stream, plans, dram, bases, glb,
                     w, counts)
            for t in tokens_of(fields["push"]):
                assert TOKEN_PRODUCER[t] == unit
                tokens[t] += 1
                if tokens[t] > TOKEN_DEPTH:
                    raise RuntimeError(f"{t.name} holds {tokens[t]} tokens, more than the "
                                       f"{TOKEN_DEPTH} its queue counts")
            pcs[unit] += 1 + len(args)
            break
        else:
            if all(fetch(unit)[0] == Opcode.END for unit in streams):
                assert not any(tokens.values()), f"tokens left at END: {tokens}"
                counts["program_words"] = sum(pc + 1 for pc in pcs.values())
                return counts
            raise RuntimeError(f"the program deadlocks: units wait at {pcs} with tokens {tokens}")


class _Passes:
    """The passes in the order the program runs them, each with the padded ifmap of its block
    of images (the passes repeat per block); ``filters_held`` the filter words each PE keeps
    from the pass before."""

    def __init__(self, mapping, xp):
        self.plans, self.mapping, self.xp, self.index = mapping.plans, mapping, xp, 0
        self.filters_held = {}

    def __next__(self):
        block, j = divmod(self.index, len(self.plans))
        self.index += 1
        n = self.mapping.n
        return self.plans[j], self.xp[block * n:(block + 1) * n]


def _bytes(config, width):
    return config.memory_width(width) // 8


def _execute(mapping, opcode, operand, args, regs, stream, plans, dram, bases, glb, w, counts):
    c = mapping.config
    if opcode == Opcode.WRITE:
        regs.write(operand, args[0])
    elif opcode == Opcode.LOAD:
        at, src, n, stride = args
        load = decode_load(operand)
        region, pad = Region(load["region"]), load["pad"]
        src += bases["ifmap" if region == Region.IFMAP else "output"]
        size = _bytes(c, c.ifmap_width if region == Region.IFMAP else c.psum_width)
        for row in range(load["rows"]):
            values = [0] * pad + [int(v) for v in read_elements(dram, src + row * stride, n, size)] + [0] * pad
            for i, value in enumerate(values):
                glb[region][at + row * len(values) + i] = value
            counts["dram_reads"] += words_spanned(src + row * stride, n, size, c.dram_width // 8)
            counts["glb_writes"] += len(values)
    elif opcode == Opcode.STORE:
        at, dst, n, step, stride, lo, hi = args
        dst += bases["output"]
        post = decode_store(operand)
        row = post["row"] or max(n, 1)
        values = np.array([glb[Region.PSUM][at + i // row * step + i % row] for i in range(n)], dtype=np.int64)
        values += _signed(lo | hi << 32, 64)
        if post["requantize"]:
            values = requantize(values, shift=post["shift"], relu=bool(post["relu"]),
                                width=c.ifmap_width)
        size = _bytes(c, c.ifmap_width if post["requantize"] else c.psum_width)
        runs = [(dst + r * stride, values[r * row:(r + 1) * row]) for r in range(-(-n // row))] \
            if post["row"] and stride else [(dst, values)]
        for addr, run in runs:
            write_elements(dram, addr, run, size)
            counts["dram_writes"] += words_spanned(addr, len(run), size, c.dram_width // 8)
        counts["glb_reads"] += n
    elif opcode == Opcode.FILL:
        at, n, lo, hi = args
        for i in range(n):
            glb[Region(operand)][at + i] = _signed(lo | hi << 32, 64)
        counts["glb_writes"] += n
    else:  # RUN
        for phase in ("filter", "data"):
            regs.commit(phase)
        plan, xp = next(plans)
        _run_pass(mapping, plan, regs, stream, dram, bases["weights"], glb, xp, w, counts, plans.filters_held)
        counts["passes"] += 1


def _run_pass(mapping, plan, reg, stream, dram, weights, glb, xp, w, counts, filters_held):
    c, L, p = mapping.config, mapping.layer, mapping.p
    pe = mapping.pe_config
    for name in PE_SETTINGS:
        assert reg(f"cfg_{name}") == int(getattr(pe, name)), name
    # The streams must carry exactly the schedule's words: each filter run goes to the PEs
    # whose filter network IDs match its tag; a PE that kept its filters receives none.
    size, word = _bytes(c, c.weight_width), c.dram_width // 8
    cols, rw = c.array_cols, c.row_id_width
    reads, loads = 0, 0
    for entry in range(reg("filt_entries")):
        base = reg("filt_base", entry) + weights
        block = [int(v) for v in read_elements(dram, base, reg("filt_words"), size)]
        reads += words_spanned(base, reg("filt_words"), size, word)
        tag = reg("filt_tag", entry)
        for r in range(c.array_rows):
            if reg("filt_row_ids", r) != tag & ((1 << rw) - 1):
                continue
            for col in range(cols):
                if reg("filt_col_ids", r * cols + col) == tag >> rw:
                    assert (r, col) not in filters_held, f"PE ({r}, {col}) keeps its filters and is sent more"
                    filters_held[r, col] = block
                    loads += 1
    for at, (output, term) in plan.assign.items():
        block, _ = pe_streams(mapping, xp, w, output, term)
        assert filters_held.get(at) == [int(v) for v in filter_words(block, pe.lanes)], \
            f"PE {at} holds other filters than the schedule's"
    assert set(filters_held) == set(plan.assign), "a PE keeps filters no pass uses"
    for r, col in list(filters_held):       # chain bit 2: the PE keeps its filters for the next pass
        if not reg("chain", r * cols + col) >> 2 & 1:
            del filters_held[r, col]
    # Each lane of the ifmap network carries its rows column by column, each row to the PEs
    # whose column ID is its entry's tag.
    rows = [ifmap_rows(mapping, xp, g, cb, row, sb) for g, cb, row, sb in plan.ifmap_rows]
    ifmap, carried = [], []
    for lane in range(c.ifmap_noc_lanes):
        words = [(glb[Region.IFMAP][a], e) for a, e in stream("ifmap", lane)]
        registers, first = reg.map.lane_base("ifmap", lane)
        entries = reg("ifmap_count", registers + LOOPS["ifmap"].index("table"))
        tags = [reg("ifmap_tag", first + e) >> rw for e in range(entries)]
        want = [(int(rows[tag][n, qc, col]), e) for n in range(mapping.n) for col in range(pe.row_length)
                for e, tag in enumerate(tags) for qc in range(mapping.q)]
        assert words == (want if entries else []), f"ifmap lane {lane}'s stream differs from the schedule"
        ifmap += words
        carried += tags
    assert sorted(carried) == list(range(len(rows))), "the ifmap lanes do not carry each row once"
    # A first fold's chain bottoms take zeros: the psum stream does not run. Each lane's
    # stream serves the chain bottoms in its PE columns, its table entries in their order.
    zero = reg("psum_zero")
    held, read = {}, 0
    for lane in range(c.psum_noc_lanes):
        words = [(0 if zero else glb[Region.PSUM][a], e) for a, e in stream("psum", lane)]
        bottoms = [o for (r, col), o in plan.bottoms if c.psum_lane(col) == lane]
        for k, o in enumerate(bottoms):
            values = [v for v, e in words if e == k]
            held[o] = np.array(values, dtype=np.int64).reshape(mapping.n, L.F, p)
        assert all(e < len(bottoms) for _, e in words), f"psum lane {lane} streams to more chains than it serves"
        read += len(words)
    counts["dram_reads"] += reads
    counts["glb_reads"] += len(ifmap) + (0 if zero else read)
    k = c.filter_noc_width
    counts["filt_transfers"] += reg("filt_entries") * -(-reg("filt_words") // k)
    counts["ifmap_transfers"] += len(ifmap)
    counts["psum_transfers"] += 0 if zero else read
    for output, term in plan.assign.values():
        _, data = pe_streams(mapping, xp, None, output, term)
        for name, value in pe_events(pe, data).items():
            counts[name] = counts.get(name, 0) + value
    counts["filter_write"] += (loads - len(plan.assign)) * pe.filter_words   # kept filters: none
    # Each chain: the bottom's held psums plus every term; tops return them in (n, x, m) order.
    stored = 0
    for (r, col), o in plan.tops.items():
        output = mapping.outputs[o]
        psum = held[o]
        _, _, chunk = next(job for job in plan.jobs if job[1] == o)
        for term in mapping.chunk_terms(chunk):
            filters, rows = pe_streams(mapping, xp, w, output, term)
            psum = pe_reference(pe, filters, rows, psum)
        base = reg("store_base", r * c.array_cols + col)
        for (a, _), value in zip(stream("store"), psum.ravel()):
            glb[Region.PSUM][base + a] = int(value)
            stored += 1
    assert stored == reg("store_total"), (stored, reg("store_total"))
    counts["glb_writes"] += stored
    counts["opsum_transfers"] += stored
