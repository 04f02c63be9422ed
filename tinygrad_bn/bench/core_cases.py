"""Core cases (issue: core engine): framework overhead per op on tiny tensors against PyTorch
eager, and large elementwise ops / reductions against the bare NumPy call (the floor we must not
add copies or dtype promotions to)."""
import numpy as np

import tinygrad_bn as tg


def tiny_op_cases(torch):
    """(name, ours, reference) per-op overhead on 4-element float32 tensors."""
    a_np = np.arange(1.0, 5.0, dtype=np.float32)
    m_np = np.ones((4, 4), dtype=np.float32)
    a, b, m = tg.tensor(a_np), tg.tensor(a_np * 2), tg.tensor(m_np)
    ag = tg.tensor(a_np, requires_grad=True)
    ta, tb, tm = torch.tensor(a_np), torch.tensor(a_np * 2), torch.tensor(m_np)
    tag = torch.tensor(a_np, requires_grad=True)

    def fwd_bwd_ours():
        (ag * ag + ag).sum().backward()

    def fwd_bwd_torch():
        (tag * tag + tag).sum().backward()

    return [
        ("tiny add", lambda: a + b, lambda: ta + tb),
        ("tiny mul scalar", lambda: a * 2.0, lambda: ta * 2.0),
        ("tiny exp", lambda: a.exp(), lambda: ta.exp()),
        ("tiny relu", lambda: a.relu(), lambda: ta.relu()),
        ("tiny sum", lambda: a.sum(), lambda: ta.sum()),
        ("tiny matmul 4x4", lambda: m @ m, lambda: tm @ tm),
        ("tiny reshape", lambda: m.reshape(2, 8), lambda: tm.reshape(2, 8)),
        ("tiny index", lambda: m[1:3], lambda: tm[1:3]),
        ("tiny add (recording graph)", lambda: ag + ag, lambda: tag + tag),
        ("tiny 3-op fwd+bwd", fwd_bwd_ours, fwd_bwd_torch),
    ]


def large_cases(n):
    """(name, ours, bare numpy) on n float32 elements."""
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal(n, dtype=np.float32)
    y_np = rng.standard_normal(n, dtype=np.float32)
    x, y = tg.tensor(x_np), tg.tensor(y_np)
    return [
        (f"add {n:.0e}", lambda: x + y, lambda: x_np + y_np),
        (f"mul by scalar {n:.0e}", lambda: x * 2.0, lambda: x_np * np.float32(2.0)),
        (f"exp {n:.0e}", lambda: x.exp(), lambda: np.exp(x_np)),
        (f"relu {n:.0e}", lambda: x.relu(), lambda: np.maximum(x_np, 0)),
        (f"sum {n:.0e}", lambda: x.sum(), lambda: x_np.sum()),
        (f"mean {n:.0e}", lambda: x.mean(), lambda: x_np.mean()),
        (f"amax {n:.0e}", lambda: x.amax(), lambda: x_np.max()),
    ]
