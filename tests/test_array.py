import numpy as np
import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.gen.mapper import map_layer
from rowstation.sim.golden import conv2d
from rowstation.sim.pe_model import pe_events
from rowstation.sim.dataflow import pe_streams
from rowstation.sim.stimulus import random_layer_arrays

from array_harness import plan, simulate_array


TINY = preset("tiny")


def expected_counts(mapping, x, w):
    """Sum of every PE's exact event counts over the schedule."""
    L = mapping.layer
    xp = np.pad(x, ((0, 0), (0, 0), (L.P, L.P), (L.P, L.P)))
    counts = {}
    for jobs in mapping.passes:
        assign, _, _ = plan(mapping, jobs)
        for output, term in assign.values():
            _, rows = pe_streams(mapping, xp, w, output, term)
            for name, value in pe_events(mapping.pe_config, rows).items():
                counts[name] = counts.get(name, 0) + value
    return counts


@pytest.mark.slow  # minutes in Amaranth's simulator
@pytest.mark.parametrize("spec,idle,stall", [
    ("N=1,C=2,H=6,W=6,M=2,R=3,S=3,P=1", 0.0, 0.0),
    ("N=2,C=3,H=7,W=5,M=4,R=2,S=2,U=2", 0.2, 0.3),
    ("N=1,C=2,H=6,W=9,M=2,R=5,S=3,P=1,G=2", 0.1, 0.5),
])
def test_array_runs_layer_bit_exact_in_amaranth_sim(spec, idle, stall):
    layer = ConvLayer.parse(spec)
    arrays = random_layer_arrays(TINY, layer, seed=2, zeros=0.25)
    x, w, b = arrays["ifmap"], arrays["weights"], arrays["bias"]
    mapping = map_layer(TINY, layer)
    got, counts = simulate_array(TINY, mapping, x, w, b, seed=3, idle=idle, stall=stall)
    np.testing.assert_array_equal(got, conv2d(x, w, b, stride=layer.U, padding=layer.P, groups=layer.G))
    want = expected_counts(mapping, x, w)
    assert counts == want
    assert counts["mac"] + counts["gated_mac"] == layer.macs
