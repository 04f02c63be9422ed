"""The graph walk: reverse-mode differentiation over the Function nodes.

1. Topological order. An iterative depth-first search from the output nodes (no recursion, so a
   chain of 100,000 ops is fine) gives every node after all the nodes that consume its outputs.
2. Walk that order. Each node receives the summed gradient of each of its outputs, runs
   `backward` (grad mode on only when create_graph=True), and passes one gradient per input along
   its edges: to the producing node's buffer, or into a leaf tensor's `.grad`.
3. Free. Unless retain_graph, each node drops its saved arrays as soon as its backward has run.
"""
import functools
import threading
import traceback
import warnings
import weakref

from tinygrad_bn.autograd import function as _function
from tinygrad_bn.autograd.grad_mode import set_grad_enabled


class _AnomalyState(threading.local):
    enabled = False  # anomaly mode: the one switch besides grad mode, off by default, per thread
    check_nan = True


_anomaly = _AnomalyState()


def anomaly_mode_enabled():
    """Is anomaly mode on (tg.autograd.detect_anomaly / set_detect_anomaly)?

    When it is, every recorded node keeps the traceback of the forward call that created it
    (Function.apply), and the graph walk checks each gradient a backward returns: the first one
    with a nan or an inf raises, naming the node and showing where the node was made in forward.
    It also turns the two repairs of a broken backward contract into errors: a gradient of another
    dtype than its input (otherwise cast, as PyTorch does) and None for an input that requires
    grad (otherwise warned). Off, it costs one attribute read per node."""
    return _anomaly.enabled


class set_detect_anomaly:
    """set_detect_anomaly(True) turns anomaly mode on (off with False); also a context manager
    that restores the previous setting on exit. `check_nan=False` keeps the tracebacks but skips
    the nan/inf check of every gradient."""

    def __init__(self, mode, check_nan=True):
        if not isinstance(mode, bool):
            raise TypeError(f"set_detect_anomaly: mode must be a bool, got {mode!r}")
        self.prev = (_anomaly.enabled, _anomaly.check_nan)
        _anomaly.enabled, _anomaly.check_nan = mode, bool(check_nan)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _anomaly.enabled, _anomaly.check_nan = self.prev
        return False


class detect_anomaly:
    """`with detect_anomaly():` (or `@detect_anomaly()`): anomaly mode on inside, restored after.

    Slow (a traceback per node, an isfinite per gradient): for finding where a nan comes from."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan
        self.prev = []

    def __enter__(self):
        self.prev.append((_anomaly.enabled, _anomaly.check_nan))
        _anomaly.enabled, _anomaly.check_nan = True, bool(self.check_nan)
        return self

    def __exit__(self, *exc):
        _anomaly.enabled, _anomaly.check_nan = self.prev.pop()
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)
        return wrapper


def _check_finite(node, grads):
    """Anomaly mode: the first gradient with a nan or inf raises, with the node's forward traceback."""
    for i, grad in enumerate(grads):
        if grad is None or grad.dtype.kind != "f":
            continue
        data = grad.data
        xp = node.xp or _function.backend.xp_of(data)
        if bool(xp.isfinite(data).all()):
            continue
        bad = "nan" if bool(xp.isnan(data).any()) else "inf"
        trace = node.creation_trace
        where = ("".join(traceback.format_list(trace)) if trace else
                 "  (not recorded: the node was made while anomaly mode was off)\n")
        raise RuntimeError(
            f"Function '{node.name}' returned {bad} values in its {i}th output (the gradient of "
            f"input {i}, {_input_name(node, i)!r}, shape {list(grad.shape)}).\n"
            f"The node was created in forward at (most recent call last):\n{where}")


def topological_order(root_nodes, oldest_seq=-1):
    """Nodes reachable from root_nodes, each before every node it depends on (consumers first).

    Nodes older than `oldest_seq` are not entered: a node's inputs are always older than the
    node, so when every wanted input is newer, nothing older can lead to one."""
    visited = set()
    post_order = []
    for root in root_nodes:
        if root in visited:
            continue
        visited.add(root)
        stack = [(root, iter(root.next_edges))]
        while stack:
            node, edges = stack[-1]
            for edge in edges:
                if edge is not None and edge[0] is not None and edge[0] not in visited \
                        and edge[0].seq >= oldest_seq:
                    visited.add(edge[0])
                    stack.append((edge[0], iter(edge[0].next_edges)))
                    break
            else:  # all parents done: the node goes after them in post-order
                stack.pop()
                post_order.append(node)
    post_order.reverse()
    return post_order


def _add(a, b, create_graph):
    """Sum two gradient Tensors: a graph op when differentiating gradients, raw arrays otherwise."""
    if create_graph:
        return a + b
    from tinygrad_bn.tensor import Tensor
    return Tensor._make(a.data + b.data)


def _run_hooks(hooks, grad):
    for hook in hooks:
        result = hook(grad)
        if result is not None:
            grad = result
    return grad


def _memory_owner(array):
    """The array whose memory `array` uses (itself, or the base of a view), as an id."""
    inner = getattr(array, "_a", array)  # fakegpu wraps a NumPy array
    while getattr(inner, "base", None) is not None:
        inner = inner.base
    return id(inner)


def _accumulate_leaf(leaf, grad, create_graph, handed_out):
    """leaf.grad += grad, after the leaf's hooks.

    The first gradient becomes leaf.grad without a copy, unless its memory was already handed to
    another leaf in this walk or belongs to a gradient the caller passed in (`handed_out`): a
    pass-through backward (add, reshape) may give one array to several leaves, and an in-place
    update of one `.grad` must not change another."""
    if leaf._hooks:
        grad = _run_hooks(leaf._hooks, grad)
    if leaf.grad is None:
        if not create_graph:
            from tinygrad_bn.tensor import Tensor
            owner = _memory_owner(grad.data)
            grad = Tensor._make(grad.data.copy() if owner in handed_out else grad.data)
            handed_out.add(owner)
        leaf.grad = grad
    else:
        leaf.grad = _add(leaf.grad, grad, create_graph)


def run_backward(roots, root_grads, retain_graph=False, create_graph=False, inputs=None,
                 allow_unused=False):
    """Backpropagate root_grads from roots.

    With inputs=None, gradients accumulate into every reachable leaf's `.grad` (Tensor.backward).
    With a list of inputs, their gradients are returned instead and no `.grad` is touched
    (autograd.grad); only the part of the graph that leads to an input is run.
    """
    from tinygrad_bn.tensor import Tensor

    # Roots that are leaves themselves receive their gradient directly.
    buffers = {}  # node -> [grad Tensor or None per output]
    root_nodes = []
    # memory already given to a leaf's .grad, or owned by the caller: never given out twice
    handed_out = {_memory_owner(g.data) for g in root_grads}
    captured = {} if inputs is not None else None
    got_none = {}  # input index -> (node, i): a backward returned None on the way to that input
    input_ids = {id(t): i for i, t in enumerate(inputs)} if inputs is not None else None
    for root, grad in zip(roots, root_grads):
        node = root.grad_fn
        if node is None:
            if inputs is None:
                _accumulate_leaf(root, grad, create_graph, handed_out)
            elif id(root) in input_ids:
                i = input_ids[id(root)]
                captured[i] = grad if i not in captured else _add(captured[i], grad, create_graph)
            continue
        slot = buffers.setdefault(node, [None] * len(node.output_meta))
        idx = root._output_index
        slot[idx] = grad if slot[idx] is None else _add(slot[idx], grad, create_graph)
        root_nodes.append(node)

    oldest_seq = -1
    if inputs is not None and all(t.grad_fn is not None for t in inputs):
        oldest_seq = min(t.grad_fn.seq for t in inputs)
    order = topological_order(root_nodes, oldest_seq)

    # For autograd.grad: which non-leaf inputs are outputs of which nodes, and which nodes lead to
    # an input at all (walk parents-first so a node sees its parents' verdicts).
    targets = {}
    needed = None
    if inputs is not None:
        for i, t in enumerate(inputs):
            if t.grad_fn is not None:
                targets.setdefault(t.grad_fn, []).append((t._output_index, i))
        needed = set()
        for node in reversed(order):
            for edge in node.next_edges:
                if edge is None:
                    continue
                if (edge[0] is None and id(edge[1]) in input_ids) or \
                        (edge[0] is not None and (edge[0] in needed or edge[0] in targets)):
                    needed.add(node)
                    break

    with set_grad_enabled(create_graph):
        for node in order:
            slot = buffers.pop(node, None)
            if slot is None:
                continue
            # hooks and retain_grad() of non-leaf tensors see the node's complete output gradients
            if node._tensor_hooks:
                for idx, hooks in node._tensor_hooks.items():
                    if slot[idx] is not None:
                        slot[idx] = _run_hooks(hooks, slot[idx])
            if node._retained:
                for idx, ref in node._retained.items():
                    tensor = ref()
                    if tensor is not None and slot[idx] is not None:
                        g = slot[idx] if create_graph else Tensor._make(slot[idx].data)
                        tensor.grad = g if tensor.grad is None else _add(tensor.grad, g, create_graph)
            if node in targets:
                for idx, i in targets[node]:
                    if slot[idx] is not None:
                        captured[i] = slot[idx] if i not in captured else _add(captured[i], slot[idx], create_graph)
            if needed is not None and node not in needed:
                continue  # not run, so not freed: it may belong to a graph someone else owns
            if all(g is None for g in slot):
                continue
            grads_out = _complete(node, slot)
            grads_in = node.backward(*grads_out)
            if not isinstance(grads_in, tuple):
                grads_in = (grads_in,)
            if not retain_graph:
                node.release()
            grads_in = _check_gradients(node, grads_in)
            if _anomaly.enabled and _anomaly.check_nan:
                _check_finite(node, grads_in)
            for i, (edge, grad) in enumerate(zip(node.next_edges, grads_in)):
                if edge is None:
                    continue
                if grad is None:
                    if captured is not None and edge[0] is None and id(edge[1]) in input_ids:
                        got_none.setdefault(input_ids[id(edge[1])], (node, i))
                    continue
                parent, where = edge
                if parent is None:  # a leaf
                    if inputs is None:
                        _accumulate_leaf(where, grad, create_graph, handed_out)
                    elif id(where) in input_ids:
                        i = input_ids[id(where)]
                        captured[i] = grad if i not in captured else _add(captured[i], grad, create_graph)
                    continue
                pslot = buffers.get(parent)
                if pslot is None:
                    pslot = buffers[parent] = [None] * len(parent.output_meta)
                pslot[where] = grad if pslot[where] is None else _add(pslot[where], grad, create_graph)

    if inputs is None:
        return None
    result = []
    for i, t in enumerate(inputs):
        if i not in captured and not allow_unused and i in got_none:
            node, k = got_none[i]
            raise RuntimeError(
                f"autograd.grad: input {i} (shape {list(t.shape)}) got no gradient: it is used in "
                f"the graph, but {type(node).__name__}.backward returned None as the gradient of "
                f"its input {k} ({_input_name(node, k)!r}). Return a gradient (zeros if it really "
                f"is zero), or pass allow_unused=True to get None for it")
        if i not in captured and not allow_unused:
            raise RuntimeError(
                f"autograd.grad: input {i} (shape {list(t.shape)}) was not used in the graph of "
                f"the outputs; pass allow_unused=True to get None for it")
        result.append(captured.get(i))
    return tuple(result)


def _complete(node, slot):
    """Gradients for all outputs of a node; outputs that got none get zeros."""
    if len(slot) == 1:
        return slot
    from tinygrad_bn.tensor import Tensor
    out = []
    for g, (shape, dtype) in zip(slot, node.output_meta):
        if g is None:
            from tinygrad_bn import backend
            xp = backend.array_module(node.device)
            g = Tensor._make(xp.zeros(shape, dtype=dtype))
        out.append(g)
    return out


def _check_gradients(node, grads):
    """A backward must return one Tensor gradient per input, each of its input's shape; one of
    another dtype is cast to the input's (PyTorch does the same), None for an input that requires
    grad is warned about. Returns the (possibly cast) gradients."""
    if len(grads) != len(node.next_edges):
        raise RuntimeError(f"function {node.name} returned an incorrect number of gradients "
                           f"(expected {len(node.next_edges)}, got {len(grads)})")
    cast = None
    for i, (grad, (shape, dtype), edge) in enumerate(zip(grads, node.input_meta, node.next_edges)):
        if grad is None:
            if edge is not None and node._warn_none_gradients:
                _none_gradient(node, i)
            continue
        if type(grad) is not _tensor_class():
            from tinygrad_bn.tensor import Tensor
            if not isinstance(grad, Tensor):
                raise TypeError(f"function {node.name} returned a {type(grad).__name__} as the "
                                f"gradient of input {i} ({_input_name(node, i)!r}); backward must "
                                f"return Tensors (write it with Tensor ops, or wrap an array with "
                                f"Tensor._make)")
        if tuple(grad.shape) != tuple(shape):
            raise RuntimeError(f"function {node.name} returned an invalid gradient at index {i} - "
                               f"got {list(grad.shape)} but expected shape {list(shape)}")
        if grad.dtype != dtype and edge is not None:
            if anomaly_mode_enabled():
                raise RuntimeError(f"function {node.name} returned an invalid gradient at index {i} "
                                   f"({_input_name(node, i)!r}) - expected dtype {dtype} but got "
                                   f"{grad.dtype}")
            cast = list(grads) if cast is None else cast
            cast[i] = grad.to(dtype) if grad.requires_grad else \
                _tensor_class()._make(grad.data.astype(dtype))
    return grads if cast is None else tuple(cast)


def _tensor_class():
    return _function.Tensor


def _input_name(node, i):
    return _function._input_name(type(node), i)


def _none_gradient(node, i):
    """A backward returned None for an input that requires grad: a forgotten gradient, usually."""
    name = _input_name(node, i)
    message = (f"function {node.name} returned None as the gradient of input {i} ({name!r}), which "
               f"requires grad, so {name!r} gets no gradient from this node. Return a gradient "
               f"(zeros if it really is zero); check self.needs_input_grad[{i}] to skip work.")
    if anomaly_mode_enabled():
        raise RuntimeError(message)
    warnings.warn(message, stacklevel=4)


def register_tensor_hook(tensor, hook):
    """Attach a gradient hook; for a non-leaf tensor it lives on the node that produced it."""
    node = tensor.grad_fn
    if node is None:
        if not tensor._hooks:
            tensor._hooks = []
        tensor._hooks.append(hook)
        return _Handle(tensor._hooks, hook)
    if node._tensor_hooks is None:
        node._tensor_hooks = {}
    hooks = node._tensor_hooks.setdefault(tensor._output_index, [])
    hooks.append(hook)
    return _Handle(hooks, hook)


def retain_grad(tensor):
    node = tensor.grad_fn
    if node._retained is None:
        node._retained = {}
    node._retained[tensor._output_index] = weakref.ref(tensor)


class _Handle:
    """Returned by register_hook; `.remove()` detaches the hook."""

    def __init__(self, hooks, hook):
        self.hooks, self.hook = hooks, hook

    def remove(self):
        if self.hook in self.hooks:
            self.hooks.remove(self.hook)


def is_anomaly_enabled():
    """torch.is_anomaly_enabled: is anomaly mode on in this thread?"""
    return _anomaly.enabled
