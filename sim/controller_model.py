"""Executable model of the controller: runs a program (:mod:`rowstation.gen.program`) on a
NumPy external memory, with the global buffer, the address generators and the array's
arithmetic, and counts the words moved at each level. The RTL must end with the same memory
and the same counts."""

import numpy as np

from ..gen.program import ARGUMENTS, LOOPS, OPCODES, PE_SETTINGS, REGIONS, RegisterMap, pass_plans
from .dataflow import ifmap_rows, pe_streams
from .pe_model import filter_words, pe_events, pe_reference


__all__ = ["dram_image", "dram_output", "walk", "run_program"]


def dram_image(layout, layer, x, w):
    """External memory holding weights ``w`` and ifmap ``x`` at ``layout``, output zeroed."""
    L = layer
    dram = np.zeros(layout.output + L.N * L.M * L.E * L.F, dtype=np.int64)
    dram[layout.weights:layout.weights + w.size] = np.asarray(w).ravel()
    dram[layout.ifmap:layout.ifmap + x.size] = np.asarray(x).ravel()
    return dram


def dram_output(dram, layout, layer):
    """The accumulation (N, M, E, F) the program stored."""
    return dram[layout.output:layout.output + int(np.prod(layer.ofmap_shape))].reshape(layer.ofmap_shape)


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


def run_program(mapping, words, dram, x, w):
    """Execute ``words`` on ``dram`` (int64 array, modified); returns the counts the core's
    counters must show (words moved at each level, network transfers, PE events).

    The passes' arithmetic follows the schedule (each PE's filter block and ifmap rows);
    every word the streams carry is checked against the tensors ``x`` and ``w`` it must come
    from, so a wrong address or tag fails here rather than in RTL."""
    c, L = mapping.config, mapping.layer
    regmap = RegisterMap(c)
    names = {regmap.address(name, i): (name, i) for name, (_, n) in regmap.blocks.items()
             for i in range(n)}
    regs = {}
    glb = {"ifmap": {}, "psum": {}}
    counts = dict.fromkeys(("dram_reads", "dram_writes", "glb_reads", "glb_writes", "passes",
                            "program_words", "filt_transfers", "ifmap_transfers",
                            "psum_transfers", "opsum_transfers"), 0)
    plans = iter(pass_plans(mapping))
    xp = np.pad(x, ((0, 0), (0, 0), (L.P, L.P), (L.P, L.P)))
    pc = 0

    def reg(name, i=0):
        return regs[(name, i)]

    def stream(name):
        levels = LOOPS[name]
        n = len(levels)
        cnt = [reg(f"{name}_count", k) for k in range(n)]
        steps = [_signed(reg(f"{name}_step", k)) for k in range(n)]
        if "table" not in levels:
            return walk(cnt, steps)
        t = levels.index("table")
        return walk(cnt, steps, [reg(f"{name}_base", e) for e in range(cnt[t])], t)

    opcodes = {code: name for name, code in OPCODES.items()}
    while True:
        code, operand = words[pc] >> 28, words[pc] & 0x0FFF_FFFF
        if code not in opcodes:
            raise ValueError(f"unknown opcode {code} at word {pc}")
        op = opcodes[code]
        args = words[pc + 1:pc + 1 + ARGUMENTS[op]]
        pc += 1 + ARGUMENTS[op]
        region = "psum" if operand == REGIONS["psum"] else "ifmap"
        if op == "end":
            counts["program_words"] = pc
            return counts
        if op == "write":
            regs[names[operand]] = args[0]
        elif op == "load":
            at, src, n = args
            for i in range(n):
                glb[region][at + i] = int(dram[src + i])
            counts["dram_reads"] += n
            counts["glb_writes"] += n
        elif op == "store":
            at, dst, n = args
            for i in range(n):
                dram[dst + i] = glb["psum"][at + i]
            counts["dram_writes"] += n
            counts["glb_reads"] += n
        elif op == "fill":
            at, n, lo, hi = args
            for i in range(n):
                glb[region][at + i] = _signed(lo | hi << 32, 64)
            counts["glb_writes"] += n
        else:  # run
            _run_pass(mapping, next(plans), reg, stream, dram, glb, xp, w, counts)
            counts["passes"] += 1


def _run_pass(mapping, plan, reg, stream, dram, glb, xp, w, counts):
    c, L, p = mapping.config, mapping.layer, mapping.p
    pe = mapping.pe_config
    for name in PE_SETTINGS:
        assert reg(f"cfg_{name}") == int(getattr(pe, name)), name
    # The streams must carry exactly the schedule's words.
    filt = [int(dram[a]) for a, _ in stream("filt")]
    want = []
    for _, _, (g, mb, cb, rr, sb) in plan.filters:
        block, _ = pe_streams(mapping, xp, w, (g, mb, 0), (cb, rr, sb))
        want += [int(v) for v in filter_words(block)]
    assert filt == want, "filter stream differs from the schedule"
    ifmap = [glb["ifmap"][a] for a, _ in stream("ifmap")]
    rows = [ifmap_rows(mapping, xp, g, cb, row, sb) for g, cb, row, sb in plan.ifmap_rows]
    want = [int(data[n, qc, col]) for n in range(L.N) for col in range(pe.row_length)
            for data in rows for qc in range(mapping.q)]
    assert ifmap == want, "ifmap stream differs from the schedule"
    psum_in = [(glb["psum"][a], e) for a, e in stream("psum")]
    counts["dram_reads"] += len(filt)
    counts["glb_reads"] += len(ifmap) + len(psum_in)
    counts["filt_transfers"] += len(filt)
    counts["ifmap_transfers"] += len(ifmap)
    counts["psum_transfers"] += len(psum_in)
    for output, term in plan.assign.values():
        _, data = pe_streams(mapping, xp, None, output, term)
        for name, value in pe_events(pe, data).items():
            counts[name] = counts.get(name, 0) + value
    # Each chain: the bottom's held psums plus every term; tops return them in (n, x, m) order.
    held = {}
    for ((r, col), o), k in zip(plan.bottoms, range(len(plan.bottoms))):
        values = [v for v, e in psum_in if e == k]
        held[o] = np.array(values, dtype=np.int64).reshape(L.N, L.F, p)
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
            glb["psum"][base + a] = int(value)
            stored += 1
    assert stored == reg("store_total"), (stored, reg("store_total"))
    counts["glb_writes"] += stored
    counts["opsum_transfers"] += stored
