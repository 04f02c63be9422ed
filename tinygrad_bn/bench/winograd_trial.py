"""Winograd F(2x2, 3x3) for stride-1 3x3 convolutions: a measured trial, NOT used by ops/conv.py.

    python -m tinygrad_bn.bench.winograd_trial      (about half a minute)

Checks the result against the im2col path in float64 and float32, then times the forward at the
ResNet-20 shapes, paired with ops/conv.py's im2col path (median of paired ratios). It lost at
every shape on the 2-core machine (docs/benchmarks.md, "Winograd F(2x2, 3x3)"), so it stays here as
the record and a starting point, not as a conv algorithm.

The math (Lavin and Gray 2016). Cut the zero-padded input into 4x4 tiles d overlapping by 2 (one
per 2x2 output block). With

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

    U[a, b, c, o] = (G w[o, c] G^T)[a, b]            the filter transform (tiny)
    V[a, b, t, c] = (B^T d[t, c] B)[a, b]            the input transform, t a tile
    M[a, b]       = V[a, b] @ U[a, b]                16 GEMMs (T x C) @ (C x O), one batched matmul
    Y[t, o]       = A^T M[:, :, t, o] A              the 2x2 outputs of tile t

so 16 multiplies per (tile, c, o) give 4 outputs: 2.25x fewer than im2col's 9 per output. B and
A hold only 0 and +-1, so both transforms are adds and subtracts of strided slices, applied along
rows then columns.
"""
import time

import numpy as np

from tinygrad_bn.ops.conv import _conv_arrays, _scratch


def winograd_filter(xp, w):
    """U[a, b, c, o] = (G w[o, c] G^T)[a, b]."""
    g = xp.asarray([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=w.dtype)
    return xp.ascontiguousarray(xp.einsum("ak,ockl,bl->abco", g, w, g))


def _input_transform_1d(xp, d, out, axis):
    """B^T along `axis` over 4-wide windows at stride 2: out = d0-d2, d1+d2, d2-d1, d1-d3."""
    tiles = out.shape[axis + 1]

    def tap(i):
        index = [slice(None)] * d.ndim
        index[axis] = slice(i, i + 2 * tiles - 1, 2)
        return d[tuple(index)]
    d0, d1, d2, d3 = (tap(i) for i in range(4))
    xp.subtract(d0, d2, out=out[0])
    xp.add(d1, d2, out=out[1])
    xp.subtract(d2, d1, out=out[2])
    xp.subtract(d1, d3, out=out[3])


def winograd_conv(xp, x, w, padding):
    """y = conv2d(x, w, stride=1, padding=padding) for a 3x3 w, by F(2x2, 3x3)."""
    n, c, h, wd = x.shape
    o = w.shape[0]
    qh, qw = h + 2 * padding[0] - 2, wd + 2 * padding[1] - 2
    th, tw = -(-qh // 2), -(-qw // 2)                  # tiles per column and row
    xpad = _scratch(xp, (n, 2 * th + 2, 2 * tw + 2, c), x.dtype, "padded")   # channels last
    xpad[:, :padding[0]] = 0
    xpad[:, padding[0] + h:] = 0
    xpad[:, :, :padding[1]] = 0
    xpad[:, :, padding[1] + wd:] = 0
    xpad[:, padding[0]:padding[0] + h, padding[1]:padding[1] + wd] = xp.moveaxis(x, 1, -1)
    rows = _scratch(xp, (4, n, th, 2 * tw + 2, c), x.dtype, "winograd")
    _input_transform_1d(xp, xpad, rows, 1)
    v = _scratch(xp, (4, 4, n, th, tw, c), x.dtype, "columns")
    for a in range(4):
        _input_transform_1d(xp, rows[a], v[a], 2)
    m = xp.matmul(v.reshape(16, n * th * tw, c), winograd_filter(xp, w).reshape(16, c, o))
    m = m.reshape(4, 4, n, th, tw, o)
    s = _scratch(xp, (2, 4, n, th, tw, o), x.dtype, "winograd")       # A^T along rows
    xp.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    xp.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    y = xp.empty((n, th, 2, tw, 2, o), dtype=x.dtype)                  # A^T along columns
    for a in range(2):
        ya = y[:, :, a]
        xp.add(s[a, 0], s[a, 1], out=ya[..., 0, :])
        ya[..., 0, :] += s[a, 2]
        xp.subtract(s[a, 1], s[a, 2], out=ya[..., 1, :])
        ya[..., 1, :] -= s[a, 3]
    y = y.reshape(n, 2 * th, 2 * tw, o)[:, :qh, :qw]
    return xp.ascontiguousarray(y.transpose(0, 3, 1, 2))


def im2col_conv(x, w, padding):
    return _conv_arrays(np, x, w, (1, 1), padding, (1, 1), 1)


def main(repeat=7):
    rng = np.random.default_rng(0)
    worst = 0.0
    for n, c, hw, o, p in [(2, 3, 7, 5, 0), (1, 4, 8, 3, 1), (3, 2, 5, 4, 2), (2, 3, 6, 2, 1)]:
        x, w = rng.standard_normal((n, c, hw, hw)), rng.standard_normal((o, c, 3, 3))
        worst = max(worst, float(np.abs(winograd_conv(np, x, w, (p, p))
                                        - im2col_conv(x, w, (p, p))).max()))
    print(f"float64, odd sizes and paddings 0-2: max |winograd - im2col| = {worst:.1e}")
    print(f"{'shape':22s} {'err wino/scale':>14s} {'err im2col/scale':>16s} "
          f"{'im2col ms':>9s} {'wino ms':>8s} {'wino/im2col':>11s}")
    for n, c, hw, o in [(128, 16, 32, 16), (128, 32, 16, 32), (128, 64, 8, 64)]:
        x = rng.standard_normal((n, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((o, c, 3, 3)).astype(np.float32)
        exact = np.asarray(im2col_conv(x.astype(np.float64), w.astype(np.float64), (1, 1)))
        scale = np.abs(w).sum(axis=(1, 2, 3)).max() * np.abs(x).max()  # bound on |y|
        err_w = np.abs(winograd_conv(np, x, w, (1, 1)) - exact).max() / scale
        err_i = np.abs(im2col_conv(x, w, (1, 1)) - exact).max() / scale
        ours, wino = [], []
        for _ in range(repeat):
            t = time.perf_counter()
            im2col_conv(x, w, (1, 1))
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            winograd_conv(np, x, w, (1, 1))
            wino.append(time.perf_counter() - t)
        ratio = np.median(np.array(wino) / np.array(ours))
        print(f"{n}x{c}x{hw}x{hw}->{o:<8d} {err_w:14.1e} {err_i:16.1e} "
              f"{np.median(ours) * 1e3:9.1f} {np.median(wino) * 1e3:8.1f} {ratio:11.2f}")


if __name__ == "__main__":
    main()
