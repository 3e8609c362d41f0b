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
    """A configuration of 1-5 x 1-5 PEs with operands of 4-16 bits each (psums 8-20 bits wider
    than a product, room for the random layers' fan-in of up to 64; sometimes narrower in the
    global buffer, down to that room), one to four MAC lanes, one to three ifmap lanes, one or
    two psum lanes and filter banks, random scratchpad and FIFO depths, 3-16 banks of 32-256
    words of 32-128 bits, bursts of 1-16 words of 32 or 64 bits, 16-32-bit memory addresses,
    with or without the weight register (drawn again until valid)."""
    while True:
        rows, cols = rng.randint(1, 5), rng.randint(1, 5)
        ifmap_width, weight_width = rng.choice([4, 6, 8, 12, 16]), rng.choice([4, 6, 8, 12, 16])
        psum_width = ifmap_width + weight_width + rng.randint(8, 20)
        mac_lanes = rng.choice([1, 1, 2, 4])
        filter_noc_width = rng.choice([k for k in (1, 2, 4, 8) if k % mac_lanes == 0])
        glb_psum_width = rng.choice([0, 0, rng.randint(ifmap_width + weight_width + 8, psum_width)])
        try:
            return preset("tiny").replace(
                array_rows=rows, array_cols=cols, ifmap_width=ifmap_width, weight_width=weight_width,
                psum_width=psum_width, glb_psum_width=glb_psum_width,
                glb_banks=rng.choice([3, 4, 6, 8, 16]), glb_bank_depth=rng.choice([32, 64, 128, 256]),
                glb_bank_width=rng.choice([32, 64, 128]), dram_width=rng.choice([32, 64]),
                dram_burst=rng.choice([1, 2, 4, 16]), psum_noc_lanes=rng.randint(1, min(2, cols)),
                mac_lanes=mac_lanes, filter_noc_width=filter_noc_width,
                ifmap_noc_lanes=rng.randint(1, min(3, rows * cols)), filter_banks=rng.choice([1, 2]),
                filter_spad_depth=filter_noc_width * rng.randint(6, 32), ifmap_spad_depth=rng.randint(4, 16),
                psum_spad_depth=mac_lanes * rng.randint(1, 8), psum_fifo_depth=rng.randint(2, 6),
                weight_register=rng.randint(0, 1), dram_addr_width=rng.choice([16, 20, 32]))
        except ValueError:      # e.g. a psum wider than the memory word, or weights than a transfer
            continue


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
        # Weights whose worst case fits the buffer's psums, where those are narrower.
        arrays = random_layer_arrays(config.replace(psum_width=config.glb_psum_bits), layer, seed=n, zeros=0.25)
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
