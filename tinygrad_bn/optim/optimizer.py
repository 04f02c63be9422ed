"""Optimizer: the base class of every optimizer (param_groups, per-parameter state, state_dict).

An optimizer holds `param_groups`, a list of dicts, each {"params": [Tensor, ...], "lr": ..., ...}:
the options of the subclass's defaults, overridable per group. `state[p]` holds what the update
rule keeps per parameter (momentum buffers, moment estimates) as Tensors on the parameter's device.

Updates run on raw arrays (`p.data`, `p.grad.data`) in place, outside the graph, with the array
module of the parameter's own device (`p.xp`), so the same code runs on NumPy, CuPy and fakegpu.
"""
import copy
import warnings
from collections import defaultdict

from tinygrad_bn.autograd.grad_mode import enable_grad
from tinygrad_bn.tensor import Tensor


class _RequiredParameter:
    """Marks a default that every param group must give itself (SGD's lr in old PyTorch)."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


class Optimizer:
    """Base class: Optimizer(params, defaults); subclasses implement step()."""

    def __init__(self, params, defaults):
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of "
                            "Tensors or dicts, but got " + _typename(params))
        self.defaults = defaults
        self.state = defaultdict(dict)  # Tensor -> dict (a Tensor hashes by identity)
        self.param_groups = []
        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(group)

    def __repr__(self):
        lines = [type(self).__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines) + "\n)"

    def add_param_group(self, param_group):
        """Add a group of parameters with its own options (missing options come from defaults)."""
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but "
                            "the ordering of tensors in sets will change between runs. Please use "
                            "a list instead.")
        param_group["params"] = params = list(params)
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError("optimizer can only optimize Tensors, but one of the params is "
                                + _typename(p))
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required "
                                 f"optimization parameter {name}")
            param_group.setdefault(name, default)
        # Tensor == Tensor is elementwise, so membership goes through id()
        ids = [id(p) for p in params]
        if len(ids) != len(set(ids)):
            warnings.warn("optimizer contains a parameter group with duplicate parameters; "
                          "in future, this will cause an error", stacklevel=3)
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if seen.intersection(ids):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        """Forget the gradients: drop them (default), or give each a fresh zero array.

        Never zeroes a gradient array in place: another tensor may share it."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad = Tensor._make(p.grad.xp.zeros_like(p.grad.data))

    def step(self, closure=None):
        raise NotImplementedError

    def _evaluate(self, closure):
        """Run the closure (which recomputes the loss and calls backward) with grad mode on."""
        if closure is None:
            return None
        with enable_grad():
            return closure()

    # ---- per-parameter state helpers for subclasses -----------------------------------------
    def _state_buffer(self, p, name):
        """state[p][name], created as zeros like p on first use."""
        state = self.state[p]
        if name not in state:
            state[name] = Tensor._make(p.xp.zeros_like(p.data))
        return state[name]

    # ---- checkpoints ---------------------------------------------------------------------------
    def state_dict(self):
        """PyTorch's layout: {"state": {index: {...}}, "param_groups": [{..., "params": [index]}]}.

        Parameters become their position in the order of param_groups. Returns a snapshot: state
        Tensors are copied, so later steps don't change a dict you are about to save."""
        index_of = {}
        groups = []
        for group in self.param_groups:
            packed = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, values in self.state.items():
            state[index_of[id(p)]] = {k: _snapshot(v) for k, v in values.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore options and state saved by state_dict() (into this optimizer's own params).

        State arrays move to each parameter's device; floating state takes the parameter's dtype."""
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        for group, saved in zip(self.param_groups, saved_groups):
            if len(group["params"]) != len(saved["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match "
                                 "the size of optimizer's group")
        param_of = {}
        for group, saved in zip(self.param_groups, saved_groups):
            param_of.update(zip(saved["params"], group["params"]))
        self.state = defaultdict(dict)
        for index, values in state_dict["state"].items():
            # a checkpoint may bring keys back as strings of ints
            p = param_of.get(index, param_of.get(_as_int(index)))
            if p is None:
                raise ValueError(f"load_state_dict: state for parameter index {index!r}, but the "
                                 f"param_groups only list indices {sorted(param_of)}")
            self.state[p] = {k: _restore(v, p) for k, v in values.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            new["params"] = group["params"]
            new_groups.append(new)
        self.param_groups = new_groups


def _typename(obj):
    return type(obj).__module__ + "." + type(obj).__qualname__


def _as_int(key):
    try:
        return int(key)
    except (TypeError, ValueError):
        return key


def _snapshot(value):
    if isinstance(value, Tensor):
        return Tensor._make(value.data.copy())
    return copy.deepcopy(value)


def _restore(value, param):
    """A copy of a saved state value on param's device (a float array takes param's dtype)."""
    from tinygrad_bn import backend
    if isinstance(value, Tensor):
        value = value.data
    if not backend.is_array(value):
        return copy.deepcopy(value)
    array = backend.to_device(value, param.device)
    if array.dtype.kind == "f" and array.dtype != param.dtype:
        array = array.astype(param.dtype)
    elif array is value:
        array = array.copy()
    return Tensor._make(array)


def bump_version(p):
    """p.data was changed in place: autograd must know that saved copies of p are stale."""
    p._version[0] += 1
