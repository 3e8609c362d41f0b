"""The golden model: the arithmetic contract the hardware matches bit for bit.

Exact integer convolution (NumPy, int64, no Amaranth), per-layer dynamic fixed-point
requantisation with round-half-up, ReLU, saturation, max pooling and fully connected layers.
Every value is range-checked against the configured signed widths; nothing is wrapped.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..gen.layer import ConvLayer


__all__ = [
    "as_int_array", "check_signed", "psum_range", "psum_bits_needed", "layer_of",
    "conv2d", "requantize", "max_pool", "fully_connected", "run_layer",
]


def as_int_array(name, array, ndim=None):
    """``array`` as int64, refusing non-integer dtypes, wrong rank and values beyond int64."""
    array = np.asarray(array)
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integers, not dtype {array.dtype}")
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, not {array.ndim} (shape {array.shape})")
    if array.dtype == np.uint64 and array.size and array.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{name} value {int(array.max())} exceeds the 64-bit signed range")
    return array.astype(np.int64)


def check_signed(name, array, width):
    """Raise ValueError naming the first value of ``array`` outside the signed ``width``-bit range."""
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    bad = (array < lo) | (array > hi)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} value {int(array[index])} at index {index} is outside the signed "
                         f"{width}-bit range [{lo}, {hi}]")


def psum_range(weights, bias, ifmap_width):
    """Bounds (lo, hi) of every partial sum of any output, for any ifmap of ``ifmap_width`` bits.

    A partial sum adds any subset of one output's products (and possibly its bias), so its
    extremes take each product at its own extreme: the bound holds for every summation order.
    """
    xmin, xmax = -(1 << (ifmap_width - 1)), (1 << (ifmap_width - 1)) - 1
    w = weights.reshape(weights.shape[0], -1)
    positive = np.where(w > 0, w, 0).sum(axis=1)
    negative = np.where(w < 0, w, 0).sum(axis=1)
    lo = hi = 0
    for m in range(w.shape[0]):
        b = 0 if bias is None else int(bias[m])
        pos, neg = int(positive[m]), int(negative[m])
        hi = max(hi, pos * xmax + neg * xmin + max(b, 0))
        lo = min(lo, pos * xmin + neg * xmax + min(b, 0))
    return lo, hi


def psum_bits_needed(weights, bias, ifmap_width):
    """Width of the accumulator that holds every partial sum exactly."""
    lo, hi = psum_range(weights, bias, ifmap_width)
    bits = 1
    while not (-(1 << (bits - 1)) <= lo and hi <= (1 << (bits - 1)) - 1):
        bits += 1
    return bits


def layer_of(x, w, *, stride=1, padding=0, groups=1, bias=None):
    """The ConvLayer that ifmap ``x`` (N, C, H, W) and weights ``w`` (M, C/G, R, S) describe."""
    if x.ndim != 4:
        raise ValueError(f"ifmap must have 4 dimensions (N, C, H, W), not {x.ndim} (shape {x.shape})")
    if w.ndim != 4:
        raise ValueError(f"weights must have 4 dimensions (M, C/G, R, S), not {w.ndim} "
                         f"(shape {w.shape})")
    N, C, H, W = x.shape
    M, Cg, R, S = w.shape
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive integer, not {groups!r}")
    if Cg * groups != C:
        raise ValueError(f"weights have {Cg} channels per group but the ifmap has C = {C} channels "
                         f"in G = {groups} groups (expected {C // groups if C % groups == 0 else C / groups})")
    layer = ConvLayer(N=N, C=C, H=H, W=W, M=M, R=R, S=S, U=stride, P=padding, G=groups)
    if bias is not None and bias.shape != (M,):
        raise ValueError(f"bias must have shape ({M},) to match M = {M} filters, not {bias.shape}")
    return layer


def conv2d(x, w, bias=None, *, stride=1, padding=0, groups=1):
    """Exact accumulation ``acc[n, m, e, f]`` of a grouped 2-D convolution, as int64."""
    x, w = as_int_array("ifmap", x), as_int_array("weights", w)
    bias = None if bias is None else as_int_array("bias", bias)
    layer = layer_of(x, w, stride=stride, padding=padding, groups=groups, bias=bias)
    x_bits = max(int(x.max(initial=0)).bit_length(), int(-x.min(initial=0) - 1).bit_length()) + 1
    lo, hi = psum_range(w, bias, x_bits)
    if not (-(1 << 63) <= lo and hi < (1 << 63)):
        raise ValueError(f"partial sums of this layer may reach [{lo}, {hi}], beyond 64 bits")
    U, P, G = layer.U, layer.P, layer.G
    xp = np.pad(x, ((0, 0), (0, 0), (P, P), (P, P)))
    windows = sliding_window_view(xp, (layer.R, layer.S), axis=(2, 3))[:, :, ::U, ::U][:, :, :layer.E, :layer.F]
    Cg, Mg = layer.C // G, layer.M // G
    acc = np.empty(layer.ofmap_shape, dtype=np.int64)
    for g in range(G):
        cols = windows[:, g * Cg:(g + 1) * Cg].transpose(0, 2, 3, 1, 4, 5)
        cols = cols.reshape(layer.N * layer.E * layer.F, Cg * layer.R * layer.S)
        filt = w[g * Mg:(g + 1) * Mg].reshape(Mg, -1)
        out = cols @ filt.T
        acc[:, g * Mg:(g + 1) * Mg] = out.reshape(layer.N, layer.E, layer.F, Mg).transpose(0, 3, 1, 2)
    if bias is not None:
        acc += bias[None, :, None, None]
    return acc


def requantize(acc, *, shift, relu=False, width):
    """Dynamic fixed point: ``(acc + 2**(shift-1)) >> shift`` (round half up), ReLU, saturate."""
    acc = as_int_array("accumulator", acc)
    if not isinstance(shift, int) or isinstance(shift, bool) or not 0 <= shift <= 62:
        raise ValueError(f"shift must be an integer between 0 and 62, not {shift!r}")
    if shift:
        q = (acc >> shift) + ((acc >> (shift - 1)) & 1)
    else:
        q = acc.copy()
    if relu:
        q = np.maximum(q, 0)
    return np.clip(q, -(1 << (width - 1)), (1 << (width - 1)) - 1)


def max_pool(x, *, size, stride=None):
    """Max pooling over ``size`` x ``size`` windows (no padding; partial windows are dropped)."""
    x = as_int_array("ifmap", x, ndim=4)
    stride = size if stride is None else stride
    for name, value in (("size", size), ("stride", stride)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"pooling {name} must be a positive integer, not {value!r}")
    if size > x.shape[2] or size > x.shape[3]:
        raise ValueError(f"pooling window {size}x{size} is larger than the ifmap "
                         f"{x.shape[2]}x{x.shape[3]}")
    windows = sliding_window_view(x, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]
    return windows.max(axis=(4, 5))


def fully_connected(x, w, bias=None):
    """Exact ``acc[n, m]``: a convolution whose filter covers the whole ifmap (H = R, W = S).

    ``x`` is (N, C) or (N, C, H, W); ``w`` is (M, C) or (M, C, H, W).
    """
    x, w = as_int_array("ifmap", x), as_int_array("weights", w)
    if x.ndim == 2:
        x = x[:, :, None, None]
    if w.ndim == 2:
        w = w[:, :, None, None]
    if x.shape[1:] != w.shape[1:]:
        raise ValueError(f"fully connected weights {w.shape[1:]} do not match the ifmap {x.shape[1:]}")
    return conv2d(x, w, bias)[:, :, 0, 0]


def run_layer(config, x, w, bias=None, *, stride=1, padding=0, groups=1, shift=0, relu=False,
              raw=False):
    """One layer as the accelerator of ``config`` computes it, with every input validated.

    Returns ``(output, layer)``: the exact accumulation if ``raw``, else the requantised output.
    """
    x = as_int_array("ifmap", x, ndim=4)
    w = as_int_array("weights", w, ndim=4)
    bias = None if bias is None else as_int_array("bias", bias, ndim=1)
    layer = layer_of(x, w, stride=stride, padding=padding, groups=groups, bias=bias)
    check_signed("ifmap", x, config.ifmap_width)
    check_signed("weights", w, config.weight_width)
    if bias is not None:
        check_signed("bias", bias, config.psum_width)
    needed = psum_bits_needed(w, bias, config.ifmap_width)
    if needed > config.psum_width:
        raise ValueError(f"layer needs {needed}-bit partial sums for exact accumulation (worst case "
                         f"for its weights and bias with {config.ifmap_width}-bit ifmaps), but "
                         f"psum_width is {config.psum_width}")
    if not raw and not (isinstance(shift, int) and 0 <= shift < config.psum_width):
        raise ValueError(f"shift must be between 0 and {config.psum_width - 1} "
                         f"(psum_width - 1), not {shift!r}")
    acc = conv2d(x, w, bias, stride=stride, padding=padding, groups=groups)
    if raw:
        return acc, layer
    return requantize(acc, shift=shift, relu=relu, width=config.ifmap_width), layer
