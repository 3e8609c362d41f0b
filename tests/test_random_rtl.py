"""Random configurations, each with random layers, on the generated core (slow): bit-exact
against the golden model under random stalls on every memory channel, every counter equal to
the controller model's (checked in the testbench).

Run as a script, the same cases without stalls measure the performance model against the RTL:
``python tests/test_random_rtl.py FIRST COUNT`` prints each layer's cycles, the model's and the
error (docs/performance.md quotes seeds 0-23)."""

import random
import sys

import numpy as np
import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.sim.golden import conv2d, requantize
from rowstation.sim.rtl import run_layers_rtl
from rowstation.sim.stimulus import random_layer_arrays

from test_pe_rtl import BUILD


def random_config(rng):
    """A configuration of 2-5 x 1-5 PEs, 8 or 16 bits, 4-16 global buffer banks of 32-128 words,
    one or two psum lanes, MAC lanes and filter banks, one to four ifmap lanes."""
    rows, cols, width = rng.randint(2, 5), rng.randint(1, 5), rng.choice([8, 16])
    mac_lanes = rng.choice([1, 1, 2])
    return preset("tiny").replace(
        array_rows=rows, array_cols=cols, ifmap_width=width, weight_width=width, psum_width=3 * width,
        glb_banks=rng.choice([4, 8, 16]), glb_bank_depth=rng.choice([32, 64, 128]),
        glb_bank_width=64 if width == 16 else rng.choice([32, 64]), dram_width=64 if width == 16 else 32,
        psum_noc_lanes=rng.randint(1, min(2, cols)), mac_lanes=mac_lanes,
        filter_noc_width=max(2, mac_lanes), ifmap_noc_lanes=rng.randint(1, min(4, rows * cols)),
        filter_banks=rng.choice([1, 2]))


def random_layer(rng):
    """A layer of 1-2 images, strides 1-3, padding, one or two groups, filters up to 4 x 4."""
    R, S, U = rng.randint(1, 4), rng.randint(1, 4), rng.randint(1, 3)
    P, G = rng.randint(0, min(R, S) - 1), rng.choice([1, 1, 2])
    return ConvLayer(N=rng.randint(1, 2), C=G * rng.randint(1, 4), H=rng.randint(max(R, 3), 12),
                     W=rng.randint(max(S, 3), 14), M=G * rng.randint(1, 5), R=R, S=S, U=U, P=P, G=G)


def run(seed, *, stall, idle):
    """Five random layers on a random configuration (every other one requantised on chip):
    [(layer, RTL cycles, model cycles)], each output checked against the golden model."""
    rng = random.Random(seed)
    config, layers = random_config(rng), [random_layer(rng) for _ in range(5)]
    cases, wants = [], []
    for n, layer in enumerate(layers):
        arrays = random_layer_arrays(config, layer, seed=n, zeros=0.25)
        post = {"shift": 1 + n, "relu": n % 4 == 1} if n % 2 else {}
        cases.append(dict(x=arrays["ifmap"], w=arrays["weights"], b=arrays["bias"], stride=layer.U,
                          padding=layer.P, groups=layer.G, **post))
        acc = conv2d(arrays["ifmap"], arrays["weights"], arrays["bias"], stride=layer.U,
                     padding=layer.P, groups=layer.G)
        wants.append(requantize(acc, width=config.ifmap_width, **post) if post else acc)
    results = run_layers_rtl(config, cases, sim="verilator", build_root=BUILD / f"random-{seed}",
                             stall=stall, idle=idle, seed=seed)
    for layer, want, (got, _) in zip(layers, wants, results):
        np.testing.assert_array_equal(got, want, err_msg=f"seed {seed}: {layer} on {config}")
    return [(layer, stats["counters"]["cycles"], stats["predicted"]["cycles"])
            for layer, (_, stats) in zip(layers, results)]


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(8))
def test_random_configuration_bit_exact_under_stalls(seed):
    run(seed, stall=0.3, idle=0.2)


if __name__ == "__main__":
    first, count = int(sys.argv[1]), int(sys.argv[2])
    for seed in range(first, first + count):
        for layer, measured, predicted in run(seed, stall=0.0, idle=0.0):
            print(f"{seed} {layer} {measured} {predicted} {(predicted - measured) / measured:+.1%}", flush=True)
