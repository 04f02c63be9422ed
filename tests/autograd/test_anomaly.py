"""Anomaly mode (tinygrad_bn/autograd/engine.py): tracebacks recorded only when on, the first
non-finite gradient raises naming the node and where it was made in forward."""
import threading

import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn.autograd import engine




def test_off_by_default_and_no_tracebacks_recorded():
    assert not tg.autograd.is_anomaly_enabled()
    y = tg.ones(2, requires_grad=True) * 2
    assert y.grad_fn.creation_trace is None


def test_detect_anomaly_raises_at_the_first_non_finite_gradient_naming_node_and_forward_line(device):
    x = tg.tensor([0.0, 1.0], device=device, requires_grad=True)
    with tg.autograd.detect_anomaly():
        assert tg.autograd.is_anomaly_enabled()
        y = x.sqrt()  # THE-FORWARD-LINE
        loss = (y * tg.tensor([1.0, 1.0], device=device)).sum()
        with pytest.raises(RuntimeError) as info:
            loss.backward()
    message = str(info.value)
    assert "Function 'SqrtBackward' returned inf values in its 0th output" in message
    assert "shape [2]" in message
    assert "THE-FORWARD-LINE" in message and "test_anomaly.py" in message
    assert not tg.autograd.is_anomaly_enabled()  # restored on exit


def test_nan_is_named_as_nan():
    x = tg.tensor([0.0, 4.0], requires_grad=True)
    with tg.autograd.detect_anomaly():
        loss = (x.log() * x.log()).sum() * 0.0 + (x / x).sum()
        with pytest.raises(RuntimeError, match=r"returned (nan|inf) values"):
            loss.backward()


def test_without_anomaly_mode_the_nan_reaches_grad_silently():
    x = tg.tensor([0.0, 1.0], requires_grad=True)
    x.sqrt().sum().backward()
    assert np.isinf(x.grad.numpy()[0])


def test_set_detect_anomaly_is_a_switch_and_a_context_manager():
    tg.autograd.set_detect_anomaly(True)
    try:
        assert tg.autograd.is_anomaly_enabled()
        y = tg.ones(2, requires_grad=True) * 2
        assert y.grad_fn.creation_trace is not None
        with tg.autograd.set_detect_anomaly(False):
            assert not tg.autograd.is_anomaly_enabled()
        assert tg.autograd.is_anomaly_enabled()
    finally:
        tg.autograd.set_detect_anomaly(False)
    assert not tg.autograd.is_anomaly_enabled()
    with pytest.raises(TypeError, match=r"set_detect_anomaly: mode must be a bool, got 'yes'"):
        tg.autograd.set_detect_anomaly("yes")


def test_a_node_made_before_anomaly_mode_says_its_traceback_was_not_recorded():
    x = tg.tensor([0.0], requires_grad=True)
    loss = x.sqrt().sum()
    with tg.autograd.detect_anomaly():
        with pytest.raises(RuntimeError, match=r"not recorded: the node was made while anomaly mode was off"):
            loss.backward()


def test_check_nan_false_records_but_does_not_check():
    x = tg.tensor([0.0], requires_grad=True)
    with tg.autograd.detect_anomaly(check_nan=False):
        x.sqrt().sum().backward()
    assert np.isinf(x.grad.numpy()[0])


def test_decorator_form_and_finite_graphs_unchanged():
    @tg.autograd.detect_anomaly()
    def step(x):
        assert tg.autograd.is_anomaly_enabled()
        loss = (x * x).sum()
        loss.backward()
        return loss
    x = tg.tensor([1.0, 2.0], requires_grad=True)
    step(x)
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    assert not engine.anomaly_mode_enabled()


def test_create_graph_gradients_are_checked_too():
    x = tg.tensor([0.0, 1.0], requires_grad=True)
    with tg.autograd.detect_anomaly():
        (g,) = tg.autograd.grad((x ** 1.5).sum(), x, create_graph=True)  # 1.5 x^0.5: finite
        with pytest.raises(RuntimeError, match=r"returned inf values"):
            g.sum().backward()  # 0.75 x^-0.5 at 0: inf


def test_per_thread():
    seen = []
    with tg.autograd.detect_anomaly():
        t = threading.Thread(target=lambda: seen.append(tg.autograd.is_anomaly_enabled()))
        t.start()
        t.join()
    assert seen == [False]
