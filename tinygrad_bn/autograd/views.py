"""Views and in-place writes: how a view knows its base, and how a write through it is recorded.

A *view* shares memory with another tensor: `x[1:]`, `x.reshape(6)`, `x.t()`, `x.expand(3, 3)`.
Writing into a view writes into its base, so autograd needs three things (PyTorch does the same):

1. **One version counter per storage.** A view gets its base's `_version` list itself, not a
   copy. A write through the base or any view bumps the one count that every saved-tensor check
   reads ("one of the variables needed for gradient computation has been modified by an inplace
   operation").
2. **Who the base is, and how to get the view from it.** `view._view` is a `ViewInfo(base,
   steps, grad_mode)`. `base` is the tensor that owns the memory, never itself a view (a view of
   a view points at the root). `steps` are the view ops that make the view from the base, e.g.
   `((Index, {key: (0,)}), (Permute, {dims: (1, 0)}))`; replaying them on any tensor of the base's
   shape gives "the same view" of it (`replay`).
3. **Rebasing.** After `v.mul_(2)` with `v = b[0]`, the base's values changed where `v` sees
   them. So the base's history becomes `CopySlices(b_old, r)`: "b_new is b_old, except at the
   view's places, where it is r = v_old * 2". Its backward sends the gradient of those places to
   r (and from r, through MulBackward and the view op, to b_old's places), and the rest straight
   to b_old. Then every live view of b (v itself included) reads new memory, so its history is
   replayed from the new base: `v.grad_fn` = the view op applied to `b`'s new node.

Rules kept from PyTorch (checked in `Tensor._inplace`): a view of a leaf that requires grad may not
be written in place under grad mode; a view made under no_grad may not be written in place in a
recorded way; a view whose elements overlap in memory (an expand) may not be written at all.

Views register with their base only when made under grad mode, in a WeakSet, so that the
non-view path pays nothing and a long-lived base (a Parameter viewed every step) keeps no dead views.
"""
import math
import weakref

from tinygrad_bn.autograd import function as function_module
from tinygrad_bn.autograd.function import Function, _memory_owner
from tinygrad_bn.autograd.grad_mode import is_grad_enabled, no_grad


class ViewInfo:
    """What a view knows: its base (the memory owner), the steps that make it from the base, and
    whether it was made under grad mode (PyTorch refuses a recorded write into a no_grad view)."""

    __slots__ = ("base", "steps", "grad_mode")

    def __init__(self, base, steps, grad_mode):
        self.base, self.steps, self.grad_mode = base, steps, grad_mode


class ViewFunction(Function):
    """A Function whose output may share its input's memory: reshape, permute, expand, indexing.

    `apply` runs the op as any Function, then checks whether the output really is a view (a
    reshape of a transposed array copies, advanced indexing copies) and, if so, records it."""

    _apply_untracked = Function.__dict__["apply"]  # Function.apply, bound to the subclass

    @classmethod
    def apply(cls, x, **attrs):
        out = cls._apply_untracked(x, **attrs)
        if _memory_owner(out.data) == _memory_owner(x.data):
            track_view(out, x, cls, attrs)
        return out


def track_view(view, source, cls, attrs):
    """Make `view` (the output of cls(source, **attrs)) a view of source's base."""
    info = source._view
    base, steps = (source, ()) if info is None else (info.base, info.steps)
    view._version = base._version  # one counter per storage
    # a view of a view made under no_grad counts as made under no_grad, as in PyTorch
    grad_mode = is_grad_enabled() and (info is None or info.grad_mode)
    view._view = ViewInfo(base, steps + ((cls, attrs),), grad_mode)
    if grad_mode:  # only these can need their history replayed after a write
        if base._views is None:
            base._views = weakref.WeakSet()
        base._views.add(view)


def replay(tensor, steps):
    """Apply a view's steps to `tensor` (of the base's shape): the same view of another tensor."""
    for cls, attrs in steps:
        tensor = cls._apply_untracked(tensor, **attrs)
    return tensor


def seen_positions(base_data, steps):
    """Flat indices of the base elements that the view sees: replay the view on their numbers."""
    xp = function_module.backend.xp_of(base_data)
    numbers = xp.arange(math.prod(base_data.shape)).reshape(base_data.shape)
    with no_grad():
        return replay(function_module.Tensor._make(numbers), steps).data


class CopySlices(Function):
    """base_new = base_old, except at the view's places, where it is r (the in-place op's result).

    d base_old = g * keep   (keep = 0 at the view's places, 1 elsewhere: those values were replaced)
    d r        = replay(g)  (the view's part of g)
    The values are already in the base's memory (written through the view); forward only records."""

    def forward(self, base, result, steps):
        return base

    def backward(self, g):
        steps = self.attrs["steps"]
        d_base = d_result = None
        if self.needs_input_grad[0]:
            shape, dtype = self.input_meta[0]
            keep = self.xp.ones(math.prod(shape), dtype=dtype)
            keep[seen_positions(g.data, steps).reshape(-1)] = 0
            d_base = g * function_module.Tensor._make(keep.reshape(shape))
        if self.needs_input_grad[1]:
            d_result = replay(g, steps)
        return d_base, d_result


def rebase_history(tensor, result):
    """`tensor`'s memory now holds `result`'s values (a recorded in-place op): rewire the graph.

    Not a view: tensor simply becomes result (its grad_fn is the in-place op's node).
    A view: its base becomes CopySlices(base_old, result). Either way, every live view of the
    base then gets the view of the new base as its history."""
    info = tensor._view
    if info is None:
        base = tensor
        base.grad_fn, base._output_index = result.grad_fn, result._output_index
    else:
        base = info.base
        base.grad_fn, base._output_index = CopySlices.apply(base, result, steps=info.steps).grad_fn, 0
    base.requires_grad = True
    if base._views:
        for view in list(base._views):
            if view._view.grad_mode:
                fresh = replay(base, view._view.steps)
                view.grad_fn, view._output_index = fresh.grad_fn, fresh._output_index
                view.requires_grad = fresh.requires_grad
