"""The table of primitive ops that drives the parity and gradient-check tests.

Each entry: (id, our_fn, torch_fn, input shapes, options). Options: low/high for the input range
(log needs positive inputs), grad=False for non-differentiable ops, double=False to skip
gradgradcheck (never used for a differentiable op without a written reason).
Shapes include broadcasting, size-1 and size-0 dimensions.
"""
import tinygrad_bn as tg
from tests.helpers import torch  # the oracle, or a stand-in that skips the test using it


def _t(name):
    """torch's function of that name (resolved lazily so the table loads without torch)."""
    return lambda *a, **k: getattr(torch, name)(*a, **k)


POS = {"low": 0.5, "high": 2.0}
OPS = [
    # arithmetic with broadcasting
    ("add", lambda a, b: a + b, lambda a, b: a + b, [(3, 4), (4,)], {}),
    ("add_bcast_both", lambda a, b: a + b, lambda a, b: a + b, [(3, 1, 5), (1, 4, 1)], {}),
    ("add_scalar", lambda a: a + 2.5, lambda a: a + 2.5, [(2, 3)], {}),
    ("radd_scalar", lambda a: 1.5 + a, lambda a: 1.5 + a, [(2, 3)], {}),
    ("sub", lambda a, b: a - b, lambda a, b: a - b, [(2, 3, 4), (3, 1)], {}),
    ("rsub_scalar", lambda a: 2 - a, lambda a: 2 - a, [(4,)], {}),
    ("mul", lambda a, b: a * b, lambda a, b: a * b, [(2, 3), (2, 1)], {}),
    ("mul_self", lambda a: a * a, lambda a: a * a, [(5,)], {}),
    ("div", lambda a, b: a / b, lambda a, b: a / b, [(3, 4), (4,)], {"low": 0.5, "high": 2.0}),
    ("rdiv_scalar", lambda a: 3 / a, lambda a: 3 / a, [(3,)], POS),
    ("pow_scalar", lambda a: a ** 3, lambda a: a ** 3, [(2, 3)], {}),
    ("pow_half", lambda a: a ** 0.5, lambda a: a ** 0.5, [(2, 3)], POS),
    ("pow_tensor", lambda a, b: a ** b, lambda a, b: a ** b, [(2, 3), (3,)], POS),
    ("rpow_scalar", lambda a: 2.0 ** a, lambda a: 2.0 ** a, [(4,)], {}),
    ("neg", lambda a: -a, lambda a: -a, [(2, 3)], {}),
    # unary math
    ("exp", tg.exp, _t("exp"), [(2, 3)], {}),
    ("log", tg.log, _t("log"), [(2, 3)], POS),
    ("sqrt", tg.sqrt, _t("sqrt"), [(2, 3)], POS),
    ("rsqrt", tg.rsqrt, _t("rsqrt"), [(2, 3)], POS),
    ("abs", tg.abs, _t("abs"), [(2, 3)], {}),
    ("sign", tg.sign, _t("sign"), [(2, 3)], {}),
    ("tanh", tg.tanh, _t("tanh"), [(2, 3)], {}),
    ("sigmoid", tg.sigmoid, _t("sigmoid"), [(2, 3)], {}),
    ("relu", tg.relu, _t("relu"), [(3, 4)], {}),
    ("maximum", tg.maximum, _t("maximum"), [(3, 4), (4,)], {}),
    ("minimum", tg.minimum, _t("minimum"), [(3, 1), (1, 4)], {}),
    ("clamp", lambda a: tg.clamp(a, -0.5, 0.7), lambda a: torch.clamp(a, -0.5, 0.7), [(4, 5)], {}),
    ("clamp_min", lambda a: a.clamp(min=0.1), lambda a: a.clamp(min=0.1), [(4, 5)], {}),
    ("where", lambda a, b: tg.where(a > 0, a, b), lambda a, b: torch.where(a > 0, a, b), [(3, 4), (4,)], {}),
    # reductions
    ("sum_all", lambda a: a.sum(), lambda a: a.sum(), [(3, 4)], {}),
    ("sum_dim", lambda a: a.sum(1), lambda a: a.sum(1), [(3, 4, 2)], {}),
    ("sum_dims_keep", lambda a: a.sum((0, 2), keepdim=True), lambda a: a.sum((0, 2), keepdim=True), [(3, 4, 2)], {}),
    ("sum_neg_dim", lambda a: a.sum(-1), lambda a: a.sum(-1), [(3, 4)], {}),
    ("mean", lambda a: a.mean(0), lambda a: a.mean(0), [(3, 4)], {}),
    ("mean_all", lambda a: a.mean(), lambda a: a.mean(), [(3, 4)], {}),
    ("var", lambda a: a.var(1), lambda a: a.var(1), [(3, 5)], {}),
    ("var_biased_keep", lambda a: a.var((0, 1), keepdim=True, correction=0),
     lambda a: a.var((0, 1), keepdim=True, correction=0), [(3, 4, 2)], {}),
    ("var_all", lambda a: a.var(), lambda a: a.var(), [(3, 4)], {}),
    ("std", lambda a: a.std(0), lambda a: a.std(0), [(4, 3)], {}),
    ("amax", lambda a: a.amax(1), lambda a: a.amax(1), [(3, 5)], {}),
    ("amin_keep", lambda a: a.amin((0, 1), keepdim=True), lambda a: a.amin((0, 1), keepdim=True), [(3, 5, 2)], {}),
    ("max_all", lambda a: a.max(), lambda a: a.max(), [(3, 5)], {}),
    ("max_dim", lambda a: a.max(1)[0], lambda a: a.max(1)[0], [(3, 5)], {}),
    ("min_dim_keep", lambda a: a.min(0, keepdim=True)[0], lambda a: a.min(0, keepdim=True)[0], [(3, 5)], {}),
    ("logsumexp", lambda a: a.logsumexp(1), lambda a: a.logsumexp(1), [(3, 5)], {}),
    ("logsumexp_keep", lambda a: a.logsumexp((0, 2), keepdim=True),
     lambda a: a.logsumexp((0, 2), keepdim=True), [(2, 3, 4)], {}),
    # shape
    ("reshape", lambda a: a.reshape(4, -1), lambda a: a.reshape(4, -1), [(2, 3, 4)], {}),
    ("view", lambda a: a.view(6, 4), lambda a: a.view(6, 4), [(2, 3, 4)], {}),
    ("flatten", lambda a: a.flatten(1), lambda a: a.flatten(1), [(2, 3, 4)], {}),
    ("permute", lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), [(2, 3, 4)], {}),
    ("transpose", lambda a: a.transpose(0, -1), lambda a: a.transpose(0, -1), [(2, 3, 4)], {}),
    ("T", lambda a: a.T * 1, lambda a: a.T * 1, [(2, 3)], {}),
    ("expand", lambda a: a.expand(2, 3, 4), lambda a: a.expand(2, 3, 4), [(3, 1)], {}),
    ("squeeze", lambda a: a.squeeze(), lambda a: a.squeeze(), [(2, 1, 3, 1)], {}),
    ("squeeze_dim", lambda a: a.squeeze(1), lambda a: a.squeeze(1), [(2, 1, 3)], {}),
    ("unsqueeze", lambda a: a.unsqueeze(-1), lambda a: a.unsqueeze(-1), [(2, 3)], {}),
    ("index_basic", lambda a: a[1:, ::2, 0], lambda a: a[1:, ::2, 0], [(3, 4, 2)], {}),
    ("index_none_ellipsis", lambda a: a[None, ..., 1], lambda a: a[None, ..., 1], [(3, 4)], {}),
    ("index_int_array_repeat", lambda a: a[[0, 2, 0, 0]], lambda a: a[[0, 2, 0, 0]], [(3, 4)], {}),
    ("index_two_arrays", lambda a: a[[0, 1, 1], [2, 0, 2]], lambda a: a[[0, 1, 1], [2, 0, 2]], [(3, 4)], {}),
    ("index_bool_mask", lambda a: a[a > 0], lambda a: a[a > 0], [(3, 4)], {}),
    ("index_negative", lambda a: a[-1, -2:], lambda a: a[-1, -2:], [(3, 4)], {}),
    ("cat", lambda a, b: tg.cat([a, b, a], 1), lambda a, b: torch.cat([a, b, a], 1), [(2, 3), (2, 1)], {}),
    ("stack", lambda a, b: tg.stack([a, b], -1), lambda a, b: torch.stack([a, b], -1), [(2, 3), (2, 3)], {}),
    ("split", lambda a: a.split(2, 1)[1] * 2, lambda a: a.split(2, 1)[1] * 2, [(2, 5)], {}),
    ("split_sections", lambda a: tg.cat(a.split([1, 3], 1)[::-1], 1),
     lambda a: torch.cat(a.split([1, 3], 1)[::-1], 1), [(2, 4)], {}),
    ("chunk", lambda a: a.chunk(3, 0)[2], lambda a: a.chunk(3, 0)[2], [(7, 2)], {}),
    ("pad", lambda a: tg.pad(a, (1, 2, 0, 1)), lambda a: torch.nn.functional.pad(a, (1, 2, 0, 1)), [(2, 3, 4)], {}),
    ("pad_value", lambda a: tg.pad(a, (2, 0), value=1.5),
     lambda a: torch.nn.functional.pad(a, (2, 0), value=1.5), [(3, 2)], {}),
    # matmul
    ("matmul_2d", lambda a, b: a @ b, lambda a, b: a @ b, [(3, 4), (4, 5)], {}),
    ("matmul_batched_bcast", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 1, 3, 4), (3, 4, 2)], {}),
    ("matmul_vec_mat", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (2, 4, 3)], {}),
    ("matmul_mat_vec", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 3, 4), (4,)], {}),
    ("matmul_dot", lambda a, b: a @ b, lambda a, b: a @ b, [(4,), (4,)], {}),
    # size-0 and size-1 dimensions
    ("add_size0", lambda a, b: a + b, lambda a, b: a + b, [(0, 3), (1, 3)], {}),
    ("sum_size0", lambda a: a.sum(0), lambda a: a.sum(0), [(0, 3)], {}),
    ("mul_size1", lambda a, b: a * b, lambda a, b: a * b, [(1, 1), (1,)], {}),
    ("matmul_size0", lambda a, b: a @ b, lambda a, b: a @ b, [(2, 0), (0, 3)], {}),
    ("cat_size0", lambda a, b: tg.cat([a, b]), lambda a, b: torch.cat([a, b]), [(0, 2), (3, 2)], {}),
    # composites that stress accumulation of a tensor used several times
    ("reuse", lambda a: a * a.exp() + a.sum() * a, lambda a: a * a.exp() + a.sum() * a, [(3,)], {}),
    ("softmax_composite", lambda a: (a - a.logsumexp(1, keepdim=True)).exp(),
     lambda a: (a - a.logsumexp(1, keepdim=True)).exp(), [(2, 4)], {}),
]

# Non-contiguous inputs: the op runs on a transposed / strided view of a fresh tensor.
NONCONTIG = [
    ("exp_T", lambda a: tg.exp(a.T), lambda a: torch.exp(a.T), [(3, 4)], {}),
    ("mul_strided", lambda a, b: a[:, ::2] * b, lambda a, b: a[:, ::2] * b, [(3, 6), (3, 3)], {}),
    ("sum_permuted", lambda a: a.permute(2, 0, 1).sum(1), lambda a: a.permute(2, 0, 1).sum(1), [(2, 3, 4)], {}),
    ("matmul_T", lambda a, b: a.T @ b.T, lambda a, b: a.T @ b.T, [(4, 3), (5, 4)], {}),
    ("reshape_of_T", lambda a: a.T.reshape(-1), lambda a: a.T.reshape(-1), [(3, 4)], {}),
]

ALL = OPS + NONCONTIG
