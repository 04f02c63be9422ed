"""`tinygrad_bn.cuda.is_available()`, as in PyTorch. CuPy is imported lazily."""
from tinygrad_bn.backend import cuda_device_count as device_count  # noqa: F401
from tinygrad_bn.backend import cuda_is_available as is_available  # noqa: F401
