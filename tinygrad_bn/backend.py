"""Which array module (NumPy, CuPy or the CI stand-in) a tensor's data lives on, and moves between them.

Every op is written once against `xp`, the array module of its inputs:

    xp = array_module(device)        # numpy, cupy, or the fakegpu stand-in
    y = xp.exp(x)

Device strings follow PyTorch: "cpu", "cuda", "cuda:N". A third device, "fakegpu", is a stand-in
accelerator (NumPy underneath, but its arrays refuse implicit host conversion, as CuPy's do), so
that CI without a GPU still runs the whole device-dispatch path. CuPy is imported lazily: its
absence never breaks the CPU path.
"""
import threading

import numpy as np

from tinygrad_bn._fakegpu import FakeArray, fakegpu

_cupy = None  # the cupy module once imported; False when import failed


def _import_cupy():
    global _cupy
    if _cupy is None:
        try:
            import cupy
            _cupy = cupy
        except Exception:  # ImportError, or a CUDA library that fails to load
            _cupy = False
    return _cupy or None


def cuda_is_available():
    """True when CuPy imports and sees at least one GPU."""
    cp = _import_cupy()
    if cp is None:
        return False
    try:
        return cp.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def cuda_device_count():
    return _import_cupy().cuda.runtime.getDeviceCount() if cuda_is_available() else 0


class Device:
    """A device, like torch.device: `Device("cuda:1").type == "cuda"`, `.index == 1`."""

    __slots__ = ("type", "index")
    TYPES = ("cpu", "cuda", "fakegpu")

    def __init__(self, spec="cpu"):
        if isinstance(spec, Device):
            self.type, self.index = spec.type, spec.index
            return
        if not isinstance(spec, str):
            raise TypeError(f"device: expected a string like 'cpu' or 'cuda:0' or a Device, "
                            f"got {type(spec).__name__}")
        kind, _, idx = spec.partition(":")
        if kind not in self.TYPES or (idx and not idx.isdigit()) or (kind == "cpu" and idx not in ("", "0")):
            raise ValueError(f"device: unknown device string {spec!r}; expected one of 'cpu', "
                             f"'cuda', 'cuda:N' or 'fakegpu'")
        self.type = kind
        self.index = int(idx) if (idx and kind != "cpu") else (0 if kind != "cpu" else None)

    def __eq__(self, other):
        if isinstance(other, str):
            try:
                other = Device(other)
            except (ValueError, TypeError):
                return False
        return isinstance(other, Device) and (self.type, self.index) == (other.type, other.index)

    def __hash__(self):
        return hash((self.type, self.index))

    def __str__(self):
        return self.type if self.index is None or self.type == "fakegpu" else f"{self.type}:{self.index}"

    def __repr__(self):
        return f"device(type='{self.type}'" + ("" if self.index is None else f", index={self.index}") + ")"


CPU = Device("cpu")
_device_cache = {}


def as_device(spec):
    """Parse a device string once and memoize it (device strings are hot: every creation call)."""
    if isinstance(spec, Device):
        return spec
    if spec is None:
        return CPU
    dev = _device_cache.get(spec)
    if dev is None:
        dev = _device_cache[spec] = Device(spec)
    return dev


def array_module(device):
    """The `xp` for a device: numpy, cupy, or the fakegpu stand-in."""
    kind = device.type
    if kind == "cpu":
        return np
    if kind == "fakegpu":
        return fakegpu
    cp = _import_cupy()
    if cp is None or not cuda_is_available():
        raise RuntimeError(f"device {device}: CUDA is not available (CuPy is not installed or no "
                           "GPU is visible); install the 'cuda' extra on a machine with a GPU")
    return cp


def device_of(array):
    """The Device an array lives on."""
    if isinstance(array, np.ndarray):
        return CPU
    if isinstance(array, FakeArray):
        return as_device("fakegpu")
    cp = _import_cupy()
    if cp is not None and isinstance(array, cp.ndarray):
        return as_device(f"cuda:{array.device.id}")
    raise TypeError(f"device_of: not an array of a known backend: {type(array).__name__}")


def xp_of(array):
    """The array module of an array."""
    if isinstance(array, np.ndarray):
        return np
    if isinstance(array, FakeArray):
        return fakegpu
    return _import_cupy()


def is_array(obj):
    if isinstance(obj, (np.ndarray, FakeArray)):
        return True
    cp = _import_cupy() if _cupy is not None else None  # don't import CuPy just to say "no"
    return cp is not None and isinstance(obj, cp.ndarray)


def read_only_view(array):
    """A view of `array` that refuses writes (NumPy and fakegpu; CuPy has no read-only arrays, so
    a CuPy array comes back as is). Function.apply hands these to user-written forwards."""
    if isinstance(array, np.ndarray):
        view = array.view()
        view.flags.writeable = False
        return view
    if isinstance(array, FakeArray):
        view = array._a.view()
        view.flags.writeable = False
        return FakeArray(view)
    return array


def make_writable(array):
    """Undo read_only_view on a forward's result (a view of a read-only input) where the memory
    itself is writable; an array that was read-only to begin with stays so."""
    inner = array._a if isinstance(array, FakeArray) else array
    if isinstance(inner, np.ndarray) and not inner.flags.writeable:
        try:
            inner.flags.writeable = True
        except ValueError:
            pass  # a view of memory that was read-only before forward (np.broadcast_to)


class _CudaDeviceScope:
    """`with device_scope(dev):` makes cuda:N current while arrays are created there."""

    def __init__(self, device):
        self.ctx = _import_cupy().cuda.Device(device.index)

    def __enter__(self):
        self.ctx.__enter__()

    def __exit__(self, *exc):
        return self.ctx.__exit__(*exc)


class _NullScope:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


_NULL_SCOPE = _NullScope()


def device_scope(device):
    return _CudaDeviceScope(device) if device.type == "cuda" else _NULL_SCOPE


def to_device(array, device):
    """Copy an array to `device` (no copy when it is already there)."""
    device = as_device(device)
    src = device_of(array)
    if src == device:
        return array
    host = to_numpy(array)
    if device.type == "cpu":
        return host
    if device.type == "fakegpu":
        return FakeArray(host.copy())
    xp = array_module(device)
    with device_scope(device):
        return xp.asarray(host)


def to_numpy(array):
    """A host NumPy array (an explicit, allowed device-to-host copy)."""
    if isinstance(array, np.ndarray):
        return array
    if isinstance(array, FakeArray):
        return array.get()
    return array.get()


def as_strided(array, shape, strides):
    """A strided view (im2col and friends) on any backend."""
    xp = xp_of(array)
    return xp.lib.stride_tricks.as_strided(array, shape=shape, strides=strides)


def scatter_add(target, index, values):
    """target[index] += values, with repeated indices accumulated (np.add.at semantics)."""
    if isinstance(target, np.ndarray):
        np.add.at(target, index, values)
    elif isinstance(target, FakeArray):
        fakegpu.add.at(target, index, values)
    else:
        import cupyx
        cupyx.scatter_add(target, index, values)
    return target


# ---- random number generators: one per device, reset by manual_seed ----------------------------
_rng_lock = threading.Lock()
_generators = {}
_seed = [None]


def manual_seed(seed):
    """Seed every device's generator (initialisation, dropout, shuffling become reproducible)."""
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"manual_seed: expected a non-negative int, got {seed!r}")
    with _rng_lock:
        _seed[0] = int(seed)
        _generators.clear()


def initial_seed():
    return _seed[0]


def generator(device=CPU):
    """The seeded random Generator of a device (NumPy or CuPy Generator API)."""
    device = as_device(device)
    gen = _generators.get(device)
    if gen is None:
        with _rng_lock:
            seed = _seed[0]
            # different devices get different, still deterministic, streams
            stream_seed = None if seed is None else [seed, Device.TYPES.index(device.type), device.index or 0]
            xp = array_module(device)
            with device_scope(device):
                gen = xp.random.default_rng(stream_seed)
            _generators[device] = gen
    return gen


def get_rng_state():
    """The CPU generator's state as a JSON-able dict (for checkpoints)."""
    return {"seed": _seed[0], "cpu": generator(CPU).bit_generator.state}


def set_rng_state(state):
    manual_seed(state["seed"] if state.get("seed") is not None else 0)
    if state.get("seed") is None:
        _seed[0] = None
    generator(CPU).bit_generator.state = state["cpu"]
