import numpy as np
import pytest

from rowstation.gen import ConvLayer, preset
from rowstation.sim import golden
from rowstation.sim.stimulus import random_layer_arrays

from reference import conv2d_loops, max_pool_loops, requantize_loops


TINY = preset("tiny")

# (layer, seed): stride > 1, padding, groups, depthwise, 1x1, non-square, batch > 1, FC.
LAYERS = [
    "N=1,C=3,H=9,W=9,M=4,R=3,S=3",
    "N=2,C=4,H=11,W=7,M=6,R=3,S=2,U=2,P=1",
    "N=1,C=4,H=8,W=10,M=8,R=3,S=3,P=1,G=2",
    "N=1,C=6,H=7,W=7,M=6,R=3,S=3,U=1,P=1,G=6",
    "N=3,C=5,H=6,W=5,M=7,R=1,S=1",
    "N=1,C=2,H=13,W=12,M=3,R=5,S=4,U=3,P=2",
    "N=2,C=8,H=4,W=4,M=5,R=4,S=4",
    "N=1,C=3,H=10,W=10,M=2,R=2,S=2,U=4",
]


@pytest.mark.parametrize("spec", LAYERS)
@pytest.mark.parametrize("seed", [1, 2])
def test_conv2d_matches_reference(spec, seed):
    layer = ConvLayer.parse(spec)
    arrays = random_layer_arrays(TINY, layer, seed=seed, zeros=0.3)
    x, w, b = arrays["ifmap"], arrays["weights"], arrays["bias"]
    acc = golden.conv2d(x, w, b, stride=layer.U, padding=layer.P, groups=layer.G)
    assert acc.shape == layer.ofmap_shape
    np.testing.assert_array_equal(acc, conv2d_loops(x, w, b, layer.U, layer.P, layer.G))


@pytest.mark.parametrize("spec", LAYERS[:4])
@pytest.mark.parametrize("shift,relu", [(0, False), (1, True), (5, False), (9, True)])
def test_run_layer_requantises_like_reference(spec, shift, relu):
    layer = ConvLayer.parse(spec)
    arrays = random_layer_arrays(TINY, layer, seed=7)
    y, got_layer = golden.run_layer(TINY, arrays["ifmap"], arrays["weights"], arrays["bias"],
                                    stride=layer.U, padding=layer.P, groups=layer.G,
                                    shift=shift, relu=relu)
    assert got_layer == layer
    acc = conv2d_loops(arrays["ifmap"], arrays["weights"], arrays["bias"], layer.U, layer.P, layer.G)
    np.testing.assert_array_equal(y, requantize_loops(acc, shift, relu, TINY.ifmap_width))


def test_requantise_rounds_half_up_and_saturates():
    acc = np.array([-6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 5, 6, 1000, -1000])
    np.testing.assert_array_equal(golden.requantize(acc, shift=1, width=8),
                                  [-3, -2, -2, -1, -1, 0, 0, 1, 1, 2, 3, 3, 127, -128])
    np.testing.assert_array_equal(golden.requantize(acc, shift=2, relu=True, width=4),
                                  [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 7, 0])


def test_requantise_near_64_bits_does_not_overflow():
    acc = np.array([2 ** 63 - 1, -2 ** 63])
    np.testing.assert_array_equal(golden.requantize(acc, shift=62, width=8), [2, -2])


def test_fully_connected_is_conv_over_whole_ifmap():
    rng = np.random.default_rng(3)
    x = rng.integers(-128, 128, (2, 3, 4, 5))
    w = rng.integers(-128, 128, (6, 3, 4, 5))
    b = rng.integers(-1000, 1000, 6)
    want = np.einsum("nchw,mchw->nm", x, w) + b
    np.testing.assert_array_equal(golden.fully_connected(x, w, b), want)
    np.testing.assert_array_equal(golden.fully_connected(x.reshape(2, -1), w.reshape(6, -1), b), want)


@pytest.mark.parametrize("size,stride", [(2, 2), (3, 2), (3, 1)])
def test_max_pool_matches_reference(size, stride):
    x = np.random.default_rng(size).integers(-100, 100, (2, 3, 9, 8))
    np.testing.assert_array_equal(golden.max_pool(x, size=size, stride=stride),
                                  max_pool_loops(x, size, stride))


def test_psum_bits_needed_is_the_worst_case():
    w = np.full((1, 2, 1, 1), -128)                 # 2 products of at most 2**14
    assert golden.psum_bits_needed(w, None, 8) == 17
    assert golden.psum_bits_needed(w, np.array([1]), 8) == 17
    assert golden.psum_bits_needed(w, np.array([-(2 ** 16)]), 8) == 18
    # The bound is tight: this ifmap reaches it.
    x = np.full((1, 2, 1, 1), -128)
    assert golden.conv2d(x, w)[0, 0, 0, 0] == 2 ** 15


def test_layer_needing_wider_psums_is_refused():
    x = np.zeros((1, 64, 3, 3), dtype=np.int64)
    w = np.full((1, 64, 3, 3), 127)                 # 576 * 127 * 128: 25 bits
    with pytest.raises(ValueError, match=r"^layer needs 25-bit partial sums .* but psum_width is 24$"):
        golden.run_layer(TINY, x, w)


@pytest.mark.parametrize("name,array,message", [
    ("ifmap", np.full((1, 1, 3, 3), 128), r"^ifmap value 128 at index \(0, 0, 0, 0\) is outside the signed 8-bit range \[-128, 127\]$"),
    ("weights", np.full((1, 1, 3, 3), -129), r"^weights value -129 at index \(0, 0, 0, 0\) is outside the signed 8-bit range"),
    ("bias", np.array([2 ** 23]), r"^bias value 8388608 at index \(0,\) is outside the signed 24-bit range"),
])
def test_out_of_range_values_are_refused(name, array, message):
    arrays = {"ifmap": np.zeros((1, 1, 3, 3), dtype=np.int64), "weights": np.zeros((1, 1, 3, 3), dtype=np.int64),
              "bias": np.zeros(1, dtype=np.int64)}
    arrays[name] = array
    with pytest.raises(ValueError, match=message):
        golden.run_layer(TINY, arrays["ifmap"], arrays["weights"], arrays["bias"])


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(x=np.zeros((1, 2, 3, 3), dtype=np.float32)), TypeError, r"^ifmap must hold integers, not dtype float32$"),
    (dict(x=np.zeros((2, 3, 3), dtype=np.int8)), ValueError, r"^ifmap must have 4 dimensions, not 3 \(shape \(2, 3, 3\)\)$"),
    (dict(w=np.zeros((4, 3, 3, 3), dtype=np.int8)), ValueError, r"^weights have 3 channels per group but the ifmap has C = 2 channels in G = 1 groups"),
    (dict(b=np.zeros(3, dtype=np.int8)), ValueError, r"^bias must have shape \(4,\) to match M = 4 filters, not \(3,\)$"),
    (dict(groups=2, w=np.zeros((3, 1, 3, 3), dtype=np.int8)), ValueError, r"^groups G = 2 must divide both C = 2 and M = 3$"),
    (dict(w=np.zeros((4, 2, 5, 5), dtype=np.int8)), ValueError, r"^filter 5x5 is larger than the padded ifmap 3x3$"),
    (dict(shift=24), ValueError, r"^shift must be between 0 and 23 \(psum_width - 1\), not 24$"),
    (dict(x=np.zeros((1, 2, 3, 3), dtype=bool)), TypeError, r"^ifmap must hold integers, not dtype bool$"),
])
def test_malformed_layers_are_refused(kwargs, error, message):
    args = dict(x=np.zeros((1, 2, 3, 3), dtype=np.int8), w=np.zeros((4, 2, 3, 3), dtype=np.int8),
                b=np.zeros(4, dtype=np.int8), groups=1, shift=0)
    args.update(kwargs)
    with pytest.raises(error, match=message):
        golden.run_layer(TINY, args["x"], args["w"], args["b"], groups=args["groups"], shift=args["shift"])
