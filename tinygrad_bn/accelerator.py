"""`tinygrad_bn.accelerator`, as torch.accelerator: the device-agnostic way scripts pick their
device (`torch.accelerator.is_available()`, `current_accelerator()`). Our one accelerator is
CUDA through CuPy; CuPy is imported lazily, and its absence just means "no accelerator"."""
from tinygrad_bn import backend


def is_available():
    """True when an accelerator (a GPU that CuPy sees) can be used now."""
    return backend.cuda_is_available()


def current_accelerator(check_available=False):
    """The accelerator's device, device("cuda"), or None when there is none.

    As in PyTorch, the default asks only whether this installation supports one (here: CuPy
    imports, as a CUDA build of PyTorch); check_available=True also requires a usable GPU."""
    if backend._import_cupy() is None or (check_available and not is_available()):
        return None
    return backend.Device("cuda")


def device_count():
    """How many accelerator devices are visible (0 without CuPy or a GPU)."""
    return backend.cuda_device_count()
