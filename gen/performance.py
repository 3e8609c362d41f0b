"""The performance model: cycles of a compiled layer, replayed as the controller runs it.

The three units are followed instruction by instruction with the costs the hardware has
(:mod:`rowstation.hw.controller`): a ``LOAD`` of ``n`` words takes ``n`` cycles plus the memory
latency, a ``FILL`` ``n`` cycles, a ``STORE`` ``n`` cycles, each plus a fixed start cost; a
pass takes its MAC slots (or its longest stream, one element per cycle per network) plus the
pipeline fill and drain of its chains. The units meet where the program's dependency tokens
make them wait; the filter stream of a pass overlaps the previous pass when the PEs have a free
filter bank. The access counts are not modelled here: the program's own counts are exact
(:func:`rowstation.sim.controller_model.run_program` checks them).
"""

from .isa import ARGUMENTS, Opcode, Token, decode
from .program import pass_plans


__all__ = ["COSTS", "predict_cycles"]


#: Cycle costs of the hardware, beyond one per element moved: per instruction started (decoded
#: ahead while the previous one runs), a LOAD's external memory latency, and per pass the
#: start (data commit to first MAC) and the drain (last MAC to last psum stored), plus per PE of
#: a chain. Fitted to Verilator runs of the test layers on ``tiny`` (``docs/performance.md``).
COSTS = {"instruction": 4, "memory_latency": 4, "pass_start": 6, "pass_drain": 5,
         "chain": 2, "end": 3}


def _instructions(words):
    """(opcode, operand, args, pop set, push set) of each instruction of a stream."""
    pc = 0
    while pc < len(words):
        fields = decode(words[pc])
        opcode = Opcode(fields["opcode"])
        args = words[pc + 1:pc + 1 + ARGUMENTS[opcode]]
        tokens = {name: {t for t in Token if fields[name] >> t & 1} for name in ("pop", "push")}
        yield opcode, fields["operand"], args, tokens["pop"], tokens["push"], 1 + len(args)
        pc += 1 + len(args)


def predict_cycles(mapping, program):
    """Cycles the core takes to run ``program`` (compiled from ``mapping``), no memory stalls."""
    c, L, m = mapping.config, mapping.layer, mapping
    pe = m.pe_config
    plans = pass_plans(m)
    slots = L.N * L.F * m.seg * m.p * m.q

    # Each unit's timeline: when it is free, and when each token was given.
    given = {token: [] for token in Token}
    taken = {token: 0 for token in Token}

    def wait(pops, now):
        for token in pops:
            now = max(now, given[token][taken[token]])
            taken[token] += 1
        return now

    load = [i for i in _instructions(program.streams["load"]) if i[0] != Opcode.END]
    store = [i for i in _instructions(program.streams["store"]) if i[0] != Opcode.END]
    execute = list(_instructions(program.streams["execute"]))

    # The load and store units depend on the execute unit's tokens and it on theirs; replay
    # all three in one pass over the execute stream, running the others as far as they can.
    load_at, store_at = 0, 0
    li = si = 0

    def run_load(until_token_count):
        """Run the load unit until it has given ``until_token_count`` LOAD_EXECUTE tokens."""
        nonlocal load_at, li
        while len(given[Token.LOAD_EXECUTE]) < until_token_count:
            opcode, _, args, pops, pushes, _ = load[li]
            start = wait(pops, load_at)
            count = args[2] if opcode == Opcode.LOAD else args[1]
            latency = COSTS["memory_latency"] if opcode == Opcode.LOAD and count else 0
            load_at = start + COSTS["instruction"] + count + latency
            for token in pushes:
                given[token].append(load_at)
            li += 1

    def run_store():
        """Run the store unit as far as its EXECUTE_STORE tokens allow."""
        nonlocal store_at, si
        while si < len(store):
            opcode, _, args, pops, pushes, _ = store[si]
            if Token.EXECUTE_STORE in pops and taken[Token.EXECUTE_STORE] >= len(given[Token.EXECUTE_STORE]):
                return
            start = wait(pops, store_at)
            store_at = start + COSTS["instruction"] + args[2]
            for token in pushes:
                given[token].append(store_at)
            si += 1

    exec_at = 0          # the execute unit's decode position in time
    filter_free = 0      # the filter stream has delivered its last word
    pass_end = [0, 0]    # the end of the previous two passes
    k = 0
    for opcode, _, args, pops, pushes, words in execute:
        exec_at += words     # one word decoded per cycle
        if opcode != Opcode.RUN:
            continue
        plan = plans[k]
        words_f = len(plan.filters) * pe.filter_words
        words_i = len(plan.ifmap_rows) * L.N * m.q * pe.row_length
        words_p = len(plan.bottoms) * L.N * L.F * m.p
        # Filter phase: the stream starts when free; with one filter bank the PEs take the
        # weights once they finish the previous pass, with two once the pass before that ends.
        bank_free = pass_end[-1] if c.filter_banks == 1 else pass_end[-2]
        filter_start = max(exec_at, filter_free)
        filters_in = max(filter_start, bank_free) + words_f
        filter_free = filters_in
        # Data phase: the previous pass is done and the popped tokens are there.
        if Token.LOAD_EXECUTE in pops:
            run_load(taken[Token.LOAD_EXECUTE] + 1)
        start = wait(pops, max(pass_end[-1], filter_start)) + 1
        compute = max(slots, words_i, words_p)
        first_mac = max(start + COSTS["pass_start"], filters_in)
        end = first_mac + compute + COSTS["pass_drain"] + COSTS["chain"] * m.chain
        exec_at = start
        pass_end = [pass_end[-1], end]
        for token in pushes:
            given[token].append(end)
        run_store()
        k += 1
    run_store()
    return max(pass_end[-1], store_at, load_at) + COSTS["end"]
