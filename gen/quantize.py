"""Dynamic fixed-point quantisation of a float network for one configuration.

Every tensor ``t`` is held as integers ``q = round(t * 2**f)`` with its own fraction length
``f`` (a power-of-two scale), as in the survey's dynamic fixed point:

- **Activations** (the network's input and every layer's output): the largest ``f`` for which
  the calibration data's largest magnitude (or its ``percentile``-th percentile) fits the signed
  ``ifmap_width``; values beyond it saturate.
- **Weights**: per layer, the largest ``f`` for which the largest magnitude fits ``weight_width``.
- **Biases** at the accumulator's scale ``f_in + f_w``, so the accumulation is exact.
- **Requantisation** is the hardware's rounding shift by ``f_in + f_w - f_out`` (never negative:
  ``f_out`` is lowered to ``f_in + f_w`` instead). Max pooling keeps its input's scale.
- **Exact accumulation** is kept: a layer whose worst-case partial sum would exceed
  ``psum_width`` (or whose bias would) is **rescaled**: its weight fraction is lowered one bit at
  a time until it fits, and the summary shows the bits lost.
- The **last layer**, unless rectified, writes its exact accumulation (no shift), the best input
  for an argmax; its output scale is then ``f_in + f_w``.

Rounding is half up (``floor(t * 2**f + 0.5)``), as the hardware's shift rounds.
"""

import math

import numpy as np

from .network import LayerSpec, Network


__all__ = ["fraction_bits", "to_fixed", "quantize", "quantize_input", "dequantize"]


def fraction_bits(magnitude, width):
    """The largest fraction length ``f`` with ``round(magnitude * 2**f)`` in the signed
    ``width``-bit range (0 for a zero tensor)."""
    top = (1 << (width - 1)) - 1
    if not magnitude > 0 or not math.isfinite(magnitude):
        if magnitude == 0:
            return 0
        raise ValueError(f"cannot choose a scale for a tensor of largest magnitude {magnitude}")
    f = math.floor(math.log2(top / magnitude))
    while math.floor(magnitude * 2.0 ** f + 0.5) > top:
        f -= 1
    return f


def to_fixed(t, frac):
    """``floor(t * 2**frac + 0.5)`` as int64."""
    return np.floor(np.asarray(t, dtype=np.float64) * 2.0 ** frac + 0.5).astype(np.int64)


def quantize_input(x, frac, width):
    """Float input ``x`` as ``width``-bit integers at fraction ``frac``: (integers, the number of
    values that saturated)."""
    q = to_fixed(x, frac)
    lo, hi = -(1 << (width - 1)), (1 << (width - 1)) - 1
    saturated = int(((q < lo) | (q > hi)).sum())
    return np.clip(q, lo, hi), saturated


def dequantize(y, frac):
    return np.asarray(y, dtype=np.float64) * 2.0 ** -frac


def _magnitude(t, percentile):
    a = np.abs(np.asarray(t, dtype=np.float64))
    if not a.size:
        return 0.0
    return float(a.max() if percentile >= 100 else np.percentile(a, percentile))


def quantize(network, config, calibration, *, percentile=100.0):
    """The integer :class:`~rowstation.gen.network.Network` of float ``network`` (a
    :class:`~rowstation.gen.frontend.FloatNetwork`) for ``config``, its scales chosen on the
    float ``calibration`` inputs; its ``quantization`` holds every fraction length."""
    from ..sim.golden import check_signed, psum_bits_needed

    if not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100], not {percentile}")
    _, activations = network.run(calibration, activations=True)
    a_width, w_width, p_width = config.ifmap_width, config.weight_width, config.psum_width
    f_in = fraction_bits(_magnitude(calibration, percentile), a_width)
    f_input, specs, details = f_in, [], []
    last = len(network.layers) - 1
    for i, (layer, y) in enumerate(zip(network.layers, activations)):
        if layer.kind == "maxpool":
            specs.append(LayerSpec(layer.name, "maxpool", stride=layer.stride, kernel=layer.kernel))
            details.append({"name": layer.name, "input_frac": f_in, "output_frac": f_in})
            continue
        f_w = fraction_bits(_magnitude(layer.weights, 100), w_width)
        ideal, rescaled = f_w, 0
        while True:
            w = to_fixed(layer.weights, f_w)
            b = None if layer.bias is None else to_fixed(layer.bias, f_in + f_w)
            bias_fits = b is None or not np.abs(b).max() >= 1 << (p_width - 1)
            if bias_fits and psum_bits_needed(w, b, a_width) <= p_width:
                break
            if not np.any(w):
                raise ValueError(f"layer {layer.name}: no weight scale keeps its sums within "
                                 f"psum_width = {p_width} bits")
            f_w, rescaled = f_w - 1, rescaled + 1
        check_signed(f"layer {layer.name} weights", w, w_width)
        f_acc = f_in + f_w
        raw = i == last and not layer.relu
        if raw:
            shift, f_out = None, f_acc
        else:
            f_out = min(fraction_bits(_magnitude(y, percentile), a_width), f_acc)
            shift = f_acc - f_out
            if shift > min(p_width - 1, 62):
                shift, f_out = min(p_width - 1, 62), f_acc - min(p_width - 1, 62)
        specs.append(LayerSpec(layer.name, layer.kind, weights=w, bias=b, stride=layer.stride,
                               padding=layer.padding, groups=layer.groups, shift=shift, relu=layer.relu))
        details.append({"name": layer.name, "input_frac": f_in, "weight_frac": f_w, "accumulator_frac": f_acc,
                        "output_frac": f_out, "shift": shift, "rescaled_bits": rescaled,
                        "ideal_weight_frac": ideal})
        f_in = f_out
    quantization = {"rule": "dynamic fixed point: power-of-two scales; activations from the calibration "
                            f"data's {'largest magnitude' if percentile >= 100 else f'{percentile} percentile'}, "
                            "weights from their largest magnitude",
                    "percentile": percentile, "input_frac": f_input, "output_frac": f_in,
                    "flat_output": network.flat_output, "host_output": network.host_output, "layers": details}
    return Network(network.name, tuple(network.input_shape), specs, quantization)
