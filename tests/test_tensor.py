"""Tensor creation, dtypes and promotion, devices, conversions and repr."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tests.helpers import needs_torch, torch


def test_creation_defaults_match_pytorch():
    assert tg.tensor([1.0, 2.0]).dtype == tg.float32
    assert tg.tensor([1, 2]).dtype == tg.int64
    assert tg.tensor([True, False]).dtype == tg.bool
    assert tg.tensor(3.5).shape == () and tg.tensor(3.5).item() == 3.5
    assert tg.tensor(np.ones(2)).dtype == tg.float64  # arrays keep their dtype
    assert tg.tensor([[1, 2]], dtype=tg.float16).dtype == tg.float16
    assert tg.tensor([1, 2], dtype="int32").dtype == tg.int32


def test_creation_functions(device):
    assert tg.zeros(2, 3, device=device).shape == (2, 3)
    assert tg.ones((4,), device=device).tolist() == [1.0] * 4
    assert tg.full((2,), 7, device=device).dtype == tg.int64
    assert tg.full((2,), 7.0, device=device).tolist() == [7.0, 7.0]
    assert tg.empty(0, 3, device=device).shape == (0, 3)
    assert tg.arange(5, device=device).tolist() == [0, 1, 2, 3, 4]
    assert tg.arange(1, 2, 0.25, device=device).dtype == tg.float32
    assert np.allclose(tg.linspace(0, 1, 5, device=device).tolist(), [0, 0.25, 0.5, 0.75, 1])
    assert tg.eye(3, device=device).tolist()[1] == [0.0, 1.0, 0.0]
    r = tg.randint(0, 10, (100,), device=device).numpy()
    assert r.dtype == np.int64 and r.min() >= 0 and r.max() < 10
    x = tg.randn(3, 4, device=device, requires_grad=True)
    assert x.requires_grad and x.is_leaf and str(x.device) == device.split(":")[0] + (":0" if device.startswith("cuda") else "")
    for fn in (tg.zeros_like, tg.ones_like, tg.rand_like, tg.randn_like, tg.empty_like):
        y = fn(x)
        assert y.shape == x.shape and y.device == x.device and y.dtype == x.dtype
    assert tg.full_like(x, 2.0).tolist()[0][0] == 2.0


def test_random_is_reproducible_with_manual_seed(device):
    tg.manual_seed(123)
    a = tg.randn(5, device=device).tolist()
    tg.manual_seed(123)
    b = tg.randn(5, device=device).tolist()
    c = tg.randn(5, device=device).tolist()
    assert a == b and a != c


def test_rand_range_and_dtypes(device):
    u = tg.rand(1000, device=device).numpy()
    assert u.dtype == np.float32 and 0 <= u.min() and u.max() < 1
    assert tg.randn(3, dtype=tg.float64, device=device).dtype == tg.float64
    assert tg.randn(3, dtype=tg.float16, device=device).dtype == tg.float16


@needs_torch
@pytest.mark.parametrize("name,make", [
    ("f32*py float", lambda L: L.ones(2) * 2.0),
    ("i64*py float", lambda L: L.ones(2, dtype=L.int64) * 2.5),
    ("f32+f64", lambda L: L.ones(2) + L.ones(2, dtype=L.float64)),
    ("i32+i64", lambda L: L.ones(2, dtype=L.int32) + L.ones(2, dtype=L.int64)),
    ("f16+i64", lambda L: L.ones(2, dtype=L.float16) + L.ones(2, dtype=L.int64)),
    ("f32+0d f64", lambda L: L.ones(2) + L.tensor(1.0, dtype=L.float64)),
    ("i64+0d f64", lambda L: L.ones(2, dtype=L.int64) + L.tensor(1.0, dtype=L.float64)),
    ("bool+py int", lambda L: L.ones(2, dtype=L.bool) + 1),
    ("i32*py int", lambda L: L.ones(2, dtype=L.int32) * 3),
    ("i32/py int", lambda L: L.ones(2, dtype=L.int32) / 2),
    ("i64/i64", lambda L: L.ones(2, dtype=L.int64) / L.ones(2, dtype=L.int64)),
    ("sum i32", lambda L: L.ones(2, dtype=L.int32).sum()),
    ("f16*py float", lambda L: L.ones(2, dtype=L.float16) * 2.0),
    ("exp of int", lambda L: L.exp(L.ones(2, dtype=L.int64))),
    ("np float64 scalar * f32", lambda L: np.float64(2.0) * L.ones(2)),
])
def test_type_promotion_matches_pytorch(name, make):
    theirs = str(make(torch).dtype).replace("torch.", "")
    assert str(make(tg).dtype) == theirs


def test_python_scalars_never_promote_float32():
    x = tg.ones(3)
    for y in (x * 2.0, x + 1, 1.5 - x, x / 3.0, x ** 2.0, 2.0 ** x, x.clamp(0.5, 2.0)):
        assert y.dtype == tg.float32


def test_conversions():
    x = tg.tensor([[1.5, 2.0]])
    assert x.numpy().dtype == np.float32
    assert x.tolist() == [[1.5, 2.0]]
    assert tg.tensor([4.0]).item() == 4.0 and float(tg.tensor(2.5)) == 2.5
    assert x.shape == (1, 2) and x.ndim == 2 and x.T.shape == (2, 1) and x.numel() == 2
    assert x.double().dtype == tg.float64 and x.long().dtype == tg.int64 and x.half().dtype == tg.float16
    with pytest.raises(RuntimeError, match="a Tensor with 2 elements cannot be converted"):
        x.item()
    with pytest.raises(RuntimeError, match=r"Can't call numpy\(\) on Tensor that requires grad"):
        tg.tensor([1.0], requires_grad=True).numpy()


def test_device_moves_and_grad_flow_across_devices():
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    y = x.to("fakegpu")
    assert str(y.device) == "fakegpu" and y.requires_grad
    (y * y).sum().backward()
    assert x.grad.device == "cpu" and x.grad.tolist() == [2.0, 4.0]
    assert y.cpu().device == "cpu"
    z = tg.tensor([1.0], device="fakegpu").to("fakegpu", tg.float64)
    assert z.dtype == tg.float64


def test_unknown_device_string_is_refused():
    with pytest.raises(ValueError, match=r"unknown device string 'gpu'"):
        tg.zeros(2, device="gpu")
    with pytest.raises(ValueError, match=r"unknown device string 'cuda:x'"):
        tg.tensor([1.0], device="cuda:x")


@pytest.mark.skipif(tg.cuda.is_available(), reason="checks the no-GPU error path")
def test_cuda_without_gpu_is_a_clear_error():
    assert tg.cuda.is_available() is False
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        tg.zeros(2, device="cuda")
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        tg.tensor([1.0]).cuda()


def test_device_arrays_refuse_implicit_host_conversion():
    x = tg.tensor([1.0, 2.0], device="fakegpu")
    with pytest.raises(TypeError, match="use .cpu"):
        np.asarray(x)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x.data)
    with pytest.raises(TypeError):
        np.exp(x.data)
    assert x.numpy().tolist() == [1.0, 2.0]  # the explicit copy is fine


def test_repr_is_readable():
    assert repr(tg.tensor([1.0, 2.5])) == "tensor([1. , 2.5])"
    assert repr(tg.tensor([1, 2])) == "tensor([1, 2])"
    r = repr(tg.tensor([1.0], dtype=tg.float64, requires_grad=True))
    assert r == "tensor([1.], dtype=float64, requires_grad=True)"
    assert "grad_fn=<MulBackward>" in repr(tg.tensor([1.0], requires_grad=True) * 2)
    assert "device='fakegpu'" in repr(tg.tensor([1.0], device="fakegpu"))


def test_unsupported_data_is_refused():
    with pytest.raises(TypeError, match="could not make a tensor"):
        tg.tensor(["a", "b"])
    with pytest.raises(TypeError, match="unsupported dtype"):
        tg.tensor([1.0], dtype="complex64")


def test_deepcopy_of_a_leaf_copies_values_and_grad_and_refuses_graph_nodes():
    import copy
    x = tg.ones(2, 3, requires_grad=True)
    (x * 2).sum().backward()
    c = copy.deepcopy(x)
    assert c.requires_grad and c.grad_fn is None and not np.shares_memory(c.data, x.data)
    np.testing.assert_array_equal(c.grad.numpy(), x.grad.numpy())
    assert not np.shares_memory(c.grad.data, x.grad.data)
    view = copy.deepcopy(tg.ones(2, 3)[0])   # a view without grad is a leaf: an independent copy
    view.add_(1)
    assert view.shape == (3,) and view.numpy().tolist() == [2.0, 2.0, 2.0]
    with pytest.raises(RuntimeError, match="deepcopy: only Tensors created explicitly by the user"):
        copy.deepcopy(x * 2)   # PyTorch raises the same for a non-leaf
    with pytest.raises(RuntimeError, match="made by Index"):
        copy.deepcopy(x[0])
