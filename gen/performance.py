"""The performance model: cycles of a compiled layer, replayed as the controller runs it.

The three units are followed instruction by instruction with the costs the hardware has
(:mod:`rowstation.hw.controller`): the load unit cuts a ``LOAD``'s run into bursts at one a
cycle and writes its ``n`` elements as they return after the memory latency, a ``FILL`` ``n``
elements, a ``STORE`` takes ``n`` cycles, each instruction plus a fixed start cost; a pass
takes its MAC slots (or its busiest network: one activation per cycle on the ifmap network, one
psum per cycle on each lane of the psum and output networks, ``filter_noc_width`` weights on
the filter network; :meth:`~rowstation.gen.mapper.Mapping.pass_timing`, with the wait for the
first ifmap windows and the busiest lane's last column) plus the pipeline fill and drain of its
chains, or, when its filters arrive late, the last PE's MAC slots (or the psum writes of its
busiest global buffer bank, if more) after its weights. The units meet where the program's
dependency tokens make them wait; the filter stream of a pass (none for the PEs that keep their
filters) overlaps the previous pass when the PEs have a free filter bank; a STORE waits for its
instruction's words (one a cycle, decoded ahead while earlier ones run); external memory serves
one word per cycle to the loads and the filter stream together. A pass also takes at least the
reads, or the writes, its streams make in its busiest global buffer bank (where a small buffer
puts the ifmap rows and the psums, or two psum lanes, in one bank). The access counts are not
modelled here: the program's own counts are exact
(:func:`rowstation.sim.controller_model.run_program` checks them).
"""

from math import isqrt

from .isa import ARGUMENTS, NETWORKS, WORD_WIDTH, Opcode, Region, Token, decode, decode_load
from .program import words_spanned


__all__ = ["COSTS", "predict_cycles", "program_bytes", "layer_report", "REPORT_KEYS", "dram_floor"]


#: Cycle costs of the hardware, beyond one per element moved: per instruction started (the
#: next ones decoded a program word a cycle while it runs), a LOAD's external memory latency
#: (the simulation harness's), a filter stream's from its start to its first weight, and per
#: pass the start (data commit to first MAC) and the drain (last MAC to last psum stored,
#: beyond the PEs' pipeline, ``pe_latency``), plus per PE of a chain. Fitted to the no-stall
#: Verilator runs of the test layers on ``tiny`` (one and two psum lanes, two MAC lanes) and
#: on a 2 x 3 array (``pass_start`` refitted from 4 to 3 on the random configurations of
#: ``tests/test_random_rtl.py``), and checked on AlexNet CONV1 and CONV5 on ``eyeriss-v1``
#: (``docs/performance.md``).
COSTS = {"filter_latency": 8, "instruction": 3, "memory_latency": 4, "pass_start": 3, "pass_drain": 0,
         "chain": 1, "end": 8}


_TOKEN_SETS = [frozenset(t for t in Token if mask >> t & 1) for mask in range(1 << len(Token))]


def _instructions(words):
    """(opcode, operand, args, pop set, push set) of each instruction of a stream."""
    heads, pc, end = {}, 0, len(words)
    while pc < end:
        head = heads.get(words[pc])
        if head is None:
            fields = decode(words[pc])
            opcode = Opcode(fields["opcode"])
            head = heads[words[pc]] = (opcode, fields["operand"], ARGUMENTS[opcode],
                                       _TOKEN_SETS[fields["pop"]], _TOKEN_SETS[fields["push"]])
        opcode, operand, count, pops, pushes = head
        yield opcode, operand, words[pc + 1:pc + 1 + count], pops, pushes
        pc += 1 + count


def _runs(words):
    """Per RUN of an execute stream: (words up to and including it since the previous RUN,
    its pop set, its push set). Register writes are only counted."""
    runs, pc, since, run, write = [], 0, 0, int(Opcode.RUN), int(Opcode.WRITE)
    end = len(words)
    while pc < end:
        opcode = words[pc] >> 28
        if opcode == write:
            pc += 2
            since += 2
            continue
        if opcode == run:
            fields = decode(words[pc])
            runs.append((since + 1, _TOKEN_SETS[fields["pop"]], _TOKEN_SETS[fields["push"]]))
            since = 0
        pc += 1 + ARGUMENTS[Opcode(opcode)]
    return runs


class _Decoder:
    """When a unit's instructions are decoded: one program word a cycle, an instruction at a
    time into a queue of two that the unit takes from as each instruction ends
    (:class:`rowstation.hw.controller.InstructionDecoder`)."""

    def __init__(self):
        self._entered, self._taken = 0, [0, 0]

    def decoded(self, words):
        """When the next instruction, of ``words`` words, is in the queue."""
        self._entered = max(self._entered + words, self._taken[-2])
        return self._entered

    def taken(self, at):
        """The unit took its instruction at ``at``."""
        self._taken = [self._taken[-1], at]


def program_bytes(program):
    """Bytes of ``program``'s three instruction streams (the accelerator fetches them from
    external memory beside the tensors)."""
    return WORD_WIDTH // 8 * sum(len(words) for words in program.streams.values())


def predict_cycles(mapping, program, *, breakdown=None, fetched=False):
    """Cycles the core takes to run ``program`` (compiled from ``mapping``), no memory stalls;
    ``fetched``: the program's words come through the external memory port too, as in the
    accelerator (the simulation harness of the core serves them apart).
    ``breakdown`` (a dict), if given, receives the cycles of MAC slots, the cycles passes ran
    longer because a network (one element per cycle) carried more words than that, and the
    cycles passes waited for loads, filters and stores; and "memory port" when the reads of
    external memory (one word per cycle) take longer than all of that."""
    c, L, m = mapping.config, mapping.layer, mapping
    plans = m.plans
    slots = m.pe_config.mac_cycles

    # Each unit's timeline: when it is free, and when each token was given.
    given = {token: [] for token in Token}
    taken = {token: 0 for token in Token}

    def wait(pops, now):
        for token in pops:
            now = max(now, given[token][taken[token]])
            taken[token] += 1
        return now

    layout, word = program.layout, c.dram_width // 8
    load = [i for i in _instructions(program.streams["load"]) if i[0] != Opcode.END]
    store = [i for i in _instructions(program.streams["store"]) if i[0] != Opcode.END]
    execute = _runs(program.streams["execute"])

    # The load and store units depend on the execute unit's tokens and it on theirs; replay
    # all three in one pass over the execute stream, running the others as far as they can.
    load_at, store_at = 0, 0
    li = si = 0

    write_at = 0   # the load unit's write stage (it trails the issue stage)

    def run_load(until_token_count):
        """Run the load unit until it has given ``until_token_count`` LOAD_EXECUTE tokens: its
        issue stage takes instructions back to back (a LOAD's run is cut into bursts at one a
        cycle), its write stage writes their elements in order as they return (a FILL's at one
        per cycle)."""
        nonlocal load_at, write_at, li
        while len(given[Token.LOAD_EXECUTE]) < until_token_count:
            opcode, operand, args, pops, pushes = load[li]
            start = wait(pops, load_at) + COSTS["instruction"]
            if opcode == Opcode.LOAD:
                count, fields = args[2], decode_load(operand)
                size = layout.ifmap_bytes if fields["region"] == Region.IFMAP else c.memory_width(c.psum_width) // 8
                rows = range(fields["rows"])
                load_at = start + sum(-(-words_spanned(args[1] + row * args[3], count, size, word) // c.dram_burst)
                                      for row in rows)
                write_at = max(write_at, start + COSTS["memory_latency"]) + len(rows) * (count + 2 * fields["pad"])
            else:
                load_at = start
                write_at = max(write_at, start) + args[1]
            for token in pushes:
                given[token].append(write_at)
            li += 1

    store_decoder = _Decoder()

    def run_store():
        """Run the store unit as far as its EXECUTE_STORE tokens allow."""
        nonlocal store_at, si
        while si < len(store):
            opcode, _, args, pops, pushes = store[si]
            if Token.EXECUTE_STORE in pops and taken[Token.EXECUTE_STORE] >= len(given[Token.EXECUTE_STORE]):
                return
            start = max(wait(pops, store_at), store_decoder.decoded(1 + len(args)))
            store_at = start + COSTS["instruction"] + args[2]
            store_decoder.taken(store_at)
            for token in pushes:
                given[token].append(store_at)
            si += 1

    def waited_for_store():
        """Whether the load group this pass waited for ended with a store's token."""
        index = taken[Token.LOAD_EXECUTE] - 1
        return index in store_gated

    # Load groups whose LOAD_EXECUTE token waited for a STORE_LOAD token (tile boundaries).
    store_gated, groups = set(), 0
    for opcode, _, _, pops, pushes in load:
        if Token.LOAD_EXECUTE in pushes:
            if Token.STORE_LOAD in pops:
                store_gated.add(groups)
            groups += 1

    exec_at = 0          # the execute unit's decode position in time
    filter_free = 0      # the filter stream has delivered its last word
    pass_end = [0, 0]    # the end of the previous two passes
    macs_end = [0, 0]    # the last MAC slot of the previous two passes (a filter bank frees)
    k = 0
    for words, pops, pushes in execute:
        exec_at += words     # one word decoded per cycle
        plan = plans[k % len(plans)]    # the passes repeat per block of images
        words_f = program.filter_entries[k] * m.filter_transfers   # none to PEs that keep theirs
        # The chain tops return every psum through their lane of the output network (the psum
        # network brings as many back to the bottoms, in the same lanes, or none in a first fold).
        lane_tops = c.psum_lane_chains(col for _, col in plan.tops)
        # Filter phase: the stream starts when free; with one filter bank the PEs take the
        # weights once the previous pass has issued its last MAC, with two once the pass
        # before that has.
        bank_free = macs_end[-1] if c.filter_banks == 1 else macs_end[-2]
        filter_start = max(exec_at, filter_free)
        if words_f:
            filters_in = max(filter_start + COSTS["filter_latency"], bank_free) + words_f
        else:
            filters_in = filter_start
        filter_free = filters_in
        # Data phase: the previous pass is done and the popped tokens are there.
        if Token.LOAD_EXECUTE in pops:
            run_load(taken[Token.LOAD_EXECUTE] + 1)
        ready = max(pass_end[-1], filter_start)
        start = wait(pops, ready) + 1
        timing = m.pass_timing(len(plan.ifmap_rows), lane_tops)
        last_mac, last_psum = timing.last_mac, timing.last_psum
        # A global buffer bank that serves more of the pass's reads or writes than that (the
        # streams' regions share it) holds every stream back: the pass takes those accesses.
        banks = max(program.bank_reads[k], program.bank_writes[k]) - last_mac
        if banks > 0:
            last_mac, last_psum = last_mac + banks, last_psum + banks
        first_mac = start + COSTS["pass_start"]
        # Filters that arrive late hold back the last PE's MAC slots and the psums written
        # into the busiest bank (none before the MACs; the ifmap rows are read meanwhile).
        after_filters = max(slots, program.bank_writes[k])
        done = max(first_mac + last_psum, filters_in + after_filters + last_psum - last_mac)
        end = done + c.pe_latency + COSTS["pass_drain"] + COSTS["chain"] * m.chain
        if breakdown is not None:
            waited_tokens = start - 1 - ready
            reason = "stores" if Token.LOAD_EXECUTE in pops and waited_for_store() else "loads"
            breakdown[reason] = breakdown.get(reason, 0) + waited_tokens
            breakdown["filters"] = breakdown.get("filters", 0) + done - (first_mac + last_psum)
            breakdown["macs"] = breakdown.get("macs", 0) + slots
            # Beyond the MAC slots: the busiest network's words, or the ifmap stream's first
            # windows and the output network's last column.
            words_i, words_o = timing.words_i, timing.words_o
            if banks > 0:
                binding = "buffer banks"
            elif words_o == last_mac and words_o > words_i:
                binding = "output network"
            else:
                binding = "ifmap network"
            lost = {binding: last_mac - slots}
            lost["output network"] = lost.get("output network", 0) + last_psum - last_mac
            for network, cycles in lost.items():
                breakdown[network] = breakdown.get(network, 0) + cycles
        exec_at = start
        pass_end = [pass_end[-1], end]
        macs_end = [macs_end[-1], done - (last_psum - last_mac)]
        for token in pushes:
            given[token].append(end)
        run_store()
        k += 1
    run_store()
    # External memory answers one read per cycle, shared by the loads and the filter stream:
    # the run takes at least its reads.
    reads = program.dram_reads + COSTS["memory_latency"]
    if fetched:
        reads += -(-program_bytes(program) // (c.dram_width // 8))
    end = max(pass_end[-1], store_at, write_at)
    if breakdown is not None and reads > end:
        breakdown["memory port"] = reads - end
    return max(end, reads) + COSTS["end"]


#: The keys of a layer report, shared by ``rowstation map --json`` (the model) and
#: ``rowstation run-layer --report`` (the RTL's counters).
REPORT_KEYS = ("cycles", "macs", "pe_utilization", "passes", "epochs", "tiles", "dram_read_bytes",
               "dram_write_bytes", "dram_compulsory_bytes", "program_bytes", "glb_reads", "glb_writes",
               *(f"{net}_transfers" for net in NETWORKS), "opsum_transfers", "spad_reads",
               "spad_writes", "binding")


def _stream_counts(program):
    """Elements the load and store streams move: (loaded, filled, stored); a LOAD's padding
    zeros count as filled."""
    loaded = filled = stored = 0
    for opcode, operand, args, _, _ in _instructions(program.streams["load"]):
        if opcode == Opcode.LOAD:
            fields = decode_load(operand)
            loaded += fields["rows"] * args[2]
            filled += fields["rows"] * 2 * fields["pad"]
        elif opcode == Opcode.FILL:
            filled += args[1]
    for opcode, _, args, _, _ in _instructions(program.streams["store"]):
        if opcode == Opcode.STORE:
            stored += args[2]
    return loaded, filled, stored


def _binding(breakdown):
    """"memory port" when the reads of external memory set the time, else "macs" when the
    passes lose less than a tenth of their MAC slots to anything else, else what they lost most
    to."""
    if "memory port" in breakdown:
        return "memory port"
    others = {name: cycles for name, cycles in breakdown.items() if name != "macs"}
    if sum(others.values()) <= breakdown.get("macs", 0) / 10:
        return "macs"
    return max(others, key=others.get)


def layer_report(mapping, program, *, fetched=False):
    """The model's :data:`REPORT_KEYS` for ``program``: cycles from :func:`predict_cycles`
    (``fetched`` as there), access counts exact (they do not depend on the data) but for the
    scratchpads', which are those of an ifmap without zeros (zeros, the padding's included,
    only lower them). ``dram_read_bytes`` are the tensors' (the core's reads), ``program_bytes``
    the instruction words the units decode."""
    c, L, m = mapping.config, mapping.layer, mapping
    pe = m.pe_config
    breakdown = {}
    cycles = predict_cycles(m, program, breakdown=breakdown, fetched=fetched)
    loaded, filled, stored = _stream_counts(program)
    transfers = dict.fromkeys(("filt", "ifmap", "psum", "opsum"), 0)
    psum_reads = 0
    # Scratchpad accesses of one PE's pass with no zero ifmap (zeros gate filter reads and
    # psum accesses, so the RTL counts at most these): per output and filter, s*q steps read
    # the ifmap once, the filter p times, and the psum spad between the first and last step.
    steps = m.n * L.F * pe.s * pe.q
    per_pe = {"reads": steps + steps * pe.p + 2 * m.n * L.F * (pe.s * pe.q - 1) * pe.p // 2,
              "writes": m.n * pe.q * pe.row_length
                        + m.n * L.F * (pe.s * pe.q - 1) * pe.p}
    spad = dict.fromkeys(per_pe, 0)
    for (g, k), plan in zip(m.pass_order(), m.plans):
        transfers["ifmap"] += len(plan.ifmap_rows) * m.n * m.q * pe.row_length
        psums = len(plan.bottoms) * m.n * L.F * m.p if k != m.first_chunk(g) else 0   # a first fold's are zeros
        transfers["psum"] += psums
        psum_reads += psums
        transfers["opsum"] += len(plan.tops) * m.n * L.F * m.p
        for kind in spad:
            spad[kind] += len(plan.assign) * per_pe[kind]
    transfers = {net: count * m.blocks for net, count in transfers.items()}
    transfers["filt"] = sum(program.filter_entries) * m.filter_transfers
    psum_reads *= m.blocks
    word, layout = c.dram_width // 8, program.layout
    compulsory = L.compulsory(layout.weight_bytes, layout.ifmap_bytes, layout.output_bytes)
    report = {
        "cycles": cycles, "macs": L.macs, "pe_utilization": L.macs / (c.peak_macs * cycles),
        "passes": len(m.passes) * m.blocks, "images_per_pass": m.n, "epochs": program.epochs, "tiles": program.tiles,
        "dram_read_bytes": program.dram_reads * word, "dram_write_bytes": program.dram_writes * word,
        "dram_compulsory_bytes": compulsory, "program_bytes": program_bytes(program),
        "glb_reads": transfers["ifmap"] + psum_reads + stored,
        "glb_writes": loaded + filled + transfers["opsum"],
        **{f"{net}_transfers": count for net, count in transfers.items()},
        "spad_reads": spad["reads"] * m.blocks,
        "spad_writes": spad["writes"] * m.blocks + program.filter_loads * pe.filter_words,
        "binding": _binding(breakdown),
    }
    return report


def dram_floor(config, layer):
    """External memory elements below which no schedule of ``layer`` on ``config`` that tiles
    its outputs goes, counted generously for the schedule.

    Where every mapping folds the reduction through the global buffer, the psums of the
    outputs under way (a filters x b output positions, positions being images x rows x
    columns) fit the buffer, which holds nothing else; each weight is read once per tile of
    positions, less what the filter scratchpads (all banks of all PEs) keep from the tile before,
    and each ifmap value once per tile of filters, less what the rest of the buffer keeps (the
    rows' overlap between tiles left out). The least over the tile sizes and both loop orders
    (filters or positions outermost), per group, plus the outputs once. Where a mapping
    reduces within the array (a single fold), the compulsory count."""
    from .mapper import candidates

    c, L = config, layer
    if any(m.chunks == 1 for m in candidates(c, L)):
        return L.compulsory()
    Mg, Cg = L.M // L.G, L.C // L.G
    weights, ifmap, positions = Mg * Cg * L.R * L.S, L.N * Cg * L.H * L.W, L.N * L.E * L.F
    lanes_p, lanes_i = c.glb_lanes(c.glb_psum_bits), c.glb_lanes(c.ifmap_width)
    psums, kept_weights = c.glb_words * lanes_p, c.pe_count * c.filter_spad_depth * c.filter_banks
    # Tile sizes: every ceil(positions / tiles) (each tile count's least size) and the largest.
    root = isqrt(positions)
    sizes = {-(-positions // tiles) for tiles in range(1, root + 2)} | set(range(1, min(root + 2, positions + 1)))
    def traffic(a, b):      # tiles of a filters x b positions, the cheaper loop order
        sets, tiles = -(-Mg // a), -(-positions // b)
        set_weights = a * Cg * L.R * L.S
        kept_ifmap = (c.glb_words - -(-a * b // lanes_p)) * lanes_i
        filters_outer = (sets * (set_weights + (tiles - 1) * max(0, set_weights - kept_weights))
                         + ifmap + (sets - 1) * max(0, ifmap - kept_ifmap))
        positions_outer = (tiles * weights - (tiles - 1) * min(kept_weights, weights)
                           + ifmap + tiles * (sets - 1) * max(0, ifmap * b // positions - kept_ifmap))
        return min(filters_outer, positions_outer)

    least = min(traffic(a, b) for a in range(1, min(Mg, psums) + 1)
                for b in {min(positions, psums // a)} | {b for b in sizes if b * a <= psums})
    return L.G * least + L.N * L.M * L.E * L.F
