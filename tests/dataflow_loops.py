"""Loop-nest references for the analytic dataflow models, written separately: each walks one
mapping's schedule element by element and counts what moves, so the closed forms of
:mod:`rowstation.gen.dataflows` can be checked for equality on small layers."""

from collections import Counter
from math import ceil


def _channel_tiles(L, tm):
    G, Mg = L.G, L.M // L.G
    if tm <= Mg:
        return [[(g, m) for m in range(m0, min(Mg, m0 + tm))] for g in range(G) for m0 in range(0, Mg, tm)]
    per = min(G, tm // Mg)
    return [[(g, m) for g in range(g0, min(G, g0 + per)) for m in range(Mg)] for g0 in range(0, G, per)]


def _blocks(L, nb, eb):
    return [[(n, e, f) for n in range(n0, n0 + nb) for e in range(e0, min(L.E, e0 + eb)) for f in range(L.F)]
            for n0 in range(0, L.N, nb) for e0 in range(0, L.E, eb)]


def _rows(L, positions):
    """(n, c, h) of every real ifmap row the positions' windows read, all channels."""
    return {(n, c, e * L.U - L.P + r) for n, e, _ in positions for c in range(L.C) for r in range(L.R)
            if 0 <= e * L.U - L.P + r < L.H}


def _bytes(width):
    return max(8, 1 << (width - 1).bit_length()) // 8


def spatial_reduction_loops(config, L, dataflow, glb_bits, *, tm, tk, nb, eb):
    """WS or NLR counted position by position; None if a block does not fit."""
    ws = dataflow == "ws"
    Cg = L.C // L.G
    terms = [(c, r, s) for c in range(Cg) for r in range(L.R) for s in range(L.S)]
    K = len(terms)
    term_tiles = [terms[k:k + tk] for k in range(0, K, tk)]
    channel_tiles = _channel_tiles(L, tm)
    tm_eff = max(len(t) for t in channel_tiles)
    weights = L.M * K
    blocks = _blocks(L, nb, eb)
    c = Counter()
    biggest = 0
    for positions in blocks:
        rows = _rows(L, positions)
        c["ifmap_loaded"] += len(rows) * L.W
        biggest = max(biggest, len(rows) * L.W * config.ifmap_width)
        for tile in channel_tiles:
            groups = {g for g, _ in tile}
            for t, term_tile in enumerate(term_tiles):
                c["cycles"] += len(positions) + (tk + tm_eff if ws else 2)
                for _ in positions:
                    c["ifmap_reads"] += len(groups) * len(term_tile)
                    for _ in tile:
                        c["macs"] += len(term_tile)
                        c["hops"] += len(term_tile) - 1
                        c["psum_out"] += 1
                        c["psum_in"] += t > 0
    keep = nb * eb * L.F * tm_eff * config.glb_psum_bits + (0 if ws else tm_eff * K * config.weight_width)
    if biggest + keep > glb_bits:
        return None
    resident = biggest + keep + weights * config.weight_width <= glb_bits
    loads = weights * (1 if resident and not ws else len(blocks))
    psums = L.N * L.E * L.F * L.M
    dram = (c["ifmap_loaded"] * _bytes(config.ifmap_width) + weights * _bytes(config.weight_width)
            * (1 if resident else len(blocks)) + psums * _bytes(config.ifmap_width))
    psum_moves = c["hops"] + c["psum_out"] + c["psum_in"]
    if ws:
        noc, rf = loads + c["macs"] + psum_moves, c["macs"] + loads
        glb_weights = weights + loads if resident else 0
    else:
        noc, rf = 2 * c["macs"] + psum_moves, 0
        glb_weights = loads + c["macs"]
    glb = c["ifmap_loaded"] + c["ifmap_reads"] + c["psum_out"] + c["psum_in"] + psums + glb_weights
    cycles = max(c["cycles"], ceil(dram / (config.dram_width // 8)))
    return {"macs": c["macs"], "cycles": cycles, "dram_bytes": dram, "glb": glb, "noc": noc, "rf": rf}


def output_stationary_loops(config, L, dataflow, glb_bits, *, tm, nb, eb, streamed):
    """OS counted tile by tile, the ifmap a tile reads as the set of padded coordinates its
    windows touch; None if a block does not fit."""
    P, Cg = config.pe_count, L.C // L.G
    K = Cg * L.R * L.S
    channel_tiles = _channel_tiles(L, min(tm, L.M))
    tm_eff = max(len(t) for t in channel_tiles)
    room = 1 if dataflow == "os-c" else P // tm
    tf = min(L.F, room)
    te = min(L.E, room // tf)
    tn = min(L.N, room // (tf * te))
    weights = L.M * K
    blocks = _blocks(L, nb, eb)
    c = Counter()
    biggest = 0
    for n0 in range(0, L.N, nb):
        for e0 in range(0, L.E, eb):
            rows = _rows(L, [(n, e, f) for n in range(n0, n0 + nb) for e in range(e0, min(L.E, e0 + eb))
                             for f in range(L.F)])
            c["ifmap_loaded"] += len(rows) * L.W
            biggest = max(biggest, len(rows) * L.W * config.ifmap_width)
            for i0 in range(n0, n0 + nb, tn):
                for t0 in range(e0, min(L.E, e0 + eb), te):
                    for f0 in range(0, L.F, tf):
                        tile = [(n, e, f) for n in range(i0, min(n0 + nb, i0 + tn))
                                for e in range(t0, min(L.E, e0 + eb, t0 + te)) for f in range(f0, min(L.F, f0 + tf))]
                        for channels in channel_tiles:
                            groups = {g for g, _ in channels}
                            c["cycles"] += K + ceil(tm_eff * tn * te * tf / config.array_cols)
                            c["weight_reads"] += K * len(channels)
                            c["macs"] += len(tile) * len(channels) * K
                            c["boxes"] += len({(n, g * Cg + ch, e * L.U + r, f * L.U + s) for n, e, f in tile
                                               for g in groups for ch in range(Cg) for r in range(L.R)
                                               for s in range(L.S)})
    keep = 0 if streamed else tm_eff * K * config.weight_width
    if biggest + keep > glb_bits:
        return None
    resident = not streamed and biggest + keep + weights * config.weight_width <= glb_bits
    psums = L.N * L.E * L.F * L.M
    read_weights = c["weight_reads"] if streamed else weights * (1 if resident else len(blocks))
    dram = ((c["ifmap_loaded"] + psums) * _bytes(config.ifmap_width) + read_weights * _bytes(config.weight_width))
    glb = (c["ifmap_loaded"] + c["boxes"] + 2 * psums
           + (0 if streamed else c["weight_reads"] + weights * (1 if resident else len(blocks))))
    cycles = max(c["cycles"], ceil(dram / (config.dram_width // 8)))
    return {"macs": c["macs"], "cycles": cycles, "dram_bytes": dram, "glb": glb, "noc": 2 * c["macs"] + psums,
            "rf": 2 * c["macs"]}
