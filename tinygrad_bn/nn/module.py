"""Module: the base class of every layer, as in PyTorch.

A Module owns three ordered dicts, filled by plain attribute assignment (`__setattr__` below):

    _parameters   name -> Parameter or None      (self.weight = Parameter(...))
    _buffers      name -> Tensor or None          (register_buffer; e.g. running statistics)
    _modules      name -> Module or None          (self.conv1 = Conv2d(...))

Everything else follows from walking them: named_parameters, state_dict keys ("layer1.0.conv1.
weight"), train/eval, to(device), repr. Keys and their order match PyTorch's, so checkpoints map
one to one.

Graph drawing: while a module's forward runs, every graph node (Function) it creates gets
`node.module_path`, the module's qualified name ("" for the root, "layer1.0.conv1" inside). How,
without touching Function: __call__ remembers the global node counter (`Function.seq`) when it
starts; after forward it walks back from the outputs through nodes newer than that mark and tags
those not yet tagged. Inner modules return first, so the innermost name wins. A module's path is
found by looking itself up among its caller's children (a thread-local stack of calls). The walk
only runs when a graph is being recorded, and visits each node created in the call once per
enclosing module (a few times per node for a ResNet), so its cost is small next to the ops.
"""
import collections
import collections.abc
import itertools
import threading
import weakref

import numpy as np

from tinygrad_bn import backend, dtypes
from tinygrad_bn.autograd import function as _function
from tinygrad_bn.autograd.grad_mode import is_grad_enabled
from tinygrad_bn.nn.parameter import Parameter
from tinygrad_bn.tensor import Tensor


class _IncompatibleKeys(collections.namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])):
    """What a non-strict load_state_dict did not match."""

    def __repr__(self):
        if not self.missing_keys and not self.unexpected_keys:
            return "<All keys matched successfully>"
        return super().__repr__()

    __str__ = __repr__


class RemovableHandle:
    """Returned by register_*_hook; `handle.remove()` (or leaving a `with` block) detaches it."""

    _next_id = itertools.count()

    def __init__(self, hooks_dict):
        self.hooks_dict_ref = weakref.ref(hooks_dict)
        self.id = next(RemovableHandle._next_id)

    def remove(self):
        hooks = self.hooks_dict_ref()
        if hooks is not None and self.id in hooks:
            del hooks[self.id]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.remove()


def _addindent(text, spaces):
    """Indent every line but the first (PyTorch's repr layout)."""
    lines = text.split("\n")
    if len(lines) == 1:
        return text
    return lines[0] + "\n" + "\n".join(" " * spaces + line for line in lines[1:])


# ---- which module is running: for tagging graph nodes with module_path ---------------------
_calls = threading.local()


def _call_stack():
    stack = getattr(_calls, "stack", None)
    if stack is None:
        stack = _calls.stack = []
    return stack


def _qualified_name(module, stack):
    """The module's name under the outermost running module, or None when it has none (a module
    made on the fly inside forward: its nodes are then tagged by the caller)."""
    if not stack:
        return ""
    parent, parent_path = stack[-1]
    if parent_path is None:
        return None
    if parent is module:
        return parent_path
    for name, child in parent._modules.items():
        if child is module:
            return name if not parent_path else parent_path + "." + name
    for name, child in parent.named_modules():  # a grandchild called directly: rare, slower
        if child is module:
            return name if not parent_path else parent_path + "." + name
    return None


def _output_tensors(output):
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for t in output if isinstance(t, Tensor)]
    if isinstance(output, dict):
        return [t for t in output.values() if isinstance(t, Tensor)]
    return []


def _tag_graph(output, path, first_seq):
    """Set module_path on the untagged nodes created since first_seq that lead to output."""
    stack = [t.grad_fn for t in _output_tensors(output)
             if t.grad_fn is not None and t.grad_fn.seq > first_seq]
    seen = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node.module_path is None:
            node.module_path = path
        for edge in node.next_edges:
            if edge is not None and edge[0] is not None and edge[0].seq > first_seq:
                stack.append(edge[0])


class Module:
    """Base class for all layers. Subclasses call super().__init__() and define forward()."""

    #: recorded as state_dict()._metadata[prefix]["version"]; a subclass bumps it when its
    #: state_dict layout changes and reads the old number back in _load_from_state_dict
    _version = 1

    def __init__(self):
        # object.__setattr__: our own __setattr__ needs these dicts to exist already
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_parameters", collections.OrderedDict())
        object.__setattr__(self, "_buffers", collections.OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", collections.OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", collections.OrderedDict())
        object.__setattr__(self, "_forward_hooks", collections.OrderedDict())

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required '
                                  f'"forward" function')

    # ---- calling ---------------------------------------------------------------------------
    def __call__(self, *args, **kwargs):
        """Pre-hooks, forward, hooks; then tag the new graph nodes with this module's path."""
        stack = _call_stack()
        path = _qualified_name(self, stack)
        first_seq = next(_function._sequence)  # nodes made from here on have a larger seq
        stack.append((self, path))
        try:
            if self._forward_pre_hooks:
                for hook in list(self._forward_pre_hooks.values()):
                    result = hook(self, args)
                    if result is not None:
                        args = result if isinstance(result, tuple) else (result,)
            output = self.forward(*args, **kwargs)
            if self._forward_hooks:
                for hook in list(self._forward_hooks.values()):
                    result = hook(self, args, output)
                    if result is not None:
                        output = result
        finally:
            stack.pop()
        if path is not None and is_grad_enabled():
            _tag_graph(output, path, first_seq)
        return output

    def register_forward_pre_hook(self, hook):
        """hook(module, args) -> None or new args, run before forward."""
        handle = RemovableHandle(self._forward_pre_hooks)
        self._forward_pre_hooks[handle.id] = hook
        return handle

    def register_forward_hook(self, hook):
        """hook(module, args, output) -> None or a new output, run after forward."""
        handle = RemovableHandle(self._forward_hooks)
        self._forward_hooks[handle.id] = hook
        return handle

    # ---- registration ----------------------------------------------------------------------
    def _check_new_name(self, name, kind):
        if "_parameters" not in self.__dict__:
            raise AttributeError(f"cannot assign {kind} before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"{kind} name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError(f'{kind} name can\'t contain ".", got "{name}"')
        if name == "":
            raise KeyError(f'{kind} name can\'t be empty string ""')

    def register_parameter(self, name, param):
        """Add a Parameter (or None: a declared but absent parameter, like bias=False)."""
        self._check_new_name(name, "parameter")
        if hasattr(self, name) and name not in self._parameters:
            raise KeyError(f"attribute '{name}' already exists")
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' "
                            f"(tinygrad_bn.nn.Parameter or None required)")
        if param is not None and param.grad_fn is not None:
            raise ValueError(f"Cannot assign non-leaf Tensor to parameter '{name}'. Model parameters "
                             f"must be created explicitly, as leaves.")
        self._parameters[name] = param

    def register_buffer(self, name, tensor, persistent=True):
        """Add a buffer: state that is saved and moved with the module but not trained (running
        statistics). persistent=False keeps it out of state_dict."""
        self._check_new_name(name, "buffer")
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, Tensor):
            raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                            f"(Tensor or None required)")
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def add_module(self, name, module):
        """Add a child module (or None)."""
        self._check_new_name(name, "module")
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if hasattr(self, name) and name not in self._modules:
            raise KeyError(f"attribute '{name}' already exists")
        self._modules[name] = module

    register_module = add_module

    def __setattr__(self, name, value):
        """Parameters and Modules register themselves; a Tensor replaces a registered buffer."""
        params = self.__dict__.get("_parameters")
        if isinstance(value, Parameter):
            if params is None:
                raise AttributeError("cannot assign parameters before Module.__init__() call")
            self._forget(name, keep=self._parameters)
            self.register_parameter(name, value)
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                                f"(tinygrad_bn.nn.Parameter or None expected)")
            params[name] = None
        elif isinstance(value, Module):
            if params is None:
                raise AttributeError("cannot assign module before Module.__init__() call")
            self._forget(name, keep=self._modules)
            self._modules[name] = value
        elif params is not None and name in self._modules:
            if value is not None:
                raise TypeError(f"cannot assign '{type(value).__name__}' as child module '{name}' "
                                f"(Module or None expected)")
            self._modules[name] = None
        elif params is not None and name in self._buffers:
            if value is not None and not isinstance(value, Tensor):
                raise TypeError(f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                                f"(Tensor or None expected)")
            self._buffers[name] = value
        else:
            object.__setattr__(self, name, value)

    def _forget(self, name, keep):
        """Drop `name` from every registry but `keep` (where it is about to be stored: replacing
        an entry there keeps its place in the order)."""
        self.__dict__.pop(name, None)
        for registry in (self._parameters, self._buffers, self._modules):
            if registry is not keep:
                registry.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def __getattr__(self, name):
        # only called when normal lookup fails: look in the three registries
        d = self.__dict__
        for registry in ("_parameters", "_buffers", "_modules"):
            if registry in d and name in d[registry]:
                return d[registry][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name):
        for registry in ("_parameters", "_buffers", "_modules"):
            if name in self.__dict__.get(registry, ()):
                del self.__dict__[registry][name]
                self._non_persistent_buffers_set.discard(name)
                return
        object.__delattr__(self, name)

    def __dir__(self):
        return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers)
                      | set(self._modules))

    # ---- walking the tree ------------------------------------------------------------------
    def named_modules(self, memo=None, prefix="", remove_duplicate=True):
        """(qualified name, module) for self and every descendant, depth first; a module
        reachable twice is listed once unless remove_duplicate=False."""
        if memo is None:
            memo = set()
        if self in memo:
            return
        if remove_duplicate:
            memo.add(self)
        yield prefix, self
        for name, module in self._modules.items():
            if module is None:
                continue
            sub_prefix = prefix + ("." if prefix else "") + name
            yield from module.named_modules(memo, sub_prefix, remove_duplicate)

    def modules(self):
        for _, module in self.named_modules():
            yield module

    def named_children(self):
        seen = set()
        for name, module in self._modules.items():
            if module is not None and module not in seen:
                seen.add(module)
                yield name, module

    def children(self):
        for _, module in self.named_children():
            yield module

    def _named_members(self, registry, prefix, recurse, remove_duplicate):
        seen = set()  # by identity: a tensor shared by two modules is listed once
        modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) \
            if recurse else [(prefix, self)]
        for module_prefix, module in modules:
            for name, value in getattr(module, registry).items():
                if value is None or id(value) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(value))
                yield module_prefix + ("." if module_prefix else "") + name, value

    def named_parameters(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

    def parameters(self, recurse=True):
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix="", recurse=True, remove_duplicate=True):
        yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

    def buffers(self, recurse=True):
        for _, buf in self.named_buffers(recurse=recurse):
            yield buf

    def get_submodule(self, target):
        """The module at a dotted path ("layer1.0.conv1"); "" is self."""
        module = self
        if target == "":
            return module
        for part in target.split("."):
            if part not in module._modules or module._modules[part] is None:
                raise AttributeError(f"{type(module).__name__} has no submodule `{part}` "
                                     f"(looking up {target!r})")
            module = module._modules[part]
        return module

    # ---- modes -----------------------------------------------------------------------------
    def train(self, mode=True):
        """Set the training flag of this module and every descendant; returns self."""
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        self.training = mode
        for module in self.children():
            module.train(mode)
        return self

    def eval(self):
        return self.train(False)

    def requires_grad_(self, requires_grad=True):
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def zero_grad(self, set_to_none=True):
        """Forget the accumulated gradients (set to None, or fill with zeros)."""
        for param in self.parameters():
            if param.grad is None:
                continue
            if set_to_none:
                param.grad = None
            elif param.grad.grad_fn is not None:  # a create_graph gradient: don't write into it
                param.grad = Tensor._make(param.grad.xp.zeros_like(param.grad.data))
            else:
                param.grad.zero_()

    def apply(self, fn):
        """Call fn(module) on every descendant, then on self (for custom initialisation)."""
        for module in self.children():
            module.apply(fn)
        fn(self)
        return self

    # ---- devices and dtypes ----------------------------------------------------------------
    def _apply(self, convert):
        """Replace the array of every parameter, gradient and buffer by convert(array), in place:
        Parameter and buffer objects keep their identity, so optimizers holding them still work."""
        for module in self.children():
            module._apply(convert)
        for tensor in itertools.chain(self._parameters.values(), self._buffers.values()):
            if tensor is None:
                continue
            tensor.data = convert(tensor.data)
            if tensor.grad is not None:
                tensor.grad = Tensor._make(convert(tensor.grad.data))
        return self

    def to(self, *args, **kwargs):
        """to(device), to(dtype), to(device, dtype) or to(tensor): moves parameters and buffers;
        a dtype applies to the floating-point ones only."""
        device = kwargs.pop("device", None)
        dtype = kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, (str, backend.Device)):
                device = arg
            else:
                dtype = arg
        if device is not None:
            device = backend.as_device(device)
            backend.array_module(device)  # a clear error for cuda without a GPU, before moving
        if dtype is not None:
            dtype = dtypes.to_dtype(dtype, "Module.to")
            if not dtypes.is_floating(dtype):
                raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired "
                                f"dtype={dtype}")

        def convert(array):
            if dtype is not None and array.dtype.kind == "f" and array.dtype != dtype:
                array = array.astype(dtype)
            return backend.to_device(array, device) if device is not None else array
        return self._apply(convert)

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

    # ---- state_dict ------------------------------------------------------------------------
    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """This module's own parameters, then persistent buffers (override to customise)."""
        for name, param in self._parameters.items():
            if param is not None:
                destination[prefix + name] = param if keep_vars else param.detach()
        for name, buf in self._buffers.items():
            if buf is not None and name not in self._non_persistent_buffers_set:
                destination[prefix + name] = buf if keep_vars else buf.detach()

    def state_dict(self, destination=None, prefix="", keep_vars=False):
        """OrderedDict of every parameter and persistent buffer by qualified name (detached
        Tensors sharing the module's arrays). `._metadata[module prefix]["version"]` records each
        module's `_version` so that loading can upgrade old layouts."""
        if destination is None:
            destination = collections.OrderedDict()
            destination._metadata = collections.OrderedDict()
        metadata = getattr(destination, "_metadata", None)
        if metadata is not None:
            metadata[prefix[:-1]] = {"version": self._version}
        self._save_to_state_dict(destination, prefix, keep_vars)
        for name, module in self._modules.items():
            if module is not None:
                module.state_dict(destination=destination, prefix=prefix + name + ".",
                                  keep_vars=keep_vars)
        return destination

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        """Copy this module's own entries of state_dict into its parameters and buffers.

        Override it (calling super) to upgrade old checkpoints: `local_metadata.get("version")`
        is the `_version` the checkpoint was saved with; state_dict is a private copy that may be
        edited (e.g. BatchNorm adds a missing num_batches_tracked)."""
        local_state = {name: t for name, t in itertools.chain(
            self._parameters.items(),
            ((n, b) for n, b in self._buffers.items() if n not in self._non_persistent_buffers_set))
            if t is not None}
        for name, tensor in local_state.items():
            key = prefix + name
            if key not in state_dict:
                if strict:
                    missing_keys.append(key)
                continue
            value = state_dict[key]
            if isinstance(value, Tensor):
                array = value.data
            elif backend.is_array(value) or isinstance(value, np.generic):
                array = np.asarray(value) if isinstance(value, np.generic) else value
            else:
                error_msgs.append(f'While copying the parameter named "{key}", expected a Tensor or '
                                  f'an array from checkpoint but received {type(value)}')
                continue
            if tensor.ndim == 0 and tuple(array.shape) == (1,):  # PyTorch accepts [x] for a scalar
                array = array.reshape(())
            if tuple(array.shape) != tensor.shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape "
                                  f"{list(array.shape)} from checkpoint, the shape in current model "
                                  f"is {list(tensor.shape)}.")
                continue
            try:
                # in place, casting to the model's dtype: whoever holds this tensor sees the values
                tensor.data[...] = backend.to_device(array, tensor.device)
                tensor._version[0] += 1
            except Exception as e:  # noqa: BLE001 - reported with the others, as PyTorch does
                error_msgs.append(f'While copying the parameter named "{key}", whose dimensions in '
                                  f'the model are {list(tensor.shape)} and whose dimensions in the '
                                  f'checkpoint are {list(array.shape)}, an exception occurred : {e}.')
        if strict:
            for key in state_dict:
                if not key.startswith(prefix):
                    continue
                head, *rest = key[len(prefix):].split(".", 1)
                if (rest and head not in self._modules) or (not rest and head not in local_state):
                    unexpected_keys.append(key)

    def load_state_dict(self, state_dict, strict=True):
        """Copy values from state_dict into the parameters and buffers, in place.

        strict=True: every missing key, unexpected key and shape mismatch is reported together in
        one RuntimeError. strict=False: returns (missing_keys, unexpected_keys); shape mismatches
        are still errors. Values may be Tensors (any device) or NumPy arrays."""
        if not isinstance(state_dict, collections.abc.Mapping):
            raise TypeError(f"Expected state_dict to be dict-like, got {type(state_dict)}.")
        missing_keys, unexpected_keys, error_msgs = [], [], []
        metadata = getattr(state_dict, "_metadata", None)
        state_dict = collections.OrderedDict(state_dict)  # private: overrides may edit it

        def load(module, local_state_dict, prefix=""):
            local_metadata = {} if metadata is None else metadata.get(prefix[:-1], {})
            # strict=True here, as in PyTorch: non-strict loads report the same keys, but return them
            module._load_from_state_dict(local_state_dict, prefix, local_metadata, True,
                                         missing_keys, unexpected_keys, error_msgs)
            for name, child in module._modules.items():
                if child is not None:
                    child_prefix = prefix + name + "."
                    load(child, {k: v for k, v in local_state_dict.items()
                                 if k.startswith(child_prefix)}, child_prefix)

        load(self, state_dict)
        if strict:
            if unexpected_keys:
                error_msgs.insert(0, "Unexpected key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in unexpected_keys)))
            if missing_keys:
                error_msgs.insert(0, "Missing key(s) in state_dict: {}. ".format(
                    ", ".join(f'"{k}"' for k in missing_keys)))
        if error_msgs:
            raise RuntimeError("Error(s) in loading state_dict for {}:\n\t{}".format(
                type(self).__name__, "\n\t".join(error_msgs)))
        return _IncompatibleKeys(missing_keys, unexpected_keys)

    # ---- repr ------------------------------------------------------------------------------
    def extra_repr(self):
        """The text inside this module's parentheses (its hyperparameters); override it."""
        return ""

    def _get_name(self):
        return type(self).__name__

    def __repr__(self):
        extra = self.extra_repr()
        extra_lines = extra.split("\n") if extra else []
        child_lines = [f"({name}): " + _addindent(repr(module), 2)
                       for name, module in self._modules.items()]
        lines = extra_lines + child_lines
        text = self._get_name() + "("
        if lines:
            if len(extra_lines) == 1 and not child_lines:  # one-liners: Linear(in_features=...)
                text += extra_lines[0]
            else:
                text += "\n  " + "\n  ".join(lines) + "\n"
        return text + ")"
