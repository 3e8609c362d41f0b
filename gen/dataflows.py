"""Dataflows compared on equal area: row stationary (RS) and the survey's alternatives.

RS is rowstation's own hardware: the mapper's chosen mapping, with cycles and access counts from
the performance model that equals the RTL counters (:func:`rowstation.gen.performance.layer_report`).
Weight stationary (WS), output stationary (OS, variants A/B/C) and no local reuse (NLR) are
analytic models on the same PE count, operand widths, memory port and total on-chip storage:
the storage a dataflow does not keep in its PEs' register files goes to its global buffer
(Chen et al., ISCA 2016). Each searches its own best mapping (tile shapes on the array and
blocks of images and output rows held in the global buffer), least energy first, then fewest
cycles.

Access counts are per level, in elements: ``dram`` counts words of the operand width moved to
or from external memory (a 48-bit psum spilled in a 64-bit word counts as four 16-bit words),
``glb`` global buffer reads and writes, ``noc`` words entering or leaving a PE (from the
global buffer or a neighbour: a word multicast to k PEs counts k times, a psum passed up a chain
once per hop), ``rf`` register-file (scratchpad) reads and writes; every MAC is one ``alu`` operation. Energy is the sum of accesses times the
cost of their level (:data:`COSTS`: the survey's 200 / 6 / 2 / 1 / 1, relative to one MAC).
"""

from itertools import product
from math import ceil

from .zoo import is_fc


__all__ = ["DATAFLOWS", "LEVELS", "COSTS", "cost_table", "parse_costs", "storage_bits", "storage_budget", "evaluate_layer"]


#: Dataflow names: rowstation's RS, then the survey's alternatives.
DATAFLOWS = ("rs", "ws", "os-a", "os-b", "os-c", "nlr")

#: Storage levels, outermost first.
LEVELS = ("dram", "glb", "noc", "rf")

#: Normalised energy per access (survey Fig. 22): DRAM, global buffer, array (NoC), register
#: file, and one MAC in the ALU.
COSTS = {"dram": 200, "glb": 6, "noc": 2, "rf": 1, "alu": 1}


def cost_table(changes):
    """:data:`COSTS` with ``changes`` ({level: cost}) applied; ValueError names a bad entry."""
    costs = dict(COSTS)
    for key, value in changes.items():
        if key not in COSTS or isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
            raise ValueError(f"{key} = {value!r}: a cost is a non-negative number for one of {', '.join(COSTS)}")
        costs[key] = value
    return costs


def parse_costs(text):
    """A cost table from ``"dram=200,glb=6,..."``: the keys given replace :data:`COSTS`' values."""
    changes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"cost item {item!r} is not LEVEL=VALUE with LEVEL one of {', '.join(COSTS)}")
        try:
            changes[key.strip()] = float(value)
        except ValueError:
            raise ValueError(f"cost of {key.strip()} must be a number, not {value.strip()!r}")
    return cost_table(changes)


def _rs_rf_bits(config):
    """Register-file bits of one RS PE: its filter (all banks), ifmap and psum scratchpads."""
    return (config.filter_spad_depth * config.filter_banks * config.weight_width
            + config.ifmap_spad_depth * config.ifmap_width + config.psum_spad_depth * config.psum_width)


def storage_bits(config):
    """On-chip storage of ``config``: the global buffer and every PE's scratchpads."""
    return config.pe_count * _rs_rf_bits(config) + config.glb_words * config.glb_bank_width


def storage_budget(config, dataflow):
    """(register-file bits per PE, global buffer bits) of ``dataflow`` on the area of ``config``:
    RS has ``config``'s scratchpads, WS one weight per PE, OS one psum per PE, NLR none (their
    PEs as many as RS's MACs, ``peak_macs``); each gets the rest of RS's total on-chip storage
    as its global buffer."""
    rf = {"rs": _rs_rf_bits(config), "ws": config.weight_width, "os-a": config.psum_width,
          "os-b": config.psum_width, "os-c": config.psum_width, "nlr": 0}[dataflow]
    return rf, storage_bits(config) - (config.pe_count if dataflow == "rs" else config.peak_macs) * rf


def _bytes(config, width):
    return config.memory_width(width) // 8


def _compulsory_bytes(config, L):
    """Weights, ifmap and (requantised) ofmap moved once each."""
    activation = _bytes(config, config.ifmap_width)
    return L.compulsory(_bytes(config, config.weight_width), activation, activation)


def _operand_bytes(config):
    return _bytes(config, max(config.ifmap_width, config.weight_width))


def _result(config, L, costs, *, cycles, dram_bytes, glb, noc, rf, mapping):
    accesses = {"dram": dram_bytes / _operand_bytes(config), "glb": glb, "noc": noc, "rf": rf}
    energy = {level: accesses[level] * costs[level] for level in LEVELS}
    energy["alu"] = L.macs * costs["alu"]
    energy["total"] = sum(energy.values())
    return {"macs": L.macs, "cycles": cycles, "utilization": L.macs / (config.peak_macs * cycles),
            "accesses": accesses, "energy": energy, "dram_bytes": dram_bytes,
            "dram_compulsory_bytes": _compulsory_bytes(config, L),
            "dram_over_compulsory": dram_bytes / _compulsory_bytes(config, L), "mapping": mapping}


def _rs(config, L, costs, tolerance):
    from .mapper import map_layer
    from .performance import layer_report
    from .program import compile_layer

    m = map_layer(config, L, tolerance=tolerance)
    report = layer_report(m, compile_layer(m, shift=0, check_storage=False))
    pe, per_row = m.pe_config, m.n * L.F * m.p
    # Every PE of a pass takes its filter block and its ifmap rows; psums go up the chains' links,
    # into the chain bottoms from the buffer (not in a first fold) and out of the tops.
    delivered = 0
    for plan in m.plans:
        delivered += (len(plan.assign) * (pe.filter_words + m.n * m.q * pe.row_length)
                      + (len(plan.assign) - len(plan.tops)) * per_row)
    noc = m.blocks * delivered + report["psum_transfers"] + report["opsum_transfers"]
    return _result(config, L, costs, cycles=report["cycles"],
                   dram_bytes=report["dram_read_bytes"] + report["dram_write_bytes"],
                   glb=report["glb_reads"] + report["glb_writes"], noc=noc,
                   rf=report["spad_reads"] + report["spad_writes"],
                   mapping={"p": m.p, "q": m.q, "s": m.seg, "chain": m.chain, "images": m.n,
                            "e_block": m.e_block or L.E, "aligned": m.aligned, "stationary": m.stationary,
                            "binding": report["binding"]})


# The analytic dataflows share a schedule outside the array: the ifmap is read from external
# memory in blocks of ``nb`` images x ``eb`` output rows (every channel, the rows those outputs
# read), each block held in the global buffer while every filter works on it; the weights stay
# in the global buffer for the whole layer when they fit beside the largest block, else they
# are read again for every block; outputs leave once.

def _row_blocks(L, eb):
    """(ifmap rows that blocks of ``eb`` output rows read, summed over the blocks; the most one
    block reads). Rows are loaded whole; a row no window reads (stride beyond the filter) is not."""
    total = most = 0
    for e0 in range(0, L.E, eb):
        rows, end = 0, -1
        for e in range(e0, min(L.E, e0 + eb)):
            lo, hi = max(0, e * L.U - L.P, end + 1), min(L.H - 1, e * L.U - L.P + L.R - 1)
            rows, end = rows + max(0, hi - lo + 1), max(end, hi)
        total, most = total + rows, max(most, rows)
    return total, most


def _blockings(L):
    """(images per block, output rows per block) to try: divisors of N, and E split evenly."""
    images = [n for n in range(1, L.N + 1) if L.N % n == 0]
    rows = sorted({ceil(L.E / j) for j in range(1, L.E + 1)}, reverse=True)
    return [(nb, eb) for nb in images for eb in rows]


def _channel_tiles(L, tm):
    """(channel tiles over all groups, channels per tile, reads of each ifmap value): a tile of
    ``tm`` output channels stays within a group, or takes whole groups when ``tm`` exceeds one."""
    Mg = L.M // L.G
    if tm <= Mg:
        return L.G * ceil(Mg / tm), tm, L.G * ceil(Mg / tm)
    per = min(L.G, tm // Mg)
    return ceil(L.G / per), per * Mg, L.G


def _blocked(config, L, glb_bits, nb, eb, keep_bits):
    """The layer in blocks of ``nb`` images x ``eb`` output rows, or None when the largest
    block's ifmap and what must stay beside it (``keep_bits``) exceed the global buffer:
    (blocks, DRAM bytes, whether the weights stay resident, ifmap elements loaded)."""
    a, w = config.ifmap_width, config.weight_width
    rows_total, rows_most = _row_blocks(L, eb)
    block_bits = nb * L.C * L.W * rows_most * a + keep_bits
    if block_bits > glb_bits:
        return None
    blocks = (L.N // nb) * ceil(L.E / eb)
    weights = L.weight_count
    resident = block_bits + weights * w <= glb_bits
    ifmap = L.N * L.C * L.W * rows_total
    ab, wb = _bytes(config, a), _bytes(config, w)
    dram = ifmap * ab + weights * wb * (1 if resident else blocks) + L.N * L.M * L.E * L.F * ab
    return blocks, dram, resident, ifmap


def _memory_bound(config, cycles, dram_bytes):
    """Cycles are at least the external memory's words (one per cycle)."""
    return max(cycles, ceil(dram_bytes / (config.dram_width // 8)))


def spatial_reduction(config, L, costs, dataflow, glb_bits, *, tm, tk, nb, eb):
    """WS or NLR with ``tm`` output channels x ``tk`` reduction terms (c, r, s) spread on the
    array, in blocks of ``nb`` images x ``eb`` output rows; None if a block does not fit.

    Positions (n, e, f) of a block stream one per cycle through each tile of channels and terms;
    each ifmap value is multicast along the tile's channels (passed PE to PE), psums are summed
    across its terms PE to PE and meet in the global buffer between tiles of terms. WS keeps the
    tile's weights in its PEs' registers (loaded once per block); NLR reads every weight from
    the global buffer for every MAC."""
    K, Q = (L.C // L.G) * L.R * L.S, L.N * L.E * L.F
    weights, psums = L.weight_count, Q * L.M
    ws = dataflow == "ws"
    kt = ceil(K / tk)
    mtiles, tm_eff, ifmap_reads = _channel_tiles(L, tm)
    # The block's psums of one channel tile wait in the buffer between term tiles; NLR also
    # keeps the channel tile's weights there (read at every position).
    keep = nb * eb * L.F * tm_eff * config.glb_psum_bits + (0 if ws else tm_eff * K * config.weight_width)
    blocked = _blocked(config, L, glb_bits, nb, eb, keep)
    if blocked is None:
        return None
    blocks, dram, resident, ifmap = blocked
    loads = weights * (1 if resident and not ws else blocks)   # weights into the PEs (WS) or the buffer
    fill = tk + tm_eff if ws else 2
    cycles = _memory_bound(config, mtiles * kt * (Q + blocks * fill), dram)
    psum_noc = psums * (K - kt) + psums * (2 * kt - 1)   # hops in the array, out and back in
    glb_psums = psums * kt + psums * (kt - 1) + psums    # writes, reads for the next tile, the store
    # Every MAC takes an ifmap value; WS's PEs take their weights once per block, NLR's one per MAC.
    if ws:
        noc = loads + L.macs + psum_noc
        glb_weights = weights + loads if resident else 0   # else straight from memory
        rf = L.macs + loads
    else:
        noc = 2 * L.macs + psum_noc
        glb_weights = loads + L.macs
        rf = 0
    glb = ifmap + Q * K * ifmap_reads + glb_psums + glb_weights
    return _result(config, L, costs, cycles=cycles, dram_bytes=dram, glb=glb, noc=noc, rf=rf,
                   mapping={"channels": tm_eff, "terms": tk, "images": nb, "rows": eb,
                            "weights": "resident" if resident else "per block"})


def _spatial_reduction(config, L, costs, dataflow, glb_bits):
    """The best :func:`spatial_reduction` mapping: tiles of terms that divide the reduction or
    split it evenly, as many channels as fit beside them, every blocking."""
    P, K = config.peak_macs, (L.C // L.G) * L.R * L.S
    tks = sorted({min(K, P)} | {d for d in range(1, min(K, P) + 1) if K % d == 0}
                 | {ceil(K / j) for j in range(1, 17) if ceil(K / j) <= P})
    best = None
    for tk in tks:
        for tm in {min(P // tk, L.M), min(P // tk, L.M // L.G)}:
            for nb, eb in _blockings(L):
                best = _better(best, spatial_reduction(config, L, costs, dataflow, glb_bits, tm=tm, tk=tk, nb=nb, eb=eb))
    return best


def _row_tiles(L, eb, te):
    """Tiles of ``te`` output rows in blocks of ``eb`` rows: (how many, padded ifmap rows their
    windows read, summed)."""
    tiles = spanned = 0
    for e0 in range(0, L.E, eb):
        for t0 in range(e0, min(L.E, e0 + eb), te):
            rows = min(L.E, e0 + eb, t0 + te) - t0
            tiles, spanned = tiles + 1, spanned + (rows - 1) * min(L.U, L.R) + L.R
    return tiles, spanned


def output_stationary(config, L, costs, dataflow, glb_bits, *, tm, nb, eb, streamed):
    """OS with tiles of ``tm`` output channels x the positions the other PEs hold, in blocks of
    ``nb`` images x ``eb`` output rows; None if a block does not fit.

    Each PE accumulates one output in its register over all reduction terms; a tile takes one
    term a cycle: its weights multicast along the positions, one ifmap value per position
    multicast along the channels (values that neighbouring windows share pass between PEs: the
    global buffer is read once per tile for each), then drains its outputs through one port per
    array column. A channel tile's weights wait in the buffer for the block's position tiles,
    or with ``streamed`` every position tile reads them from memory. Positions are ``tf``
    columns x ``te`` rows x ``tn`` images (variant C: one position)."""
    P, K = config.peak_macs, (L.C // L.G) * L.R * L.S
    weights, psums = L.weight_count, L.N * L.E * L.F * L.M
    mtiles, tm_eff, ifmap_reads = _channel_tiles(L, min(tm, L.M))
    room = 1 if dataflow == "os-c" else P // tm
    tf = min(L.F, room)
    te = min(L.E, room // tf)
    tn = min(L.N, room // (tf * te))
    col_tiles = ceil(L.F / tf)
    cols_spanned = sum((min(L.F, f0 + tf) - f0 - 1) * min(L.U, L.S) + L.S for f0 in range(0, L.F, tf))
    blocked = _blocked(config, L, glb_bits, nb, eb, 0 if streamed else tm_eff * K * config.weight_width)
    if blocked is None:
        return None
    blocks, dram, resident, ifmap = blocked
    row_tiles, rows_spanned = _row_tiles(L, eb, te)
    tiles = (L.N // nb) * ceil(nb / tn) * row_tiles * col_tiles   # position tiles, per channel tile
    positions = tn * te * tf
    drain = ceil(tm_eff * positions / config.array_cols)
    weight_reads = tiles * weights   # every position tile takes every channel's weights
    if streamed:
        resident = False
        dram += (weight_reads - weights) * _bytes(config, config.weight_width)
    cycles = _memory_bound(config, mtiles * tiles * (K + drain), dram)
    noc = 2 * L.macs + psums     # a weight and an ifmap value into every MAC, the outputs out
    # Each tile reads the padded ifmap box its windows span, once per channel it needs.
    boxes = L.N * rows_spanned * cols_spanned * (L.C // L.G)
    glb = (ifmap + boxes * ifmap_reads + 2 * psums
           + (0 if streamed else weight_reads + weights * (1 if resident else blocks)))
    return _result(config, L, costs, cycles=cycles, dram_bytes=dram, glb=glb, noc=noc, rf=2 * L.macs,
                   mapping={"channels": tm_eff, "positions": positions, "images": nb, "rows": eb,
                            "weights": "streamed" if streamed else "resident" if resident else "per block"})


def _output_stationary(config, L, costs, dataflow, glb_bits):
    """The best :func:`output_stationary` mapping. Variant A spreads positions only (tm = 1), C
    channels only (one position; the channel count is searched), B both."""
    P = config.peak_macs
    powers = [1 << i for i in range(P.bit_length()) if 1 << i <= P]
    best = None
    for tm in {"os-a": [1], "os-c": powers[1:], "os-b": powers[1:-1]}[dataflow]:
        for (nb, eb), streamed in product(_blockings(L), (False, True)):
            best = _better(best, output_stationary(config, L, costs, dataflow, glb_bits, tm=tm, nb=nb, eb=eb,
                                                   streamed=streamed))
    return best


def _better(best, result):
    if result is None:
        return best
    key = (result["energy"]["total"], result["cycles"])
    return result if best is None or key < (best["energy"]["total"], best["cycles"]) else best


def evaluate_layer(config, name, layer, dataflow, costs=COSTS, tolerance=0.0):
    """The figures of ``layer`` (named ``name``) under ``dataflow`` on the area of ``config``: a
    dict with ``name``, the shape, ``weights``, ``macs``, ``cycles``, ``utilization``,
    ``accesses`` and ``energy`` by level (and ``total``), DRAM bytes over the compulsory minimum,
    and the mapping chosen (RS: the mapper's, with its cycle ``tolerance``). ValueError names the
    layer if it cannot be mapped."""
    if dataflow not in DATAFLOWS:
        raise ValueError(f"unknown dataflow {dataflow!r}; dataflows: {', '.join(DATAFLOWS)}")
    try:
        if dataflow == "rs":
            result = _rs(config, layer, costs, tolerance)
        else:
            _, glb_bits = storage_budget(config, dataflow)
            model = _spatial_reduction if dataflow in ("ws", "nlr") else _output_stationary
            result = model(config, layer, costs, dataflow, glb_bits)
            if result is None:
                rows = _row_blocks(layer, 1)[1]
                raise ValueError(f"no blocking fits its {glb_bits // 8}-byte global buffer (the smallest, "
                                 f"one output row of one image, holds {rows} ifmap rows x C = {layer.C} x "
                                 f"W = {layer.W} = {rows * layer.C * layer.W * config.ifmap_width // 8} bytes "
                                 f"besides the psums and weights it keeps)")
    except ValueError as error:
        raise ValueError(f"layer {name} ({layer}), dataflow {dataflow}: {error}") from None
    return {"name": name, "layer": layer.to_dict(), "fc": is_fc(layer), "weights": layer.weight_count,
            "dram_per_mac": result["accesses"]["dram"] / layer.macs, **result}
