"""The row-stationary schedule of a mapping, executed in NumPy: every pass, chain and PE with
exactly the filter block and ifmap rows the hardware streams to it. Its result must equal the
golden convolution; the array's controller follows the same schedule."""

import numpy as np

from .golden import as_int_array
from .pe_model import pe_reference


__all__ = ["ifmap_rows", "pe_streams", "run_mapping"]


def ifmap_rows(mapping, xp, g, cb, row, sb):
    """The ifmap words (N, q, row_length) of padded row ``row``, channel block ``cb`` of group
    ``g``, for filter segment ``sb``; ``xp`` is the zero-padded ifmap."""
    L, q = mapping.layer, mapping.q
    c0 = g * (L.C // L.G) + cb * q
    return xp[:, c0:c0 + q, row][:, :, mapping.ifmap_columns(sb)]


def pe_streams(mapping, xp, w, output, term):
    """Filter block (p, q, seg) and ifmap rows (N, q, row_length) of the PE that computes
    ``term`` (cb, r, sb) of ``output`` (g, mb, e); no filter block when ``w`` is None."""
    L, p, q, seg = mapping.layer, mapping.p, mapping.q, mapping.seg
    (g, _, e), (cb, r, sb) = output, term
    m0 = mapping.first_filter(output)
    filters = None if w is None else w[m0:m0 + p, cb * q:(cb + 1) * q, r, sb * seg:(sb + 1) * seg]
    return filters, ifmap_rows(mapping, xp, g, cb, e * L.U + r, sb)


def run_mapping(mapping, x, w, bias=None):
    """Exact accumulation ``acc`` (N, M, E, F) computed pass by pass as ``mapping`` schedules it,
    with the array's semantics: a chain's bottom PE takes the psums the GLB holds at the start of
    the pass (initially the bias), each PE adds its own, and the top PE's psums replace them."""
    L = mapping.layer
    x, w = as_int_array("ifmap", x, ndim=4), as_int_array("weights", w, ndim=4)
    xp = np.pad(x, ((0, 0), (0, 0), (L.P, L.P), (L.P, L.P)))
    glb = np.zeros(L.ofmap_shape, dtype=np.int64)
    if bias is not None:
        glb += as_int_array("bias", bias, ndim=1)[None, :, None, None]
    pe, n = mapping.pe_config, mapping.n
    for block in range(mapping.blocks):     # the passes repeat per block of n images
        xb, gb = xp[block * n:(block + 1) * n], glb[block * n:(block + 1) * n]
        for jobs in mapping.passes:
            held = gb.copy()
            for _, o, k in jobs:
                output = mapping.outputs[o]
                m0, e = mapping.first_filter(output), output[2]
                psum = held[:, m0:m0 + mapping.p, e, :].transpose(0, 2, 1)  # the bottom PE's ipsum
                for term in mapping.chunk_terms(k):
                    filters, rows = pe_streams(mapping, xb, w, output, term)
                    psum = pe_reference(pe, filters, rows, psum)
                gb[:, m0:m0 + mapping.p, e, :] = psum.transpose(0, 2, 1)
    return glb
