"""Grad mode: the one global (thread-local) switch. Inside `no_grad()` ops record no graph."""
import functools
import threading

class _GradState(threading.local):
    enabled = True  # every thread starts with grad mode on


_state = _GradState()


def is_grad_enabled():
    return _state.enabled


def _set_enabled(mode):
    _state.enabled = bool(mode)


class set_grad_enabled:
    """Context manager and decorator that sets grad mode to `mode` (restored on exit)."""

    def __init__(self, mode=True):
        self.mode = bool(mode)
        self.prev = []

    def __enter__(self):
        self.prev.append(is_grad_enabled())
        _set_enabled(self.mode)

    def __exit__(self, *exc):
        _set_enabled(self.prev.pop())
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with type(self)() if type(self) is not set_grad_enabled else set_grad_enabled(self.mode):
                return fn(*args, **kwargs)
        return wrapper


class no_grad(set_grad_enabled):
    """`with no_grad():` or `@no_grad()`: ops inside record no graph (evaluation, optimizer steps)."""

    def __init__(self):
        super().__init__(False)


class enable_grad(set_grad_enabled):
    """`with enable_grad():` turns graph recording back on inside a no_grad region."""

    def __init__(self):
        super().__init__(True)


class inference_mode(set_grad_enabled):
    """`with inference_mode():` or `@inference_mode()`: like no_grad (no graph is recorded).

    PyTorch's inference tensors are a speed-up on top of no_grad; here they are plain tensors,
    so inference_mode(False) is enable_grad. No second mode flag: it is grad mode."""

    def __init__(self, mode=True):
        if not isinstance(mode, bool):
            raise TypeError(f"inference_mode: mode must be a bool, got {mode!r}")
        super().__init__(not mode)
        self.inference = mode

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with inference_mode(self.inference):
                return fn(*args, **kwargs)
        return wrapper
