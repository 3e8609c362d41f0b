"""An independent reference for the golden model: plain loops over int64, written separately."""

import numpy as np


def conv2d_loops(x, w, b, stride, padding, groups):
    N, C, H, W = x.shape
    M, Cg, R, S = w.shape
    Hp, Wp = H + 2 * padding, W + 2 * padding
    xp = np.zeros((N, C, Hp, Wp), dtype=np.int64)
    xp[:, :, padding:padding + H, padding:padding + W] = x
    E, F = (Hp - R) // stride + 1, (Wp - S) // stride + 1
    per_group = M // groups
    y = np.zeros((N, M, E, F), dtype=np.int64)
    for n in range(N):
        for m in range(M):
            g = m // per_group
            for e in range(E):
                for f in range(F):
                    total = 0 if b is None else int(b[m])
                    for c in range(Cg):
                        for r in range(R):
                            for s in range(S):
                                total += int(w[m, c, r, s]) * int(xp[n, g * Cg + c, e * stride + r, f * stride + s])
                    y[n, m, e, f] = total
    return y


def requantize_loops(acc, shift, relu, width):
    lo, hi = -(2 ** (width - 1)), 2 ** (width - 1) - 1
    out = np.empty_like(acc)
    for index, value in np.ndenumerate(acc):
        v = int(value)
        q = v if shift == 0 else (v + 2 ** (shift - 1)) // 2 ** shift
        if relu and q < 0:
            q = 0
        out[index] = min(max(q, lo), hi)
    return out


def max_pool_loops(x, size, stride):
    N, C, H, W = x.shape
    E, F = (H - size) // stride + 1, (W - size) // stride + 1
    y = np.empty((N, C, E, F), dtype=np.int64)
    for n, c, e, f in np.ndindex(N, C, E, F):
        y[n, c, e, f] = max(int(v) for v in x[n, c, e * stride:e * stride + size, f * stride:f * stride + size].ravel())
    return y
