"""Golden model of one PE: the row-stationary 1-D primitive, its stream orders and the exact
event counts the hardware reports (no Amaranth)."""

import numpy as np

from .golden import conv2d


__all__ = ["pe_reference", "filter_words", "ifmap_words", "pe_events"]


def pe_reference(cfg, weights, ifmap, ipsum=None):
    """Output psums (rows, f, p) of a pass: ``weights`` (p, q, s), ``ifmap`` (rows, q, row_length),
    ``ipsum`` (rows, f, p) when ``cfg.accumulate``."""
    acc = conv2d(ifmap[:, :, None, :], weights[:, :, None, :], stride=cfg.u)
    opsum = acc[:, :, 0, :cfg.f].transpose(0, 2, 1)
    return opsum + ipsum if cfg.accumulate else opsum


def filter_words(weights, lanes=1):
    """The ``filt`` stream order: taps outer, then channels, filters innermost, the filters
    padded with zeros to whole rows of ``lanes`` MAC lanes."""
    p = weights.shape[0]
    padded = np.zeros((-(-p // lanes) * lanes, *weights.shape[1:]), dtype=weights.dtype)
    padded[:p] = weights
    return padded.transpose(2, 1, 0).ravel()


def filter_transfers(config, weights):
    """The filter network transfers carrying ``weights`` (in :func:`filter_words` order) to a
    PE: ``filter_noc_width`` to a transfer, the last marked; each the integer of the
    :class:`rowstation.hw.pe.FilterWord` bits (weights low first, then count, then last)."""
    k, width = config.filter_noc_width, config.weight_width
    words = [int(w) for w in weights]
    out = []
    for start in range(0, len(words), k):
        chunk = words[start:start + k]
        value = 0
        for lane, weight in enumerate(chunk):
            value |= (weight & ((1 << width) - 1)) << (lane * width)
        value |= len(chunk) << (k * width)
        value |= int(start + k >= len(words)) << (k * width + k.bit_length())
        out.append(value)
    return out


def ifmap_words(ifmap):
    """The ``ifmap`` stream order: rows, columns, channels innermost."""
    return ifmap.transpose(0, 2, 1).ravel()


def pe_events(cfg, ifmap):
    """Exact event counts of a pass. Zero ifmap values gate their ``p`` MACs and filter reads
    (idle MAC lanes count nothing; the filter spad takes their zero weights);
    the psum scratchpad is read for every step but the first, written for every step but the
    last, and a gated step touches it only when it is the first (write 0) or last (read)."""
    rows, q, _ = ifmap.shape
    taps = np.arange(cfg.f)[:, None] * cfg.u + np.arange(cfg.s)[None, :]
    steps = ifmap[:, :, taps].transpose(0, 2, 3, 1).reshape(rows, cfg.f, cfg.s * q)
    zero = steps == 0
    first = np.zeros(cfg.s * q, dtype=bool)
    first[0] = True
    last = np.zeros(cfg.s * q, dtype=bool)
    last[-1] = True
    macs = int((~zero).sum()) * cfg.p
    return {
        "mac": macs,
        "gated_mac": int(zero.sum()) * cfg.p,
        "filter_read": macs,
        "filter_write": cfg.filter_words,
        "ifmap_read": rows * cfg.f * cfg.s * q,
        "ifmap_write": int(ifmap.size),
        "psum_read": int((~first & ~(zero & ~last)).sum()) * cfg.p,
        "psum_write": int((~last & ~(zero & ~first)).sum()) * cfg.p,
    }
