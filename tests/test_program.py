"""The controller's program: compiled from the mapper's choice, executed by the controller
model, it reproduces the convolution in external memory; its streams carry exactly the
schedule's words (checked inside the model); the global buffer limit is enforced."""

import numpy as np
import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.gen.mapper import map_layer
from rowstation.gen.program import DramLayout, RegisterMap, compile_layer
from rowstation.sim.controller_model import dram_image, dram_output, run_program, walk
from rowstation.sim.stimulus import random_layer_arrays

from reference import conv2d_loops
from test_mapper import LAYERS, SMALL, TINY


def run(config, layer, seed, **layout):
    arrays = random_layer_arrays(config, layer, seed=seed, zeros=0.2)
    x, w, b = arrays["ifmap"], arrays["weights"], arrays["bias"]
    mapping = map_layer(config, layer)
    dram = DramLayout.packed(layer, **layout)
    program = compile_layer(mapping, b, dram)
    memory = dram_image(dram, layer, x, w)
    counts = run_program(mapping, program.words, memory, x, w)
    want = conv2d_loops(x, w, b, layer.U, layer.P, layer.G)
    np.testing.assert_array_equal(dram_output(memory, dram, layer), want)
    assert counts["dram_reads"] == program.dram_reads and counts["dram_writes"] == program.dram_writes
    return program, counts


@pytest.mark.parametrize("config", [TINY, SMALL], ids=["tiny", "small"])
@pytest.mark.parametrize("spec", LAYERS)
def test_program_computes_the_layer(config, spec):
    run(config, ConvLayer.parse(spec), seed=len(spec), base=17)


def test_a_small_global_buffer_splits_the_layer_into_epochs():
    layer = ConvLayer.parse("N=2,C=6,H=8,W=8,M=6,R=3,S=3,P=1")
    big, _ = run(TINY.replace(glb_banks=16), layer, seed=1)
    small, _ = run(TINY.replace(glb_banks=8, glb_bank_depth=32), layer, seed=1)
    assert big.epochs == 1 and small.epochs > 1
    assert small.glb_words <= 8 * 32 < big.glb_words
    # Psums go out and come back between epochs: more external traffic, never less.
    assert small.dram_writes > big.dram_writes == layer.N * layer.M * layer.E * layer.F


def test_layer_that_does_not_fit_the_global_buffer_is_rejected():
    config = TINY.replace(glb_banks=1, glb_bank_depth=16)
    with pytest.raises(ValueError, match=r"^no mapping of N=1,C=2,H=12,W=12,M=4,R=3,S=3,U=1,P=0,G=1 "
                                         r"fits the global buffer: a pass needs at least \d+ words, "
                                         r"glb_banks x glb_bank_depth = 1 x 16 = 16$"):
        map_layer(config, ConvLayer.parse("N=1,C=2,H=12,W=12,M=4,R=3,S=3"))


def test_address_generator_walks_its_loop_nest():
    # Two levels (3 x 2) around a table of two bases; steps from strides (10, 0, 1).
    counts, strides = [3, 2, 2], [10, 0, 1]
    steps = [s - sum((counts[j] - 1) * strides[j] for j in range(k + 1, 3)) for k, s in enumerate(strides)]
    got = walk(counts, steps, table=[100, 200], table_level=1)
    assert got == [(base + 10 * i + j, t) for i in range(3) for t, base in enumerate([100, 200])
                   for j in range(2)]


def test_register_map_is_dense_and_unique():
    regmap = RegisterMap(preset("eyeriss-v1"))
    addresses = [regmap.address(name, i) for name, (_, n) in regmap.blocks.items() for i in range(n)]
    assert sorted(addresses) == list(range(regmap.size))
    assert regmap.size < 1 << 28  # fits the WRITE operand
