"""Parametrizations: make `module.weight` a tensor computed from other tensors on every access,
as torch.nn.utils.parametrize does (weight_norm and spectral_norm are built on it).

    register_parametrization(linear, "weight", Symmetric())
    linear.weight          # Symmetric()(linear.parametrizations.weight.original), a graph node
    linear.weight = X      # stores Symmetric().right_inverse(X) into `original`

How it works: registration does three things, all visible in register_parametrization below.

1. The tensor leaves the module's `_parameters` (or `_buffers`) and moves into a
   ParametrizationList stored at `module.parametrizations[name]`, as `original` - or as
   `original0`, `original1`, ... when the parametrization's right_inverse splits it into several
   tensors (weight_norm's g and v). They are ordinary parameters of a child module, so
   named_parameters(), optimizers, .to(device) and state_dict() just work, with PyTorch's keys:
   "parametrizations.weight.original0".

2. Reading `module.weight` must now run code. Python runs code on attribute access through a
   property, and a property lives on the class, not on the instance. So the module's class is
   swapped for a subclass made on the fly, `ParametrizedLinear(Linear)`, whose only additions are
   one property per parametrized name:

       weight = property(lambda self: self.parametrizations["weight"](),     # read: compute
                         lambda self, X: self.parametrizations["weight"].right_inverse(X))

   Linear.forward reads self.weight as before and now gets the computed tensor, connected in the
   graph to the originals, so gradients reach them. isinstance(module, Linear) stays True, and
   repr shows "ParametrizedLinear(...)", as PyTorch's does.

3. remove_parametrizations undoes both: the tensor goes back into `_parameters` (holding the
   parametrized value, or the original one) and the class back to Linear once nothing is left.

Unlike PyTorch, the generated classes are cached per (base class, set of parametrized names) and
never modified once made (PyTorch adds properties to a per-instance class): adding or removing a
parametrization swaps the instance to another class, so a deepcopy sharing the class can never be
changed from under it. They also pickle (see __reduce_ex__ below).
"""
import contextlib

from tinygrad_bn.autograd.grad_mode import no_grad
from tinygrad_bn.nn.containers import ModuleDict, ModuleList
from tinygrad_bn.nn.module import Module
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.tensor import Tensor

__all__ = ["cached", "ParametrizationList", "register_parametrization", "is_parametrized",
           "remove_parametrizations", "type_before_parametrizations"]


# ---- caching (optional): compute each parametrized tensor once inside `with cached():` ---------
_cache_depth = [0]
_cache = {}


@contextlib.contextmanager
def cached():
    """Inside this block every parametrized tensor is computed once and reused (e.g. a weight
    read at every step of an RNN); outside it, every read recomputes."""
    _cache_depth[0] += 1
    try:
        yield
    finally:
        _cache_depth[0] -= 1
        if not _cache_depth[0]:
            _cache.clear()


def _set_data(dest, src):
    """Make `dest` hold `src`'s values, keeping dest's identity (optimizers hold it)."""
    if src is dest:
        return
    if dest.shape == src.shape:
        dest.data[...] = src.data
    else:  # only reachable with unsafe parametrizations that change the shape
        dest.data = src.data.copy()
    dest._version[0] += 1


def _register_parameter_or_buffer(module, name, tensor):
    if isinstance(tensor, Parameter):
        module.register_parameter(name, tensor)
    else:
        module.register_buffer(name, tensor)


class ParametrizationList(ModuleList):
    """The parametrizations of one tensor, applied in order, plus the tensor(s) they start from:
    `original`, or `original0`, `original1`, ... (a ModuleList, so children are "0", "1", ...).

    Calling it computes the parametrized tensor: self[0](*originals), then self[1](...), ..."""

    def __init__(self, modules, original, unsafe=False):
        if len(modules) == 0:
            raise ValueError("ParametrizationList requires one or more modules.")
        super().__init__(modules)
        self.unsafe = unsafe
        original_shape, original_dtype = original.shape, original.dtype
        # the originals are what the parametrizations' right_inverses make of the current value,
        # so that reading the tensor right after registration gives (about) the value it had
        with no_grad():
            new = original
            for module in reversed(list(self)):
                if hasattr(module, "right_inverse"):
                    try:
                        new = module.right_inverse(new)
                    except NotImplementedError:
                        pass
        if not isinstance(new, (Tensor, tuple, list)):
            raise ValueError("'right_inverse' must return a Tensor or a Sequence of tensors "
                             f"(list, tuple...). Got {type(new).__name__}")
        self.is_tensor = isinstance(new, Tensor)
        self.ntensors = 1 if self.is_tensor else len(new)
        if self.is_tensor:
            if original.dtype != new.dtype:
                raise ValueError("When `right_inverse` outputs one tensor, it may not change the dtype.\n"
                                 f"original.dtype: {original.dtype}\n"
                                 f"right_inverse(original).dtype: {new.dtype}")
            if original.device != new.device:
                raise ValueError("When `right_inverse` outputs one tensor, it may not change the device.\n"
                                 f"original.device: {original.device}\n"
                                 f"right_inverse(original).device: {new.device}")
            with no_grad():
                _set_data(original, new)
            _register_parameter_or_buffer(self, "original", original)
        else:
            for i, originali in enumerate(new):
                if not isinstance(originali, Tensor):
                    raise ValueError("'right_inverse' must return a Tensor or a Sequence of tensors "
                                     "(list, tuple...). Got element {} of the sequence with type {}."
                                     .format(i, type(originali).__name__))
                if isinstance(original, Parameter):
                    originali = Parameter(originali, original.requires_grad)
                originali.requires_grad_(original.requires_grad)
                _register_parameter_or_buffer(self, f"original{i}", originali)
        if not self.unsafe:
            # the parametrized tensor must look like the one it replaces
            z = self()
            if not isinstance(z, Tensor):
                raise ValueError(f"A parametrization must return a tensor. Got {type(z).__name__}.")
            if z.dtype != original_dtype:
                raise ValueError("Registering a parametrization may not change the dtype of the tensor, "
                                 "unless `unsafe` flag is enabled.\n"
                                 f"unparametrized dtype: {original_dtype}\n"
                                 f"parametrized dtype: {z.dtype}")
            if z.shape != original_shape:
                raise ValueError("Registering a parametrization may not change the shape of the tensor, "
                                 "unless `unsafe` flag is enabled.\n"
                                 f"unparametrized shape: {list(original_shape)}\n"
                                 f"parametrized shape: {list(z.shape)}")

    def right_inverse(self, value):
        """`module.weight = value`: store the originals that give back `value` (in place)."""
        with no_grad():
            for module in reversed(list(self)):
                if not hasattr(module, "right_inverse"):
                    raise RuntimeError(f"parametrization {type(module).__name__} does not implement "
                                       f"right_inverse.")
                value = module.right_inverse(value)
            if self.is_tensor:
                if not isinstance(value, Tensor):
                    raise ValueError(f"`right_inverse` should return a tensor. Got {type(value).__name__}")
                if value.dtype != self.original.dtype:
                    raise ValueError(f"The tensor returned by `right_inverse` has dtype {value.dtype} "
                                     f"while `original` has dtype {self.original.dtype}")
                _set_data(self.original, value)
                return
            if not isinstance(value, (tuple, list)):
                raise ValueError(f"'right_inverse' must return a sequence of tensors. Got "
                                 f"{type(value).__name__}.")
            if len(value) != self.ntensors:
                raise ValueError(f"'right_inverse' must return a sequence of tensors of length "
                                 f"{self.ntensors}. Got a sequence of length {len(value)}.")
            for i, tensor in enumerate(value):
                original_i = getattr(self, f"original{i}")
                if not isinstance(tensor, Tensor):
                    raise ValueError(f"'right_inverse' must return a sequence of tensors. Got "
                                     f"element {i} of type {type(tensor).__name__}.")
                if original_i.dtype != tensor.dtype:
                    raise ValueError(f"Tensor {i} returned by `right_inverse` has dtype {tensor.dtype} "
                                     f"while `original{i}` has dtype {original_i.dtype}")
                _set_data(original_i, tensor)

    def forward(self):
        if self.is_tensor:
            x = self[0](self.original)
        else:
            x = self[0](*(getattr(self, f"original{i}") for i in range(self.ntensors)))
        for module in list(self)[1:]:
            x = module(x)
        return x


# ---- the generated classes -------------------------------------------------------------------
_classes = {}  # (base class, frozenset of names) -> ParametrizedBase


def _parametrized_property(name):
    def get(self):
        parametrization = self.parametrizations[name]
        if not _cache_depth[0]:
            return parametrization()
        key = (id(self), name)
        if key not in _cache:
            _cache[key] = parametrization()
        return _cache[key]

    def set(self, value):
        self.parametrizations[name].right_inverse(value)

    return property(get, set, doc=f"`{name}`, computed by self.parametrizations[{name!r}]")


def _rebuild(base, names):
    """Unpickling / deepcopy: an empty instance of the parametrized class (state is set after)."""
    return object.__new__(_parametrized_class(base, names))


def _reduce_ex(self, protocol):
    base = type(self).__bases__[0]
    return _rebuild, (base, tuple(sorted(self.parametrizations.keys()))), self.__dict__


def _load_from_state_dict(self, state_dict, prefix, *args):
    # parametrizations may rename keys of older checkpoints (weight_norm: weight_g -> original0)
    for name, parametrizations in self.parametrizations.items():
        for parametrization in parametrizations:
            upgrade = getattr(parametrization, "_upgrade_state_dict", None)
            if upgrade is not None:
                upgrade(state_dict, prefix, name)
    type(self).__bases__[0]._load_from_state_dict(self, state_dict, prefix, *args)


def _parametrized_class(base, names):
    """ParametrizedBase(base): base plus one property per name (made once, then reused)."""
    key = (base, frozenset(names))
    cls = _classes.get(key)
    if cls is None:
        namespace = {name: _parametrized_property(name) for name in sorted(names)}
        namespace.update(__reduce_ex__=_reduce_ex, _load_from_state_dict=_load_from_state_dict,
                         __module__=__name__,
                         __doc__=f"{base.__name__} with parametrized {', '.join(sorted(names))} "
                                 f"(see tinygrad_bn.nn.utils.parametrize)")
        cls = _classes[key] = type(f"Parametrized{base.__name__}", (base,), namespace)
    return cls


def _set_parametrized_names(module, names):
    """Swap the module's class for the one with exactly these parametrized names."""
    base = type_before_parametrizations(module)
    module.__class__ = _parametrized_class(base, names) if names else base


# ---- the public functions ----------------------------------------------------------------------
def register_parametrization(module, tensor_name, parametrization, *, unsafe=False):
    """Parametrize module.<tensor_name> (a parameter or buffer) by `parametrization`, a Module
    whose forward maps the original tensor(s) to the new value; optional right_inverse(value)
    gives the originals for a value (a tensor, or a tuple: then original0, original1, ...).

    A second registration on the same name appends to its ParametrizationList (applied after the
    first). unsafe=True skips the checks that the result keeps its shape and dtype."""
    parametrization.train(module.training)
    if is_parametrized(module, tensor_name):
        if not unsafe:
            y = getattr(module, tensor_name)
            x = parametrization(y)
            if not isinstance(x, Tensor):
                raise ValueError(f"A parametrization must return a tensor. Got {type(x).__name__}.")
            if x.dtype != y.dtype:
                raise ValueError("Registering a parametrization may not change the dtype of the tensor, "
                                 "unless the `unsafe` flag is enabled.\n"
                                 f"module.{tensor_name}.dtype: {y.dtype}\n"
                                 f"parametrization(module.{tensor_name}).dtype: {x.dtype}")
            if x.shape != y.shape:
                raise ValueError("Registering a parametrization may not change the shape of the tensor, "
                                 "unless the `unsafe` flag is enabled.\n"
                                 f"module.{tensor_name}.shape: {list(y.shape)}\n"
                                 f"parametrization(module.{tensor_name}).shape: {list(x.shape)}")
            if hasattr(parametrization, "right_inverse"):
                try:
                    z = parametrization.right_inverse(x)
                except NotImplementedError:
                    z = None
                if z is not None:
                    if not isinstance(z, Tensor):
                        raise ValueError(f"parametrization.right_inverse must return a tensor. Got: "
                                         f"{type(z).__name__}")
                    if z.dtype != y.dtype or z.shape != y.shape:
                        raise ValueError(
                            f"The tensor returned by parametrization.right_inverse must have the "
                            f"same dtype and shape as module.{tensor_name}, unless the `unsafe` flag "
                            f"is enabled.\nmodule.{tensor_name}: {y.dtype} {list(y.shape)}\n"
                            f"returned: {z.dtype} {list(z.shape)}")
        module.parametrizations[tensor_name].append(parametrization)
        module.parametrizations[tensor_name].unsafe |= unsafe
    elif tensor_name in module._buffers or tensor_name in module._parameters:
        original = getattr(module, tensor_name)
        if original is None:
            raise ValueError(f"Module '{type(module).__name__}' has no tensor '{tensor_name}' to "
                             f"parametrize (it is None)")
        parametrizations = ParametrizationList([parametrization], original, unsafe=unsafe)
        delattr(module, tensor_name)
        names = set(module.parametrizations.keys()) if is_parametrized(module) else set()
        _set_parametrized_names(module, names | {tensor_name})
        if "parametrizations" not in module._modules:
            module.parametrizations = ModuleDict()
        module.parametrizations[tensor_name] = parametrizations
    else:
        raise ValueError(f"Module '{module}' does not have a parameter, a buffer, or a parametrized "
                         f"element with name '{tensor_name}'")
    return module


def is_parametrized(module, tensor_name=None):
    """Whether module has any parametrization (tensor_name=None) or one on tensor_name."""
    parametrizations = module._modules.get("parametrizations") if isinstance(module, Module) else None
    if not isinstance(parametrizations, ModuleDict):
        return False
    if tensor_name is None:
        return len(parametrizations) > 0
    return tensor_name in parametrizations


def remove_parametrizations(module, tensor_name, leave_parametrized=True):
    """Undo register_parametrization on tensor_name. leave_parametrized=True keeps the current
    (parametrized) value in a plain parameter; False restores the original tensor (only possible
    when there is one original)."""
    if not is_parametrized(module, tensor_name):
        raise ValueError(f"Module {module} does not have a parametrization on {tensor_name}")
    parametrizations = module.parametrizations[tensor_name]
    if parametrizations.is_tensor:
        original = parametrizations.original
        if leave_parametrized:
            with no_grad():
                t = getattr(module, tensor_name)
                _set_data(original, t)
    else:
        if not leave_parametrized:
            raise ValueError("Cannot leave unparametrized (`leave_parametrized=False`) a tensor that "
                             "is parametrized in terms of a sequence of tensors.")
        t = getattr(module, tensor_name)
        original = Parameter(t.detach()) if t.requires_grad else t
    names = set(module.parametrizations.keys()) - {tensor_name}
    del module.parametrizations[tensor_name]
    _set_parametrized_names(module, names)  # drops the property, so the name is free again
    _register_parameter_or_buffer(module, tensor_name, original)
    if not names:
        delattr(module, "parametrizations")
    return module


def type_before_parametrizations(module):
    """The module's class as it was before any parametrization (Linear for ParametrizedLinear)."""
    cls = type(module)
    return cls.__bases__[0] if any(cls is c for c in _classes.values()) else cls
