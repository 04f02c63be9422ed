"""Tensor: an array (`.data`), its gradient (`.grad`) and the node that made it (`.grad_fn`).

`.data` is the raw NumPy/CuPy array, as in Chainer. Every operator on a Tensor calls a function of
`tinygrad_bn.ops`, which applies a Function (one graph node); this file only routes to them.
"""
import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd import function as function_module
from tinygrad_bn.autograd import views
from tinygrad_bn.autograd.grad_mode import is_grad_enabled, no_grad


class Tensor:
    """A multi-dimensional array with reverse-mode autograd.

    Tensor(data, dtype=None, device=None, requires_grad=False): data may be a nested list, a scalar,
    a NumPy or CuPy array or another Tensor. Floats default to float32, ints to int64.
    """

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "_output_index", "_version",
                 "_hooks", "name", "_view", "_views", "__weakref__")
    __array_priority__ = 1000  # make `numpy_scalar * tensor` call Tensor.__rmul__

    def __init__(self, data, dtype=None, device=None, requires_grad=False):
        dtype = dtypes.to_dtype(dtype, "tensor")
        if isinstance(data, Tensor):
            data = data.data
        if backend.is_array(data):
            src = backend.device_of(data)
            dev = src if device is None else backend.as_device(device)
            array = backend.to_device(data, dev)
            if dtype is not None and array.dtype != dtype:
                array = array.astype(dtype)
        else:
            dev = backend.as_device(device)
            host = _host_array(data, dtype)
            array = host if dev.type == "cpu" else backend.to_device(host, dev)
        if array.dtype not in dtypes.SUPPORTED:
            raise TypeError(f"tensor: unsupported dtype {array.dtype}")
        self._init(array, None, 0)
        if requires_grad:
            self.requires_grad_(True)

    def _init(self, array, grad_fn, output_index):
        if type(array) is not np.ndarray and isinstance(array, np.generic):
            array = np.asarray(array)  # NumPy returns scalars from 0-d results; keep arrays
        self.data = array
        self.grad_fn = grad_fn
        self.requires_grad = grad_fn is not None
        self._output_index = output_index
        self.grad = None
        self._version = [0]   # a list, so views made by detach() share one counter
        self._hooks = ()      # a list once a hook is registered
        self.name = None
        self._view = None     # a ViewInfo when this tensor is a view of another (autograd/views.py)
        self._views = None    # a WeakSet of this tensor's live views made under grad mode

    @staticmethod
    def _make(array, grad_fn=None, output_index=0):
        """Wrap an array in a plain Tensor without copying or checking (for ops and the engine)."""
        t = _new_tensor(Tensor)
        t._init(array, grad_fn, output_index)
        return t

    # ---- properties --------------------------------------------------------------------------
    @property
    def shape(self):
        return tuple(self.data.shape)

    @property
    def ndim(self):
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def device(self):
        return backend.device_of(self.data)

    @property
    def is_leaf(self):
        return self.grad_fn is None

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    @property
    def xp(self):
        """The array module of this tensor's data (numpy, cupy or fakegpu)."""
        return backend.xp_of(self.data)

    def size(self, dim=None):
        return self.shape if dim is None else self.shape[_wrap_dim(dim, self.ndim, "size")]

    def numel(self):
        return int(self.data.size)

    def dim(self):
        return self.ndim

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.shape[0]

    # ---- conversions -------------------------------------------------------------------------
    def numpy(self):
        """A host NumPy array. Refuses a tensor that requires grad, as PyTorch does."""
        if self.requires_grad:
            raise RuntimeError("Can't call numpy() on Tensor that requires grad. "
                               "Use tensor.detach().numpy() instead.")
        return backend.to_numpy(self.data)

    def item(self):
        if self.data.size != 1:
            raise RuntimeError(f"item: a Tensor with {self.data.size} elements cannot be converted "
                               f"to a Python scalar")
        return backend.to_numpy(self.data).reshape(()).item()

    def tolist(self):
        return backend.to_numpy(self.data).tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __bool__(self):
        if self.data.size != 1:
            raise RuntimeError(f"Boolean value of Tensor with {self.data.size} values is ambiguous")
        return bool(self.item())

    def __index__(self):
        if self.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __array__(self, dtype=None, copy=None):
        # np.asarray(cpu_tensor) works; a device tensor refuses, like CuPy
        array = self.data
        if not isinstance(array, np.ndarray):
            raise TypeError(f"can't convert {self.device} tensor to numpy; use .cpu() first")
        return array if dtype is None else array.astype(dtype)

    def to(self, *args, dtype=None, device=None):
        """to(device), to(dtype) or to(device, dtype): differentiable, no copy when nothing changes."""
        for a in args:
            if isinstance(a, (str, backend.Device)):
                device = a
            else:
                dtype = a
        from tinygrad_bn.ops import elementwise
        out = self
        if dtype is not None:
            out = elementwise.cast(out, dtypes.to_dtype(dtype, "to"))
        if device is not None:
            out = shape_ops.to_device(out, backend.as_device(device))
        return out

    def cpu(self):
        return self.to("cpu")

    def cuda(self, device=None):
        return self.to("cuda" if device is None else f"cuda:{int(device)}")

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    def half(self):
        return self.to(dtypes.float16)

    def long(self):
        return self.to(dtypes.int64)

    def int(self):
        return self.to(dtypes.int32)

    def bool(self):
        return self.to(dtypes.bool_)

    def type(self, dtype):
        return self.to(dtype)

    def __deepcopy__(self, memo):
        """copy.deepcopy (of a model, say): a new leaf with a copy of the values (and of .grad).
        Only leaves, as in PyTorch: copying a graph node would copy a graph that is not the copy's."""
        if self.grad_fn is not None:
            raise RuntimeError(f"deepcopy: only Tensors created explicitly by the user (graph leaves) can be "
                               f"deep-copied, as in PyTorch; this one was made by {type(self.grad_fn).__name__}; "
                               f"copy t.detach() instead")
        copied = Tensor(self.data.copy(), requires_grad=self.requires_grad)
        copied.grad = None if self.grad is None else self.grad.__deepcopy__(memo)
        copied.name = self.name
        memo[id(self)] = copied
        return copied

    def __repr__(self):
        body = np.array2string(backend.to_numpy(self.data), separator=", ", precision=4,
                               threshold=200, edgeitems=3, prefix="tensor(")
        extras = []
        if self.device.type != "cpu":
            extras.append(f"device='{self.device}'")
        if self.dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_) or self.data.size == 0:
            extras.append(f"dtype={self.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # ---- autograd ----------------------------------------------------------------------------
    def requires_grad_(self, requires_grad=True):
        if self.grad_fn is not None and not requires_grad:
            raise RuntimeError("requires_grad_: you can only change requires_grad flags of leaf "
                               "variables; use detach() to get a tensor without history")
        if requires_grad and not dtypes.is_floating(self.dtype):
            raise RuntimeError(f"Only Tensors of floating point dtype can require gradients "
                               f"(got {self.dtype})")
        self.requires_grad = bool(requires_grad) or self.grad_fn is not None
        return self

    def detach(self):
        """A tensor sharing this data (and its version counter) but cut from the graph."""
        t = Tensor._make(self.data)
        t._version = self._version
        return t

    def detach_(self):
        if self._view is not None:  # its history is its base's: PyTorch refuses too
            raise RuntimeError("detach_: Can't detach views in-place. Use detach() instead.")
        self.grad_fn = None
        self.requires_grad = False
        return self

    def retain_grad(self):
        """Keep `.grad` for this non-leaf tensor after backward."""
        if not self.requires_grad:
            raise RuntimeError("can't retain_grad on Tensor that has requires_grad=False")
        if self.grad_fn is not None:
            from tinygrad_bn.autograd.engine import retain_grad
            retain_grad(self)

    def register_hook(self, hook):
        """hook(grad) -> new grad or None, called when this tensor's gradient is computed."""
        if not self.requires_grad:
            raise RuntimeError("cannot register a hook on a tensor that doesn't require gradient")
        from tinygrad_bn.autograd.engine import register_tensor_hook
        return register_tensor_hook(self, hook)

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate d(self)/d(leaf) into every leaf's `.grad`. See autograd.backward."""
        from tinygrad_bn import autograd
        autograd.backward(self, gradient, retain_graph=retain_graph, create_graph=create_graph,
                          inputs=inputs)

    # ---- in-place modification (bumps the version counter) -----------------------------------
    def _inplace(self, result, opname, result_is_saved=False):
        """Write `result` (a Tensor computed from self) into self's own memory, and rewire the graph.

        Under grad mode, PyTorch's rules: no leaf that requires grad, no view of one, no recorded
        write into a view made under no_grad. A recorded write makes self (or, for a view, its
        base) the output of the op; see autograd/views.py for how a view's base is rebased.
        `result_is_saved`: the op's backward reads its output (relu_), so a later write into self
        must fail its version check, as in PyTorch."""
        recording = is_grad_enabled() and result.grad_fn is not None
        view = self._view
        if is_grad_enabled():
            if self.grad_fn is not None and self._output_index in self.grad_fn._view_outputs:
                raise RuntimeError(f"{opname}: Output {self._output_index} of {type(self.grad_fn).__name__} is a "
                                   f"view and is being modified inplace. This view was created inside a custom Function "
                                   f"(or because an input was returned as-is) and the autograd logic to handle "
                                   f"view+inplace would override the custom backward associated with the custom "
                                   f"Function, leading to incorrect gradients. This behavior is forbidden. You "
                                   f"can fix this by cloning the output of the custom Function.")
            if view is None:
                if self.grad_fn is None and self.requires_grad:
                    raise RuntimeError(f"{opname}: a leaf Variable that requires grad is being used "
                                       f"in an in-place operation.")
            else:
                if view.base.grad_fn is None and view.base.requires_grad:
                    raise RuntimeError(f"{opname}: a view of a leaf Variable that requires grad is "
                                       f"being used in an in-place operation.")
                if not view.grad_mode and (recording or view.base.requires_grad):
                    raise RuntimeError(
                        f"{opname}: A view was created in no_grad mode and is being modified inplace "
                        f"with grad mode enabled. Given that this use case is ambiguous and "
                        f"error-prone, it is forbidden. You can clarify your code by moving both the "
                        f"view and the inplace either both inside the no_grad block (if you don't "
                        f"want the inplace to be tracked) or both outside (if you want the inplace "
                        f"to be tracked).")
        if tuple(result.shape) != self.shape:
            raise RuntimeError(f"{opname}: output with shape {list(self.shape)} doesn't match the "
                               f"broadcast shape {list(result.shape)}")
        if result.dtype != self.dtype and not (dtypes.category(result.dtype) <= dtypes.category(self.dtype)):
            raise RuntimeError(f"{opname}: result type {result.dtype} can't be cast to the desired "
                               f"output type {self.dtype}")
        if view is not None:
            _check_no_overlap(self, opname)
        if recording:
            _keep_saved_self(result.grad_fn, self.data)
        if view is not None and not getattr(self.data.flags, "writeable", True):
            # a view through an expand (y.expand(3, 3)[0]) is a read-only NumPy view of writable
            # memory: write at the base's element numbers that the view sees instead
            base = view.base.data
            base[self.xp.unravel_index(views.seen_positions(base, view.steps), base.shape)] = result.data
        else:
            self.data[...] = result.data
        self._version[0] += 1
        if recording:
            views.rebase_history(self, result)
            if result_is_saved:  # the node's saved output is self now: track self's version
                node = result.grad_fn
                node._saved_versions = list(node._saved_versions) + \
                    [("result", self._version, self._version[0])]
        return self

    def add_(self, other, alpha=1):
        return self._inplace(self + (other * alpha if alpha != 1 else other), "add_")

    def sub_(self, other, alpha=1):
        return self._inplace(self - (other * alpha if alpha != 1 else other), "sub_")

    def mul_(self, other):
        return self._inplace(self * other, "mul_")

    def div_(self, other):
        return self._inplace(self / other, "div_")

    def clamp_(self, min=None, max=None):
        return self._inplace(self.clamp(min, max), "clamp_")

    def relu_(self):
        return self._inplace(self.relu(), "relu_", result_is_saved=True)

    def copy_(self, src):
        src = src if isinstance(src, Tensor) else Tensor(src)
        if src.device != self.device:
            src = src.to(self.device)
        value = shape_ops.expand(src.to(self.dtype), self.shape)
        return self._inplace(Overwrite.apply(self, value), "copy_")

    def fill_(self, value):
        """Every element becomes `value` (a number or a 0-d tensor, whose gradient is the sum)."""
        if isinstance(value, Tensor):
            if value.ndim != 0:
                raise RuntimeError(f"fill_ only supports 0-dimension value tensor but got tensor "
                                   f"with {value.ndim} dimensions.")
            return self._inplace(Overwrite.apply(self, shape_ops.expand(value.to(self.dtype), self.shape)),
                                 "fill_")
        constant = Tensor._make(self.xp.full(self.shape, value, dtype=self.dtype))
        return self._inplace(Overwrite.apply(self, constant), "fill_")

    def zero_(self):
        return self.fill_(0)

    __iadd__ = add_
    __isub__ = sub_
    __imul__ = mul_
    __itruediv__ = div_

    def __setitem__(self, key, value):
        shape_ops.setitem(self, key, value)

    # ---- operators (each calls one function of tinygrad_bn.ops) -------------------------------
    def __add__(self, other):
        return elementwise.add(self, other)

    def __radd__(self, other):
        return elementwise.add(other, self)

    def __sub__(self, other):
        return elementwise.sub(self, other)

    def __rsub__(self, other):
        return elementwise.sub(other, self)

    def __mul__(self, other):
        return elementwise.mul(self, other)

    def __rmul__(self, other):
        return elementwise.mul(other, self)

    def __truediv__(self, other):
        return elementwise.div(self, other)

    def __rtruediv__(self, other):
        return elementwise.div(other, self)

    def __pow__(self, exponent):
        return elementwise.pow(self, exponent)

    def __rpow__(self, base):
        return elementwise.pow(base, self)

    def __neg__(self):
        return elementwise.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return elementwise.abs(self)

    def __matmul__(self, other):
        return matmul.matmul(self, other)

    def __rmatmul__(self, other):
        return matmul.matmul(other, self)

    def __eq__(self, other):
        return elementwise.eq(self, other)

    def __ne__(self, other):
        return elementwise.ne(self, other)

    def __lt__(self, other):
        return elementwise.lt(self, other)

    def __le__(self, other):
        return elementwise.le(self, other)

    def __gt__(self, other):
        return elementwise.gt(self, other)

    def __ge__(self, other):
        return elementwise.ge(self, other)

    def __invert__(self):
        return elementwise.logical_not(self)

    def __and__(self, other):
        return elementwise.logical_and(self, other)

    def __or__(self, other):
        return elementwise.logical_or(self, other)

    __hash__ = object.__hash__

    def __getitem__(self, key):
        return shape_ops.index(self, key)

    # elementwise math
    def exp(self): return elementwise.exp(self)
    def log(self): return elementwise.log(self)
    def sqrt(self): return elementwise.sqrt(self)
    def rsqrt(self): return elementwise.rsqrt(self)
    def abs(self): return elementwise.abs(self)
    def sign(self): return elementwise.sign(self)
    def tanh(self): return elementwise.tanh(self)
    def sigmoid(self): return elementwise.sigmoid(self)
    def relu(self): return elementwise.relu(self)
    def neg(self): return elementwise.neg(self)
    def square(self): return elementwise.mul(self, self)
    def pow(self, exponent): return elementwise.pow(self, exponent)
    def maximum(self, other): return elementwise.maximum(self, other)
    def minimum(self, other): return elementwise.minimum(self, other)
    def clamp(self, min=None, max=None): return elementwise.clamp(self, min, max)
    clip = clamp
    def where(self, condition, other): return elementwise.where(condition, self, other)

    # reductions
    def sum(self, dim=None, keepdim=False): return reduce.sum(self, dim, keepdim)
    def mean(self, dim=None, keepdim=False): return reduce.mean(self, dim, keepdim)
    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return reduce.var(self, dim, unbiased, keepdim, correction=correction)
    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        return reduce.std(self, dim, unbiased, keepdim, correction=correction)
    def max(self, dim=None, keepdim=False): return reduce.max(self, dim, keepdim)
    def min(self, dim=None, keepdim=False): return reduce.min(self, dim, keepdim)
    def amax(self, dim=None, keepdim=False): return reduce.amax(self, dim, keepdim)
    def amin(self, dim=None, keepdim=False): return reduce.amin(self, dim, keepdim)
    def argmax(self, dim=None, keepdim=False): return reduce.argmax(self, dim, keepdim)
    def argmin(self, dim=None, keepdim=False): return reduce.argmin(self, dim, keepdim)
    def logsumexp(self, dim, keepdim=False): return reduce.logsumexp(self, dim, keepdim)

    # shape
    def reshape(self, *shape): return shape_ops.reshape(self, *shape)
    def view(self, *shape): return shape_ops.reshape(self, *shape)
    def flatten(self, start_dim=0, end_dim=-1): return shape_ops.flatten(self, start_dim, end_dim)
    def permute(self, *dims): return shape_ops.permute(self, *dims)
    def transpose(self, dim0, dim1): return shape_ops.transpose(self, dim0, dim1)
    def expand(self, *sizes): return shape_ops.expand(self, *sizes)
    def expand_as(self, other): return shape_ops.expand(self, other.shape)
    def squeeze(self, dim=None): return shape_ops.squeeze(self, dim)
    def unsqueeze(self, dim): return shape_ops.unsqueeze(self, dim)
    def split(self, split_size_or_sections, dim=0): return shape_ops.split(self, split_size_or_sections, dim)
    def chunk(self, chunks, dim=0): return shape_ops.chunk(self, chunks, dim)
    def contiguous(self):  # PyTorch: self when already contiguous, else a copy (not a view)
        return self if self.data.flags.c_contiguous else elementwise.clone(self)
    def clone(self): return elementwise.clone(self)
    def matmul(self, other): return matmul.matmul(self, other)

    # ---- PyTorch's method forms (issue 15): thin routes to the functions of tinygrad_bn.ops ----
    def add(self, other, *, alpha=1): return elementwise.add(self, _scaled(other, alpha, "add"))
    def sub(self, other, *, alpha=1): return elementwise.sub(self, _scaled(other, alpha, "sub"))
    def mul(self, other): return elementwise.mul(self, other)
    def div(self, other, *, rounding_mode=None):
        if rounding_mode is None:
            return elementwise.div(self, other)
        return _rounded_div(self, other, rounding_mode)
    def eq(self, other): return elementwise.eq(self, other)
    def ne(self, other): return elementwise.ne(self, other)
    def gt(self, other): return elementwise.gt(self, other)
    def ge(self, other): return elementwise.ge(self, other)
    def lt(self, other): return elementwise.lt(self, other)
    def le(self, other): return elementwise.le(self, other)
    def mm(self, mat2): return linalg.mm(self, mat2)
    def bmm(self, mat2): return linalg.bmm(self, mat2)
    def outer(self, vec2): return linalg.outer(self, vec2)
    def norm(self, p="fro", dim=None, keepdim=False, dtype=None): return linalg.norm(self, p, dim, keepdim, dtype)
    def softmax(self, dim, dtype=None): return activation.softmax(self, dim, dtype)
    def log_softmax(self, dim, dtype=None): return activation.log_softmax(self, dim, dtype)
    def masked_fill(self, mask, value): return indexing.masked_fill(self, mask, value)
    def masked_fill_(self, mask, value): return self._inplace(indexing.masked_fill(self, mask, value), "masked_fill_")
    def gather(self, dim, index, *, sparse_grad=False): return indexing.gather(self, dim, index)
    def scatter(self, dim, index, src=None, *, value=None, reduce=None):
        return indexing.scatter(self, dim, index, src, value=value, reduce=reduce)
    def scatter_add(self, dim, index, src): return indexing.scatter_add(self, dim, index, src)
    def index_select(self, dim, index): return indexing.index_select(self, dim, index)
    def topk(self, k, dim=-1, largest=True, sorted=True): return sorting.topk(self, k, dim, largest, sorted)
    def sort(self, dim=-1, descending=False, stable=False): return sorting.sort(self, dim, descending, stable)
    def cumsum(self, dim, dtype=None): return cumulative.cumsum(self, dim, dtype)
    def cumprod(self, dim, dtype=None): return cumulative.cumprod(self, dim, dtype)
    def prod(self, dim=None, keepdim=False, dtype=None): return cumulative.prod(self, dim, keepdim, dtype)
    def flip(self, *dims, **kwargs):  # x.flip(0, 1), x.flip([0, 1]) or x.flip(dims=(0, 1))
        if "dims" in kwargs:
            dims = (kwargs.pop("dims"),)
        if kwargs:
            raise TypeError(f"flip() got unexpected keyword arguments {sorted(kwargs)}")
        return layout.flip(self, dims[0] if len(dims) == 1 else dims)
    def roll(self, shifts, dims=None): return layout.roll(self, shifts, dims)
    def repeat(self, *sizes): return layout.repeat(self, *sizes)
    def tril(self, diagonal=0): return layout.tril(self, diagonal)
    def triu(self, diagonal=0): return layout.triu(self, diagonal)
    def diag(self, diagonal=0): return layout.diag(self, diagonal)
    def t(self): return layout.t(self)
    def unbind(self, dim=0): return layout.unbind(self, dim)
    def unflatten(self, dim, sizes): return layout.unflatten(self, dim, sizes)
    def narrow(self, dim, start, length): return shape_ops.narrow(self, dim, start, length)
    def view_as(self, other): return shape_ops.reshape(self, _other(other, "view_as").shape)
    def type_as(self, other): return self.to(_other(other, "type_as").dtype)
    def floor(self): return pointwise.floor(self)
    def ceil(self): return pointwise.ceil(self)
    def round(self, decimals=0): return pointwise.round(self, decimals)
    def trunc(self): return pointwise.trunc(self)
    def sin(self): return pointwise.sin(self)
    def cos(self): return pointwise.cos(self)
    def isnan(self): return pointwise.isnan(self)
    def isinf(self): return pointwise.isinf(self)

    def all(self, dim=None, keepdim=False):
        """True where every element (along dim) is non-zero; a bool tensor, no gradient."""
        from tinygrad_bn.ops._helpers import normalize_dims
        dims = normalize_dims(dim, self.ndim, "all")
        return Tensor._make(self.data.astype(bool).all(axis=dims, keepdims=keepdim))

    def any(self, dim=None, keepdim=False):
        """True where some element (along dim) is non-zero; a bool tensor, no gradient."""
        from tinygrad_bn.ops._helpers import normalize_dims
        dims = normalize_dims(dim, self.ndim, "any")
        return Tensor._make(self.data.astype(bool).any(axis=dims, keepdims=keepdim))

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return allclose(self, other, rtol, atol, equal_nan)

    # new tensors like this one: its dtype and device unless given
    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        return self.new_full(_size_arg(size), 0, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self.new_full(_size_arg(size), 1, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_full(self, size, fill_value, *, dtype=None, device=None, requires_grad=False):
        from tinygrad_bn import creation
        return creation.full(tuple(size), fill_value, dtype=dtype or self.dtype,
                             device=device or self.device, requires_grad=requires_grad)

    def new_tensor(self, data, *, dtype=None, device=None, requires_grad=False):
        from tinygrad_bn import creation
        return creation.tensor(data, dtype=dtype or self.dtype, device=device or self.device,
                               requires_grad=requires_grad)

    # in-place random fills (the device's seeded generator); PyTorch's rules for leaves apply
    def normal_(self, mean=0.0, std=1.0):
        if std < 0:
            raise RuntimeError(f"normal_ expects std >= 0.0, but found std {std}")
        gen = backend.generator(self.device)
        fresh = gen.standard_normal(self.shape).astype(self.dtype, copy=False) * std + mean
        return self._inplace(Overwrite.apply(self, Tensor._make(fresh.astype(self.dtype, copy=False))), "normal_")

    def uniform_(self, a=0.0, b=1.0, **kwargs):
        a, b = kwargs.pop("from", a), kwargs.pop("to", b)
        if kwargs:
            raise TypeError(f"uniform_: unexpected keyword arguments {sorted(kwargs)}")
        if a > b:
            raise RuntimeError(f"uniform_ expects to return a [from, to) range, but found from={a} > to={b}")
        fresh = backend.generator(self.device).uniform(a, b, self.shape).astype(self.dtype, copy=False)
        return self._inplace(Overwrite.apply(self, Tensor._make(fresh)), "uniform_")


def _scaled(other, alpha, opname):
    """other * alpha for add/sub's alpha (PyTorch: an integer tensor takes no float alpha)."""
    if alpha == 1:
        return other
    if isinstance(alpha, float) and isinstance(other, Tensor) and not dtypes.is_floating(other.dtype):
        raise RuntimeError(f"{opname}: For integral input tensors, argument alpha must not be a "
                           f"floating point number (got alpha={alpha})")
    return other * alpha


def _rounded_div(a, b, mode):
    """div(rounding_mode='trunc' | 'floor'): the quotient rounded; integers stay integers."""
    if mode not in ("trunc", "floor"):
        raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but "
                         f"found {mode!r}")
    from tinygrad_bn.ops._helpers import binary_operands
    a, b = binary_operands(a, b, "div")
    if dtypes.is_floating(a.dtype):
        q = elementwise.div(a, b)
        return pointwise.trunc(q) if mode == "trunc" else pointwise.floor(q)
    if mode == "floor":
        return Tensor._make(a.xp.floor_divide(a.data, b.data))
    return Tensor._make((a.xp.trunc(a.data / b.data)).astype(a.dtype))


def _other(other, opname):
    if not isinstance(other, Tensor):
        raise TypeError(f"{opname}(): argument 'other' must be Tensor, not {type(other).__name__}")
    return other


def _size_arg(size):
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def allclose(input, other, rtol=1e-05, atol=1e-08, equal_nan=False):
    """|input - other| <= atol + rtol |other| everywhere (broadcasting): a Python bool."""
    if not isinstance(input, Tensor) or not isinstance(other, Tensor):
        raise TypeError(f"allclose: expected two Tensors, got {type(input).__name__} and "
                        f"{type(other).__name__}")
    if input.dtype != other.dtype:
        raise RuntimeError(f"allclose: expected both tensors to have the same dtype, got "
                           f"{input.dtype} and {other.dtype}")
    if input.device != other.device:
        raise RuntimeError(f"allclose: expected both tensors on one device, got {input.device} "
                           f"and {other.device}")
    from tinygrad_bn.ops._helpers import broadcast_shape
    broadcast_shape(input.shape, other.shape, "allclose")
    return bool(input.xp.allclose(input.data, other.data, rtol=rtol, atol=atol, equal_nan=equal_nan))


def _host_array(data, dtype):
    """A NumPy array from Python data, with PyTorch's default dtypes (float32, int64, bool)."""
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError) as e:
        raise TypeError(f"tensor: could not make a tensor from {type(data).__name__}: {e}") from None
    if dtype is None:
        if array.dtype.kind == "f" and not isinstance(data, np.ndarray) and not isinstance(data, np.floating):
            array = array.astype(dtypes.get_default_dtype())
        elif array.dtype.kind in "iu" and not isinstance(data, (np.ndarray, np.integer)):
            array = array.astype(dtypes.int64)
        elif array.dtype.kind not in "fiub":
            raise TypeError(f"tensor: could not make a tensor of element type {array.dtype} "
                            f"from {type(data).__name__}")
    return array


class Overwrite(function_module.Function):
    """y = v: the old values of x are gone (copy_, fill_, zero_).   dx = 0,  dv = g."""

    def forward(self, x, v):
        return v

    def backward(self, g):
        return Tensor._make(self.xp.zeros(g.shape, dtype=g.dtype)), g


def _check_no_overlap(tensor, opname):
    """An expanded view has elements that share memory: a write would be ill-defined (PyTorch)."""
    if tensor.data.size > 1 and any(stride == 0 and n > 1 for stride, n in zip(tensor.data.strides, tensor.data.shape)):
        raise RuntimeError(f"{opname}: unsupported operation: more than one element of the "
                           f"written-to tensor refers to a single memory location. Please clone() "
                           f"the tensor before performing the operation.")


def _keep_saved_self(node, self_array):
    """The in-place op's node saved self's array as an input (mul_ needs the old self for the
    other operand's gradient); the write is about to overwrite it, so the node keeps a copy of
    the old values, as PyTorch keeps `original_self`. Where self is also the other operand
    (y.mul_(y)), that saved operand is the modified tensor: no copy, the version check fires."""
    saved = node._saved
    if not saved:
        return
    names = [name for name, array in saved.items()
             if array is self_array and node._saved_source.get(name, ("",))[0] == "input"]
    if len(names) == 1:
        saved[names[0]] = self_array.copy()
        node._saved_versions = [v for v in node._saved_versions if v[0] != names[0]]


def _wrap_dim(dim, ndim, opname):
    if isinstance(dim, Tensor) and dim.ndim == 0 and dim.dtype.kind in "iu":
        dim = dim.__index__()  # a 0-d integer Tensor is an index, as in PyTorch
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{opname}: dim must be an int, got {type(dim).__name__}")
    n = max(ndim, 1)
    if not -n <= dim < n:
        raise IndexError(f"{opname}: Dimension out of range (expected to be in range of "
                         f"[{-n}, {n - 1}], but got {dim})")
    return dim % n


_new_tensor = object.__new__
function_module.Tensor = Tensor

# The ops import Tensor; importing them here, after the class exists, closes the loop.
from tinygrad_bn.ops import elementwise, matmul, reduce  # noqa: E402
from tinygrad_bn.ops import shape as shape_ops  # noqa: E402
from tinygrad_bn.ops import activation, cumulative, indexing, layout, linalg, pointwise, sorting  # noqa: E402
