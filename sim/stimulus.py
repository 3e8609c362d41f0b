"""Random, valid layer inputs: values in the configured precision, psums that fit exactly."""

import numpy as np


__all__ = ["random_layer_arrays"]


def random_layer_arrays(config, layer, *, seed=0, zeros=0.0, bias=True):
    """Ifmap, weights and (optionally) bias for ``layer`` that ``config`` accumulates exactly.

    Weights span the full weight width unless the layer's fan-in would then overflow the psum
    width; then their magnitude is limited so the worst case fits. ``zeros`` is the fraction of
    ifmap values set to zero.
    """
    if not 0.0 <= zeros <= 1.0:
        raise ValueError(f"zeros must be a fraction between 0 and 1, not {zeros}")
    rng = np.random.default_rng(seed)
    x_max = 1 << (config.ifmap_width - 1)
    fan_in = (layer.C // layer.G) * layer.R * layer.S
    psum_max = (1 << (config.psum_width - 1)) - 1
    b_max = min(psum_max // 4, 1 << (config.ifmap_width + config.weight_width - 2)) if bias else 0
    w_max = min((1 << (config.weight_width - 1)) - 1, (psum_max - b_max) // (fan_in * x_max))
    if w_max < 1:
        raise ValueError(f"fan-in C/G*R*S = {fan_in} cannot be accumulated exactly in "
                         f"psum_width = {config.psum_width} even with weights of magnitude 1")
    x = rng.integers(-x_max, x_max, size=layer.ifmap_shape, dtype=np.int64)
    x[rng.random(x.shape) < zeros] = 0
    arrays = {
        "ifmap": x,
        "weights": rng.integers(-w_max, w_max + 1, size=layer.weight_shape, dtype=np.int64),
    }
    if bias:
        arrays["bias"] = rng.integers(-b_max, b_max + 1, size=(layer.M,), dtype=np.int64)
    return arrays


def random_pe_pass(config, cfg, *, rng, zeros=0.0):
    """Weights (p, q, s), ifmap (rows, q, row_length) and, with ``cfg.accumulate``, ipsum
    (rows, f, p) in the precision of ``config``, scaled so every psum fits ``psum_width``."""
    x_max, w_max = 1 << (config.ifmap_width - 1), 1 << (config.weight_width - 1)
    psum_max = 1 << (config.psum_width - 1)
    if cfg.q * cfg.s * x_max * w_max >= psum_max // 2:
        w_max = max(1, psum_max // (4 * cfg.q * cfg.s * x_max))
    weights = rng.integers(-w_max, w_max, size=(cfg.p, cfg.q, cfg.s), dtype=np.int64)
    ifmap = rng.integers(-x_max, x_max, size=(cfg.rows, cfg.q, cfg.row_length), dtype=np.int64)
    ifmap[rng.random(ifmap.shape) < zeros] = 0
    ipsum = None
    if cfg.accumulate:
        ipsum = rng.integers(-psum_max // 2, psum_max // 2, size=(cfg.rows, cfg.f, cfg.p), dtype=np.int64)
    return weights, ifmap, ipsum
