"""Function: one node of the computation graph, and the context of one call.

A subclass writes two methods:

    class Mul(Function):
        def forward(self, a, b):                     # raw arrays of one array module (xp)
            self.save_for_backward(a=a, b=b)         # only what backward needs, by name
            return a * b
        def backward(self, grad):                    # grad is a Tensor
            a, b = self.saved("a", "b")              # Tensors, still connected to the graph
            return grad * b, grad * a                # one gradient per input (None: not needed)

`Mul.apply(x, y)` runs forward on the raw arrays, wraps the result in a Tensor, and - when grad
mode is on and some input requires grad - makes this instance the result's `grad_fn`, with one
edge per input pointing at the node that produced that input (or at the leaf tensor itself).

Because backward is written with Tensor ops, running it with grad mode on (create_graph=True)
records a graph of the gradient computation itself: double backward comes for free.
"""
import functools
import inspect
import itertools
import linecache
import re
import traceback

import numpy as np

from tinygrad_bn import backend
from tinygrad_bn.autograd import grad_mode

_sequence = itertools.count()
Tensor = None  # tinygrad_bn.tensor.Tensor, bound by tensor.py once it is defined (import cycle)

FREED_MESSAGE = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you call "
    ".backward() or autograd.grad(). Specify retain_graph=True if you need to backward through the "
    "graph a second time or if you need to access saved tensors after calling backward. (node: {})")


class Function:
    """Base class of every differentiable op. See the module docstring for the contract."""

    #: shown in graph drawings; defaults to "<ClassName>Backward" (MulBackward, ConvolutionBackward)
    node_name = None

    # Per-node state. Class-level defaults keep an unrecorded call (no_grad, inference) cheap:
    # `apply` only fills in what a recorded node needs.
    seq = -1                    # creation order of recorded nodes, for drawing the forward graph
    next_edges = ()             # per input: None | (node, output_index) | (None, leaf)
    needs_input_grad = ()       # per input: does that input require grad?
    attrs = None                # the keyword attributes of the call (eps, stride, ...)
    input_meta = ()             # per input: (shape, dtype), to validate gradients
    output_meta = ()            # per output: (shape, dtype), to zero-fill missing grads
    device = None               # the inputs' Device
    xp = None                   # the array module of the inputs (numpy, cupy, fakegpu)
    _saved = None               # name -> array
    _saved_source = None        # name -> ("input", i) | ("output", i) | None (a constant)
    _saved_versions = ()        # (name, version counter, version at save time)
    _recording = False
    _non_differentiable = ()
    _released = False
    creation_trace = None       # anomaly mode: the forward traceback of the call that made the node
    _input_arrays = ()
    _tensor_hooks = None        # output index -> [hook], for non-leaf tensors
    _retained = None            # output index -> weakref(tensor), for retain_grad()
    module_path = None          # set by nn.Module while it runs, for graph clusters
    #: forward gets read-only views of its inputs (NumPy and fakegpu), so that `x *= 0.5` in a
    #: forward raises instead of changing the caller's tensor. On for every Function defined outside
    #: the package (see __init_subclass__); the package's own ops are tested under it
    #: (tests/autograd/test_extension_mistakes.py) and skip the two views per call.
    _read_only_inputs = False
    #: a backward returning None for an input that requires grad is warned about (usually a
    #: forgotten gradient); the package's own backwards return None for a gradient that is zero
    _warn_none_gradients = False
    #: indices of outputs that are views of an input (an extension's forward returned a[0]):
    #: an in-place write into one raises, as PyTorch's custom-Function view rule
    _view_outputs = frozenset()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not cls.__module__.startswith("tinygrad_bn."):
            cls._read_only_inputs = True
            cls._warn_none_gradients = True

    @property
    def name(self):
        return self.node_name or type(self).__name__ + "Backward"

    # ---- the two methods a subclass writes ---------------------------------------------------
    def forward(self, *arrays, **attrs):
        raise NotImplementedError(f"{type(self).__name__}.forward")

    def backward(self, *grad_outputs):
        raise NotImplementedError(f"{type(self).__name__}.backward: this op is not differentiable")

    # ---- saving for backward -----------------------------------------------------------------
    def save_for_backward(self, **arrays):
        """Keep named arrays for backward. Inputs and outputs are recognised by identity, so that
        backward gets them back as graph-connected Tensors (double backward needs that)."""
        if not self._recording:
            return  # nothing will call backward: keep no memory alive
        if self._saved is None:
            self._saved, self._saved_source = {}, {}
        buffers = _array_attrs(self.attrs) if self.attrs else ()
        for name, array in arrays.items():
            if buffers and _memory_owner(array) in buffers:
                # a running buffer (or a view of one) changes in place at the next training step,
                # before this node's backward may run: keep the values of now
                array = array.copy()
            self._saved[name] = array
            source = None
            for i, inp in enumerate(self._input_arrays):
                if inp is array:
                    source = ("input", i)
                    break
            self._saved_source[name] = source

    def mark_non_differentiable(self, *arrays):
        """Outputs (like argmax indices) that get no gradient and never require grad."""
        self._non_differentiable = {id(a) for a in arrays}

    def saved(self, *names):
        """The saved arrays as Tensors: inputs/outputs stay connected to the graph, others are constants."""
        if self._released:
            raise RuntimeError(FREED_MESSAGE.format(self.name))
        self._check_versions()
        from tinygrad_bn.tensor import Tensor
        out = []
        for name in names:
            if self._saved is None or name not in self._saved:
                raise self._not_saved(*names)
            array = self._saved[name]
            source = self._saved_source[name]
            if source is None:
                out.append(Tensor._make(array))
            elif source[0] == "output":
                out.append(Tensor._make(array, self, source[1]))
            else:
                edge = self.next_edges[source[1]] if self.next_edges else None
                if edge is None:
                    out.append(Tensor._make(array))
                elif edge[0] is None:
                    out.append(edge[1])  # the leaf tensor itself
                else:
                    out.append(Tensor._make(array, edge[0], edge[1]))
        return out[0] if len(out) == 1 else tuple(out)

    def saved_array(self, name):
        """A saved array as a raw array (for masks and statistics that are constants in backward)."""
        if self._released:
            raise RuntimeError(FREED_MESSAGE.format(self.name))
        self._check_versions()
        if self._saved is None or name not in self._saved:
            raise self._not_saved(name)
        return self._saved[name]

    def _not_saved(self, *names):
        saved = self._saved or {}
        missing = [n for n in names if n not in saved]
        have = ", ".join(f"'{n}'" for n in saved) if saved else "nothing"
        return RuntimeError(
            f"{type(self).__name__}.backward: {', '.join(repr(n) for n in missing)} "
            f"{'was' if len(missing) == 1 else 'were'} not saved for backward (forward saved "
            f"{have}). Call self.save_for_backward({', '.join(n + '=...' for n in missing)}) in "
            f"forward.")

    def saved_shapes(self):
        """name -> shape of everything saved (graph drawings show these)."""
        return {k: tuple(v.shape) for k, v in (self._saved or {}).items()}

    def _check_versions(self):
        for name, counter, version in self._saved_versions:
            if counter[0] != version:
                raise RuntimeError(
                    f"one of the variables needed for gradient computation has been modified by an "
                    f"inplace operation: [{self.name}, saved '{name}'] is at version {counter[0]}; "
                    f"expected version {version} instead.")

    def release(self):
        """Drop saved arrays once backward is done with them (unless retain_graph)."""
        self._saved = None
        self._saved_versions = ()
        self._released = True

    # ---- building a node ---------------------------------------------------------------------
    @classmethod
    def apply(cls, *inputs, **attrs):
        """Run forward on the inputs' arrays and return Tensor output(s), recording the node when
        grad mode is on and an input requires grad. Inputs must be Tensors on one device."""
        ctx = cls.__new__(cls)  # no __init__: the class-level defaults above are the fresh state
        try:
            arrays = [t.data for t in inputs]
        except AttributeError:
            arrays = None
        if arrays and type(arrays[0]) is np.ndarray and all(type(a) is np.ndarray for a in arrays):
            xp, device = np, backend.CPU  # the common case, checked without building Devices
        else:  # a device, or a mistake: checked here, off the fast path
            for i, t in enumerate(inputs):
                if not isinstance(t, Tensor):
                    raise _not_a_tensor(cls, i, t)
            if not inputs:
                raise TypeError(f"{cls.__name__}.apply: needs at least one Tensor input")
            device = backend.device_of(arrays[0])
            for i, a in enumerate(arrays[1:], 1):
                if backend.device_of(a) != device:
                    raise RuntimeError(
                        f"{cls.__name__}: expected all tensors to be on the same device, but found "
                        f"at least two devices, {device} and {backend.device_of(a)} (input {i}, "
                        f"{_input_name(cls, i)!r}). A Tensor kept as a plain Module attribute is not "
                        f"moved by Module.to(): register it with register_buffer")
            for name, value in attrs.items():
                if backend.is_array(value) and backend.device_of(value) != device:
                    raise RuntimeError(
                        f"{cls.__name__}: attribute '{name}' is on {backend.device_of(value)} but the "
                        f"inputs are on {device}. A Tensor kept as a plain Module attribute is not "
                        f"moved by Module.to(): register it with "
                        f"self.register_buffer('{name}', ...) in __init__")
            xp = backend.xp_of(arrays[0])
        recording = False
        if grad_mode._state.enabled:
            for t in inputs:
                if t.requires_grad:
                    recording = True
                    break
        ctx.attrs, ctx.xp, ctx.device = attrs, xp, device
        if recording:
            ctx._recording = True
            ctx._input_arrays = arrays
            ctx.needs_input_grad = tuple(t.requires_grad for t in inputs)
        else:
            ctx.needs_input_grad = (False,) * len(inputs)
        if cls._read_only_inputs:
            arrays = [backend.read_only_view(a) for a in arrays]
            if recording:
                ctx._input_arrays = arrays
        try:
            if xp is not np and device.index:
                with backend.device_scope(device):
                    result = ctx.forward(*arrays, **attrs)
            else:
                result = ctx.forward(*arrays, **attrs)
        except ValueError as e:
            if cls._read_only_inputs and "read-only" in str(e):
                raise _wrote_into_input(cls, e) from None
            raise
        if cls._read_only_inputs:  # outputs that are views of an input: writable again
            returned = result if type(result) is tuple else (result,)
            views_of_inputs = frozenset(i for i, r in enumerate(returned) if _is_read_only(r))
            if views_of_inputs:
                ctx._view_outputs = views_of_inputs
            for r in returned:
                backend.make_writable(r)
        make = Tensor._make
        if not recording:
            if type(result) is tuple:
                return tuple(make(r) for r in result)
            return make(result)

        single = type(result) is not tuple
        results = (result,) if single else result
        ctx.seq = next(_sequence)
        if _engine._anomaly.enabled:  # anomaly mode: remember where in forward this node was made
            ctx.creation_trace = traceback.extract_stack()[:-1]
        ctx._input_arrays = ()
        # per input, where its gradient goes: its producing node, the leaf itself, or nowhere
        ctx.next_edges = tuple((t.grad_fn, t._output_index) if t.grad_fn is not None
                               else ((None, t) if t.requires_grad else None) for t in inputs)
        ctx.input_meta = tuple([(a.shape, a.dtype) for a in arrays])
        ctx.output_meta = tuple([(r.shape, r.dtype) for r in results])
        if ctx._non_differentiable:
            outs = tuple(make(r) if id(r) in ctx._non_differentiable else make(r, ctx, i)
                         for i, r in enumerate(results))
        else:
            outs = (make(result, ctx, 0),) if single else tuple(make(r, ctx, i) for i, r in enumerate(results))
        if ctx._saved:
            # what was saved: an input, an output, or a constant; inputs/outputs get version checks
            versions = []
            for name, array in ctx._saved.items():
                source = ctx._saved_source[name]
                if source is None:
                    for i, r in enumerate(results):
                        if r is array:
                            ctx._saved_source[name] = source = ("output", i)
                            break
                if source is not None:
                    tensor = inputs[source[1]] if source[0] == "input" else outs[source[1]]
                    versions.append((name, tensor._version, tensor._version[0]))
            ctx._saved_versions = versions
        return outs[0] if single else outs

    def __repr__(self):
        return f"<{self.name}>"


# ---- messages for the mistakes of a custom Function (all off the fast path) ------------------------
def _is_read_only(array):
    """A forward's output still read-only here is a view of one of its (read-only) inputs."""
    flags = getattr(getattr(array, "_a", array), "flags", None)
    return flags is not None and not flags.writeable


@functools.lru_cache(maxsize=None)
def _forward_parameters(cls):
    """The names of forward's positional parameters (the Tensor inputs), for messages."""
    try:
        params = list(inspect.signature(cls.forward).parameters.values())[1:]
    except (TypeError, ValueError):
        return ()
    return tuple(p.name for p in params
                 if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _input_name(cls, i):
    """forward's name for input i ('x', 'weight'), or 'input i' where forward takes *arrays."""
    names = _forward_parameters(cls)
    return names[i] if i < len(names) else f"input {i}"


def _not_a_tensor(cls, i, value):
    name = _input_name(cls, i)
    kind = type(value).__module__ + "." + type(value).__name__ \
        if type(value).__module__ not in ("builtins",) else type(value).__name__
    keyword = name if not name.startswith("input ") else "name"
    return TypeError(
        f"{cls.__name__}.apply: argument {i} ({name!r}) is a {kind}, not a Tensor. Tensors are "
        f"passed positionally; pass other values by keyword, "
        f"{cls.__name__}.apply(..., {keyword}={value!r}): forward receives them as keyword "
        f"arguments and backward finds them in self.attrs['{keyword}']")


def _wrote_into_input(cls, error):
    """forward wrote into a read-only input: say which one and on which line."""
    code = getattr(cls.forward, "__code__", None)
    where, line = "", ""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code is code:
            where = tb.tb_lineno
        tb = tb.tb_next
    if where:
        line = linecache.getline(code.co_filename, where).strip()
    names = _forward_parameters(cls)
    named = [n for n in names if line and re.search(rf"\b{re.escape(n)}\b", line)]
    which = f"its input {named[0]!r}" if len(named) == 1 else \
        ("one of its inputs " + ", ".join(repr(n) for n in (named or names))) if names else "an input"
    at = f" (line {where}: `{line}`)" if where else ""
    return RuntimeError(
        f"{cls.__name__}.forward wrote into {which} in place{at}. forward's inputs are the "
        f"caller's arrays, passed read-only: writing into them would change the caller's tensor "
        f"and the gradient. Compute a new array instead (x = x * 0.5), or copy first "
        f"(x = x.copy()).")


def _memory_owner(array):
    """id of the array whose memory `array` uses (itself, or the base of a view)."""
    inner = getattr(array, "_a", array)  # fakegpu wraps a NumPy array
    while getattr(inner, "base", None) is not None:
        inner = inner.base
    return id(inner)


def _array_attrs(attrs):
    """Memory owners of the arrays among a call's keyword attributes (running buffers)."""
    return {_memory_owner(v) for v in attrs.values() if getattr(v, "ndim", None) is not None
            and getattr(v, "dtype", None) is not None and not isinstance(v, (bool, int, float))}


from tinygrad_bn.autograd import engine as _engine  # noqa: E402  (engine imports this module)
