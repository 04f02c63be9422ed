"""tinygrad_bn.accelerator, as torch.accelerator: with no usable GPU there is no accelerator
(the CPU CI), and with CuPy and a GPU it is device("cuda")."""
import pytest

import tinygrad_bn as tg
from tinygrad_bn import backend
from tests.helpers import needs_torch, torch


def test_matches_cuda_availability():
    assert tg.accelerator.is_available() == tg.cuda.is_available()
    assert tg.accelerator.device_count() == tg.cuda.device_count()
    current = tg.accelerator.current_accelerator(check_available=True)
    if tg.cuda.is_available():
        assert current == tg.device("cuda")
    else:
        assert current is None


def test_without_cupy_there_is_none(monkeypatch):
    monkeypatch.setattr(backend, "_import_cupy", lambda: None)
    assert tg.accelerator.is_available() is False
    assert tg.accelerator.device_count() == 0
    assert tg.accelerator.current_accelerator() is None
    assert tg.accelerator.current_accelerator(check_available=True) is None


def test_cupy_without_a_gpu_is_a_build_that_supports_one(monkeypatch):
    """Like a CUDA build of PyTorch on a machine without a GPU: current_accelerator() names
    cuda, current_accelerator(check_available=True) and is_available() say there is none."""
    monkeypatch.setattr(backend, "_import_cupy", lambda: object())
    monkeypatch.setattr(backend, "cuda_is_available", lambda: False)
    assert tg.accelerator.current_accelerator() == tg.device("cuda")
    assert tg.accelerator.current_accelerator(check_available=True) is None
    assert tg.accelerator.is_available() is False


@needs_torch
def test_same_answer_as_the_oracle_on_this_cpu_machine():
    if tg.cuda.is_available() or torch.accelerator.is_available():
        pytest.skip("compares the no-accelerator answers; this machine has one")
    assert tg.accelerator.is_available() == torch.accelerator.is_available()
    assert torch.accelerator.current_accelerator(check_available=True) is None
    assert tg.accelerator.current_accelerator(check_available=True) is None
