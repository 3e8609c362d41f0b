"""The controller's program: compiled from the mapper's choice, executed by the controller
model, it reproduces the convolution in external memory; its streams carry exactly the
schedule's words (checked inside the model); the global buffer limit is enforced."""

from dataclasses import replace
from itertools import permutations

import numpy as np
import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.gen.allocation import ZERO_ROW, pass_words, row_schedule
from rowstation.gen.mapper import Mapping, candidates, map_layer
from rowstation.gen.isa import ARGUMENTS, FIELDS, Opcode, Region, RegisterMap, Token, decode, decode_store, encode, \
    store_operand
from rowstation.gen.performance import dram_floor, layer_report, predict_cycles
from rowstation.gen.program import DramLayout, compile_layer, load_bound
from rowstation.sim.controller_model import dram_image, dram_output, run_program, walk
from rowstation.sim.stimulus import random_layer_arrays

from reference import conv2d_loops, requantize_loops
from test_mapper import LAYERS, ONE_BUFFER, SMALL, TINY


#: Bit position of each opcode-word field.
FIELDS_AT = [(name, sum(width for _, width in FIELDS[:i])) for i, (name, _) in enumerate(FIELDS)]


def run(config, layer, seed, *, mapping=None, shift=None, relu=False, **layout):
    """The program computes the layer whichever unit runs ahead, with the same counts."""
    arrays = random_layer_arrays(config, layer, seed=seed, zeros=0.2)
    x, w, b = arrays["ifmap"], arrays["weights"], arrays["bias"]
    mapping = mapping or map_layer(config, layer)
    dram = DramLayout.packed(mapping, **layout, requantized=shift is not None)
    program = compile_layer(mapping, b, dram, shift=shift, relu=relu)
    want = conv2d_loops(x, w, b, layer.U, layer.P, layer.G)
    if shift is not None:
        want = requantize_loops(want, shift, relu, config.ifmap_width)
    results = []
    for ahead in ("load", "execute", "store"):
        memory = dram_image(mapping, dram, x, w)
        counts = run_program(mapping, program.streams, memory, x, w, ahead=ahead)
        np.testing.assert_array_equal(dram_output(memory, dram, layer), want)
        results.append(counts)
    assert results[0] == results[1] == results[2]
    assert counts["dram_reads"] == program.dram_reads and counts["dram_writes"] == program.dram_writes
    # The row cache's bound is one (the mapper orders and prunes block sizes of images by it).
    assert load_bound(mapping) <= predict_cycles(mapping, program)
    # The search counts the filter stream the compiler emits (kept filters included) exactly.
    assert sum(program.filter_entries) * mapping.pe_config.filter_words == mapping.stats["filter_noc_words"]
    return program, counts


@pytest.mark.parametrize("config", [TINY, SMALL, TINY.replace(psum_noc_lanes=3), TINY.replace(mac_lanes=2),
                                    TINY.replace(mac_lanes=4, filter_noc_width=4), TINY.replace(ifmap_noc_lanes=2),
                                    SMALL.replace(ifmap_noc_lanes=3, psum_noc_lanes=2)],
                         ids=["tiny", "small", "three-psum-lanes", "two-mac-lanes", "four-mac-lanes",
                              "two-ifmap-lanes", "three-ifmap-lanes"])
@pytest.mark.parametrize("spec", LAYERS)
def test_program_computes_the_layer(config, spec):
    run(config, ConvLayer.parse(spec), seed=len(spec), base=17)


@pytest.mark.parametrize("shift,relu", [(0, False), (5, True), (9, False)])
def test_program_requantizes_on_the_way_out(shift, relu):
    run(TINY, ConvLayer.parse("N=2,C=6,H=8,W=8,M=6,R=3,S=3,P=1"), seed=2, shift=shift, relu=relu)


@pytest.mark.parametrize("kwargs,message", [
    (dict(shift=24), r"^shift must be between 0 and 23 \(psum_width - 1\), not 24$"),
    (dict(bias=[1 << 23, 0]), r"^bias must hold M = 2 values in the signed 24-bit range \(psum_width\), "
                              r"not 2 values with 8388608$"),
    (dict(bias=[1]), r"^bias must hold M = 2 values in the signed 24-bit range \(psum_width\), not 1 values$"),
])
def test_compile_layer_wrong(kwargs, message):
    mapping = map_layer(TINY, ConvLayer.parse("N=1,C=2,H=5,W=5,M=2,R=3,S=3"))
    with pytest.raises(ValueError, match=message):
        compile_layer(mapping, **kwargs)


@pytest.mark.parametrize("e_block", [1, 2, 3, None])
def test_passes_over_output_rows_of_several_filter_blocks(e_block):
    """Outputs taken ``e_block`` rows at a time for every filter block: a pass holds outputs of
    several filter blocks; the mapper's estimate counts exactly the transfers the program makes."""
    layer = ConvLayer.parse("N=2,C=4,H=7,W=6,M=8,R=3,S=3,P=1")
    mapping = Mapping(TINY, layer, p=2, q=2, seg=3, chain=3, e_block=e_block)
    program, counts = run(TINY, layer, seed=4, mapping=mapping)
    # Four chains a pass: the first pass takes row 0 of four filter blocks, rows 0-1 or 0-2 of
    # two, or rows 0-3 of one.
    first = mapping.passes[0]
    assert len({mapping.outputs[o][:2] for _, o, _ in first}) == {1: 4, 2: 2, 3: 2, None: 1}[e_block]
    stats = mapping.stats
    assert counts["ifmap_transfers"] == stats["ifmap_noc_words"]
    assert counts["psum_transfers"] == stats["psum_noc_words"]
    assert counts["filt_transfers"] * TINY.filter_noc_width == stats["filter_noc_words"]   # p*q*s = 12


def test_narrow_psums_in_the_global_buffer():
    """With 16-bit psums in the buffer (two a word), a layer whose weights keep every partial
    sum in 16 bits computes exactly; its worst case, and larger weights, are refused."""
    config = TINY.replace(glb_psum_width=16)
    layer = ConvLayer.parse("N=1,C=2,H=8,W=8,M=4,R=3,S=3,P=1")
    arrays = random_layer_arrays(config, layer, seed=5, zeros=0.2)
    x, w, b = arrays["ifmap"], np.clip(arrays["weights"], -3, 3), arrays["bias"]
    mapping = map_layer(config, layer)
    assert 2 * pass_words(mapping)[1] == pass_words(replace(mapping, config=TINY))[1]
    program = compile_layer(mapping, b, weights=w)
    memory = dram_image(mapping, program.layout, x, w)
    run_program(mapping, program.streams, memory, x, w)
    np.testing.assert_array_equal(dram_output(memory, program.layout, layer), conv2d_loops(x, w, b, 1, 1, 1))
    with pytest.raises(ValueError, match=r"^N=1,C=2,H=8,W=8,M=4,R=3,S=3,U=1,P=1,G=1 needs 20-bit psums "
                                         r"\(in the worst case of its widths\), more than the global buffer "
                                         r"holds: glb_psum_width = 16$"):
        compile_layer(mapping)
    with pytest.raises(ValueError, match=r"needs 18-bit psums \(from its weights\)"):
        compile_layer(mapping, weights=np.full_like(w, 40))


def test_psums_stay_on_chip_through_every_fold():
    """Whatever the buffer size, each output leaves the chip once; a smaller buffer only
    splits the layer into more tiles and epochs (ifmap rows loaded again)."""
    layer = ConvLayer.parse("N=2,C=6,H=8,W=8,M=6,R=3,S=3,P=1")
    big, _ = run(TINY.replace(glb_banks=16), layer, seed=1)
    small, _ = run(TINY.replace(glb_banks=4, glb_bank_depth=32), layer, seed=1)
    outputs = layer.N * layer.M * layer.E * layer.F
    assert big.dram_writes == small.dram_writes == outputs
    assert (big.tiles, big.epochs) < (small.tiles, small.epochs)
    assert small.dram_reads > big.dram_reads
    assert (big.allocation.ifmap_buffers, big.allocation.psum_buffers) == (2, 2)


def test_one_psum_buffer_holds_tiles_twice_as_large():
    """With one psum buffer (a mapping's ``psum_buffers``) a tile takes twice the pass groups,
    so the ifmap rows load fewer times; each tile then waits for the store before it, which the
    search's estimate and the model count."""
    layer = ConvLayer.parse(ONE_BUFFER)
    mapping = map_layer(TINY, layer)
    single = replace(mapping, psum_buffers=1)
    assert (mapping.allocation.psum_buffers, single.allocation.psum_buffers) == (2, 1)
    assert single.allocation.tile_groups >= 2 * mapping.allocation.tile_groups
    both, _ = run(TINY, layer, seed=3, mapping=mapping)
    one, _ = run(TINY, layer, seed=3, mapping=single)
    assert one.tiles < both.tiles and one.dram_reads < both.dram_reads
    assert predict_cycles(single, one) > predict_cycles(mapping, both)


def test_no_mapping_moves_less_than_the_dram_floor():
    """``dram_floor`` is a floor: on a buffer too small for the layer it lies above the
    compulsory traffic and no candidate mapping (every one compiled and counted) moves less; where every psum fits beside the ifmap, or where a mapping reduces
    within the array, it is the compulsory traffic."""
    config, layer = TINY.replace(glb_banks=2, glb_bank_depth=64), ConvLayer.parse("N=1,C=8,H=12,W=12,M=24,R=3,S=3,P=1")
    floor = dram_floor(config, layer)
    assert floor > 1.05 * layer.compulsory()
    fitting = [m for m in candidates(config, layer) if m.allocation is not None]
    assert len(fitting) > 100
    for mapping in fitting:
        block = replace(mapping, layer=replace(layer, N=mapping.n), images=None)
        program = compile_layer(block, shift=2, check_storage=False)   # every tensor at 8 bits
        words = (program.dram_reads + program.dram_writes) * mapping.blocks
        assert words * config.dram_width // 8 >= floor, mapping
    assert dram_floor(TINY.replace(glb_banks=64), layer) == layer.compulsory()
    single = ConvLayer.parse("N=1,C=1,H=30,W=30,M=2,R=3,S=3")     # three filter rows on three PE rows
    assert dram_floor(config.replace(glb_bank_depth=4), single) == single.compulsory()


def check_row_schedule(pass_rows, slots, ahead):
    """Replays a row schedule: every row a pass reads is in its slot, loads overwrite only slots
    whose readers have finished, and no load runs more than ``ahead`` + 1 loads ahead."""
    steps = row_schedule(pass_rows, slots, ahead=ahead)
    holder, last_read, loaded = {}, {}, []
    for j, (rows, step) in enumerate(zip(pass_rows, steps)):
        for row, slot in step.loads:
            assert 0 <= slot < slots and row in rows
            assert last_read.get(slot, -1) <= step.wait < j
            holder[slot] = row
        if step.loads:
            loaded.append(j)
            if len(loaded) > ahead + 1:
                assert step.wait >= loaded[-ahead - 2]
        assert {row: holder[slot] for row, slot in step.slots.items()} == {row: row for row in rows}
        assert len(set(step.slots.values())) == len(set(rows))
        for slot in step.slots.values():
            last_read[slot] = j
    return steps


@pytest.mark.parametrize("seed", range(6))
def test_row_cache_keeps_rows_and_waits_for_their_readers(seed):
    """Random passes over a few rows: the schedule is consistent; with slots for every row,
    each row loads once."""
    rng = np.random.default_rng(seed)
    rows = [ZERO_ROW] + [(0, 0, r) for r in range(12)]
    pass_rows = [list(rng.choice(len(rows), size=rng.integers(1, 6), replace=False)) for _ in range(40)]
    pass_rows = [[rows[i] for i in chosen] for chosen in pass_rows]
    for slots in (5, 8, 13):
        steps = check_row_schedule(pass_rows, slots, ahead=2 + seed % 3)
        loads = sum(len(step.loads) for step in steps)
        if slots == 13:
            assert loads == len({row for pass_ in pass_rows for row in pass_})
    with pytest.raises(ValueError, match="^a pass reads 6 ifmap rows, the buffer holds 5$"):
        row_schedule([rows[:6]], 5)


def test_resident_ifmap_rows_load_once():
    """A layer whose ifmap rows fit the buffer reads its ifmap from external memory once,
    however many tiles its psums take; padding rows are not loaded."""
    layer = ConvLayer.parse("N=1,C=8,H=8,W=8,M=16,R=3,S=3,P=1")
    config = TINY.replace(glb_banks=4, glb_bank_depth=64)   # 16 tiles; the rows fit two buffers
    program, counts = run(config, layer, seed=4)
    mapping = map_layer(config, layer)
    assert program.tiles > 1
    word = config.dram_width // 8
    weights = sum(program.filter_entries) * -(-mapping.pe_config.filter_words
                                                                    * program.layout.weight_bytes // word)
    ifmap = layer.N * layer.C * layer.H * program.layout.ifmap_bytes * layer.W // word
    assert program.dram_reads == weights + ifmap


@pytest.mark.parametrize("token", list(Token), ids=[t.name for t in Token])
def test_the_model_catches_a_missing_token(token):
    """Dropping one kind of token from a program lets some unit run ahead over data it must
    wait for: under some priority order of the units, the model sees a wrong word, a wrong
    result or a deadlock."""
    config = TINY.replace(glb_banks=8, glb_bank_depth=32)
    layer = ConvLayer.parse("N=1,C=16,H=6,W=6,M=8,R=3,S=3,P=1")
    arrays = random_layer_arrays(config, layer, seed=3)
    x, w, b = arrays["ifmap"], arrays["weights"], arrays["bias"]
    mapping = map_layer(config, layer)
    program = compile_layer(mapping, b)
    assert program.tiles > 2 and program.epochs > 2 * program.tiles
    assert program.allocation.ifmap_buffers == 2
    streams = {unit: list(words) for unit, words in program.streams.items()}
    dropped = 0
    for unit, words in streams.items():
        pc = 0
        while pc < len(words):
            fields = decode(words[pc])
            for name in ("pop", "push"):
                if fields[name] >> token & 1:
                    words[pc] &= ~(1 << (token + dict(FIELDS_AT)[name]))
                    dropped += 1
            pc += 1 + ARGUMENTS[Opcode(fields["opcode"])]
    assert dropped
    caught = 0
    for ahead in permutations(("load", "execute", "store")):
        dram = DramLayout.packed(mapping)
        memory = dram_image(mapping, dram, x, w)
        try:
            run_program(mapping, streams, memory, x, w, ahead=ahead)
        except (AssertionError, KeyError, RuntimeError):
            caught += 1
            continue
        want = conv2d_loops(x, w, b, layer.U, layer.P, layer.G)
        caught += not np.array_equal(dram_output(memory, dram, layer), want)
    assert caught


def test_a_batch_split_into_blocks_runs_as_one_program():
    """Images beyond what a pass holds run in blocks; the ping-pong buffers carry on across
    blocks, and the weights are read once per block."""
    config = TINY.replace(glb_banks=1, glb_bank_depth=64)
    layer = ConvLayer.parse("N=6,C=2,H=8,W=8,M=4,R=3,S=3,P=1")
    program, counts = run(config, layer, seed=3, shift=4, relu=True)
    mapping = map_layer(config, layer)
    assert mapping.blocks > 1 and counts["passes"] == mapping.blocks * len(mapping.passes)
    # Each requantised output (one byte) is written once, rows filling whole words.
    assert program.dram_writes * config.dram_width // 8 == layer.N * layer.M * layer.E * layer.F


def test_layer_that_does_not_fit_the_global_buffer_is_rejected():
    config = TINY.replace(glb_banks=1, glb_bank_depth=16)
    with pytest.raises(ValueError, match=r"^no mapping of N=1,C=2,H=12,W=12,M=4,R=3,S=3,U=1,P=0,G=1 "
                                         r"fits the global buffer: a pass needs at least \d+ words, "
                                         r"glb_banks x glb_bank_depth = 1 x 16 = 16$"):
        map_layer(config, ConvLayer.parse("N=1,C=2,H=12,W=12,M=4,R=3,S=3"))


def test_layer_beyond_the_memory_address_space_is_refused():
    config = TINY.replace(dram_addr_width=12)
    layer = ConvLayer.parse("N=1,C=8,H=16,W=16,M=16,R=3,S=3,P=1")   # a 16 KiB output
    with pytest.raises(ValueError, match=r"^the tensors of N=1,C=8,H=16,W=16,M=16,R=3,S=3,U=1,P=1,G=1 end"
                                         r"s at byte 0x[0-9a-f]+, beyond the 0x1000 bytes that "
                                         r"dram_addr_width = 12 addresses$"):
        compile_layer(map_layer(config, layer))


def test_address_generator_walks_its_loop_nest():
    # Two levels (3 x 2) around a table of two bases; steps from strides (10, 0, 1).
    counts, strides = [3, 2, 2], [10, 0, 1]
    steps = [s - sum((counts[j] - 1) * strides[j] for j in range(k + 1, 3)) for k, s in enumerate(strides)]
    got = walk(counts, steps, table=[100, 200], table_level=1)
    assert got == [(base + 10 * i + j, t) for i in range(3) for t, base in enumerate([100, 200])
                   for j in range(2)]


def test_register_map_is_dense_and_unique():
    regmap = RegisterMap(preset("eyeriss-v1"))
    addresses = [regmap.address(name, i) for name, block in regmap.blocks.items() for i in range(block.count)]
    assert sorted(addresses) == list(range(regmap.size))
    assert regmap.size <= 1 << dict(FIELDS)["operand"]  # fits the WRITE operand


def test_instruction_words_round_trip():
    word = encode(Opcode.RUN, pop=[Token.LOAD_EXECUTE], push=[Token.EXECUTE_LOAD, Token.EXECUTE_STORE])
    assert decode(word) == {"opcode": Opcode.RUN, "operand": 0, "pop": 1 << Token.LOAD_EXECUTE,
                            "push": 1 << Token.EXECUTE_LOAD | 1 << Token.EXECUTE_STORE}
    assert decode(encode(Opcode.WRITE, 12345))["operand"] == 12345


@pytest.mark.parametrize("call,message", [
    (lambda: encode(Opcode.STORE, pop=[Token.LOAD_EXECUTE]),
     r"^STORE runs on the store unit, which cannot pop LOAD_EXECUTE$"),
    (lambda: encode(Opcode.LOAD, push=[Token.EXECUTE_STORE]),
     r"^LOAD runs on the load unit, which cannot push EXECUTE_STORE$"),
    (lambda: encode(Opcode.WRITE, 1 << 20), r"^operand 1048576 does not fit 20 bits$"),
    (lambda: store_operand(row=1 << 12), r"^STORE row 4096 does not fit 12 bits$"),
])
def test_instruction_encoding_wrong(call, message):
    with pytest.raises(ValueError, match=message):
        call()


@pytest.mark.parametrize("spec", ["N=1,C=4,H=9,W=6,M=6,R=2,S=3,U=2,G=2", "N=2,C=3,H=5,W=5,M=5,R=1,S=1",
                                  "N=1,C=1,H=4,W=16,M=2,R=2,S=14"])
def test_model_counts_scratchpad_accesses_of_an_ifmap_without_zeros(spec):
    layer = ConvLayer.parse(spec)
    arrays = random_layer_arrays(TINY, layer, seed=6)
    x, w = arrays["ifmap"], arrays["weights"]
    x[x == 0] = 1
    mapping = map_layer(TINY, layer)
    program = compile_layer(mapping)
    memory = dram_image(mapping, DramLayout.packed(mapping), x, w)
    counts = run_program(mapping, program.streams, memory, x, w)
    report = layer_report(mapping, program)
    for kind in ("read", "write"):
        assert report[f"spad_{kind}s"] == sum(counts[f"{spad}_{kind}"] for spad in ("filter", "ifmap", "psum"))


def test_padded_rows_load_with_their_padding_zeros():
    """A padded layer's ifmap LOADs carry the padding (written as zeros around each run) and
    no FILL zeroes the row cache first; one LOAD brings a slot's channels of a row (runs a
    channel apart in external memory); the operand round-trips and refuses a pad too wide
    or no rows."""
    from rowstation.gen.isa import decode_load, load_operand

    layer = ConvLayer.parse("N=1,C=8,H=9,W=9,M=8,R=3,S=3,P=2")
    program, counts = run(TINY, layer, seed=5)
    mapping = map_layer(TINY, layer)
    loads = fills = 0
    words = program.streams["load"]
    pc = 0
    while pc < len(words):
        fields = decode(words[pc])
        opcode = Opcode(fields["opcode"])
        if opcode == Opcode.LOAD:
            assert decode_load(fields["operand"]) == {"region": Region.IFMAP, "pad": layer.P, "rows": mapping.q}
            assert words[pc + 3:pc + 5] == [layer.W, layer.H * layer.W]    # count, stride (8-bit elements)
            loads += 1
        elif opcode == Opcode.FILL:
            fills += words[pc + 2]
        pc += 1 + ARGUMENTS[opcode]
    assert mapping.q > 1 and loads
    assert fills <= mapping.n * mapping.q * (layer.W + 2 * layer.P) * 2   # zero rows only
    assert decode_load(load_operand(Region.PSUM, 7, 3)) == {"region": Region.PSUM, "pad": 7, "rows": 3}
    with pytest.raises(ValueError, match="^LOAD pad 4096 does not fit 12 bits$"):
        load_operand(Region.IFMAP, 1 << 12)
    with pytest.raises(ValueError, match="^LOAD rows 0 must be at least 1$"):
        load_operand(Region.IFMAP, 1, 0)


@pytest.mark.parametrize("spec", ["N=1,C=16,H=8,W=8,M=8,R=3,S=3,P=1", "N=2,C=4,H=9,W=9,M=12,R=3,S=3,U=2",
                                  "N=1,C=2,H=12,W=12,M=6,R=3,S=3,P=1"])
def test_stationary_passes_keep_their_filters(spec):
    """A stationary mapping runs the row blocks of one set of filter blocks back to back with
    every filter block at the same chain slots, so a pass that follows one of its set in the
    same fold streams no filters (its PEs keep theirs); the layer is still exact."""
    config = TINY.replace(glb_banks=8)
    layer = ConvLayer.parse(spec)
    found = [m for m in candidates(config, layer) if m.stationary and m.allocation is not None
             and m.allocation.tile_groups > 1 and (m.e_block or layer.E) < layer.E]
    mapping = found[0]
    b, t = mapping.set_blocks, mapping.e_block or layer.E
    for g, group in enumerate(mapping.groups):     # each filter block at its slots in every pass
        for slot, o in zip(mapping.slots(g), group):
            _, mb, e = mapping.outputs[o]
            assert slot == (mb % b) * t + e % t and slot < mapping.chains_per_pass
    L, slots = layer, mapping.n * layer.F * mapping.seg * mapping.p * mapping.q
    assert mapping.lower_bound == mapping.blocks * mapping.chunks * sum(   # one psum lane
        max(slots + (len(group) - 1) * mapping.p, len(group) * mapping.n * L.F * mapping.p)
        + TINY.pe_latency + 2 * mapping.chain for group in mapping.groups)
    program, counts = run(config, layer, seed=5, mapping=mapping)

    def filter_set(g):
        g_, mb, _ = mapping.outputs[mapping.groups[g][0]]
        return g_, mb // b, set(mapping.slots(g))

    order, kept = list(mapping.pass_order()) * mapping.blocks, 0
    for i in range(1, len(order)):
        (before, k0), (g, k) = order[i - 1], order[i]
        (group0, set0, slots0), (group1, set1, slots1) = filter_set(before), filter_set(g)
        if k == k0 and (group0, set0) == (group1, set1) and slots1 <= slots0:
            assert program.filter_entries[i] == 0
            kept += 1
    assert kept
    assert program.filter_loads < sum(len(plan.assign) for plan in mapping.plans) * mapping.blocks
    assert counts["filter_write"] == program.filter_loads * mapping.pe_config.filter_words
    # The search counts the filter stream exactly.
    assert sum(program.filter_entries) * mapping.pe_config.filter_words == mapping.stats["filter_noc_words"]


def test_psum_lanes_start_in_banks_of_their_own():
    """With two psum network lanes, every pass's chain tops of one lane store their psums in
    other global buffer banks than the other lane's (so the lanes' writes, and the psum reads
    of the next fold, never wait for each other); the layer is still exact."""
    config = TINY.replace(psum_noc_lanes=2, glb_banks=8, glb_bank_depth=128)
    layer = ConvLayer.parse("N=1,C=2,H=8,W=16,M=8,R=3,S=1")
    program, _ = run(config, layer, seed=6)
    plans = map_layer(config, layer).plans
    regmap, lanes_p = RegisterMap(config), config.glb_lanes(config.glb_psum_bits)
    bank = config.glb_bank_depth * lanes_p
    # The table's halves: a pass reads the one written since the RUN before it, or before that.
    words, pc, halves, passes = program.streams["execute"], 0, ({}, {}), 0
    while pc < len(words):
        fields = decode(words[pc])
        opcode = Opcode(fields["opcode"])
        if opcode == Opcode.WRITE:
            block, pe = regmap.locate(fields["operand"])
            if block.name == "store_base":
                halves[passes % 2][pe] = words[pc + 1]
        elif opcode == Opcode.RUN:
            tops = [r * config.array_cols + col for r, col in plans[passes % len(plans)].tops]
            banks = [{halves[passes % 2][pe] // bank for pe in tops if config.psum_lane(pe % config.array_cols) == lane}
                     for lane in range(2)]
            assert banks[0] and banks[1] and not banks[0] & banks[1], banks
            passes += 1
        pc += 1 + ARGUMENTS[opcode]
    assert passes == len(program.filter_entries)


def test_tiles_alternate_their_fold_order():
    """Every other tile takes its folds in reverse, so the fold that ends a tile starts the
    next: the ifmap rows it loaded are still in the buffer (AlexNet CONV1 on eyeriss-v1, whose
    three channel folds' rows the buffer cannot hold at once, loads its ifmap 1.7 times, not
    3.1), and each group's first pass, whichever fold it is, takes zeros."""
    m = map_layer(preset("eyeriss-v1"), ConvLayer.parse("N=1,C=3,H=227,W=227,M=96,R=11,S=11,U=4"))
    order, tile = list(m.pass_order()), m.allocation.tile_groups
    assert m.chunks == 3 and len(m.groups) > 2 * tile
    boundaries = [(k0, k1) for (g0, k0), (g1, k1) in zip(order, order[1:]) if g0 // tile != g1 // tile]
    assert boundaries and all(k0 == k1 for k0, k1 in boundaries)
    first = {}
    for g, k in order:
        first.setdefault(g, k)
    assert {first[g] for g in first} == {0, 2} and all(first[g] == m.first_chunk(g) for g in first)
    report, L = layer_report(m, compile_layer(m)), m.layer
    loaded = report["glb_writes"] - report["opsum_transfers"]    # no padding: every write a load
    assert loaded < 1.8 * L.N * L.C * L.H * L.W


def _stores(program):
    """(operand fields, arguments) of each STORE of ``program``."""
    words, pc, stores = program.streams["store"], 0, []
    while pc < len(words):
        opcode = Opcode(decode(words[pc])["opcode"])
        if opcode == Opcode.STORE:
            stores.append((decode_store(decode(words[pc])["operand"]), words[pc + 1:pc + 1 + ARGUMENTS[opcode]]))
        pc += 1 + ARGUMENTS[opcode]
    return stores


@pytest.mark.parametrize("spec,order", [("N=1,C=2,H=8,W=8,M=4,R=3,S=3,P=1", "rows"),
                                        ("N=4,C=8,H=1,W=1,M=6,R=1,S=1", "images"),
                                        ("N=2,C=2,H=4,W=4,M=4,R=3,S=3,P=1", "either")])
def test_one_store_writes_a_filters_rows_of_a_tile(spec, order):
    """A filter's psums in a tile leave in one STORE (each with its own bias): an image's rows
    of the filter, which follow one another in external memory, or the same row of every image
    (rows a plane of M filters apart), whichever the tile's rows allow; the program stays exact
    (the controller model reads the rows where they lie in the buffer)."""
    layer = ConvLayer.parse(spec)
    mapping = map_layer(TINY, layer)
    program, _ = run(TINY, layer, seed=4, mapping=mapping)
    # Per tile, the filters of its outputs (and, by image, the images of each).
    tiles, per_tile = {}, mapping.allocation.tile_groups
    for g, group in enumerate(mapping.groups):
        for o in group:
            first = mapping.first_filter(mapping.outputs[o])
            tiles.setdefault(g // per_tile, set()).update(range(first, first + mapping.p))
    filters = sum(len(f) for f in tiles.values()) * mapping.blocks
    stores = _stores(program)
    plane = layer.E * layer.F * program.layout.output_bytes
    along_rows = len(stores) == filters * mapping.n
    along_images = len(stores) == filters
    assert {"rows": along_rows, "images": along_images, "either": along_rows or along_images}[order]
    for fields, (_, _, count, _, stride, _, _) in stores:
        if along_images and mapping.n > 1:
            assert fields["row"] == layer.F and stride == layer.M * plane and count == mapping.n * layer.F
        else:
            assert stride == 0      # an image's rows of a filter continue one another in memory


def test_table_entries_are_written_only_where_the_half_differs():
    """The pass tables are double-buffered (a pass reads the half written since the RUN before
    it, or, for an entry not written then, the one written for the pass two before): the
    compiler writes only the entries whose half holds another value, and the program stays
    exact (the controller model reads each pass's half and fails on an entry never written)."""
    config, layer = TINY, ConvLayer.parse("N=1,C=12,H=8,W=8,M=8,R=3,S=3,P=1")
    program, _ = run(config, layer, seed=3)
    mapping, regmap = map_layer(config, layer), RegisterMap(config)
    words, pc, written = program.streams["execute"], 0, 0
    while pc < len(words):
        fields = decode(words[pc])
        opcode = Opcode(fields["opcode"])
        written += opcode == Opcode.WRITE and regmap.locate(fields["operand"])[0].table
        pc += 1 + ARGUMENTS[opcode]
    # Every pass reads a base and a tag per ifmap row, filter block streamed and chain bottom
    # (none in a first fold), and a store base per chain top.
    read = sum(2 * (len(plan.ifmap_rows) + entries + (len(plan.bottoms) if k != mapping.first_chunk(g) else 0))
               + len(plan.tops)
               for (g, k), plan, entries in zip(mapping.pass_order(), mapping.plans, program.filter_entries))
    assert mapping.chunks > 1 and 0 < written < 0.8 * read
