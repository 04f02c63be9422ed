"""Drawings of the backward and forward computation graph, as Graphviz DOT.

    from tinygrad_bn.viz import draw_graph
    g = draw_graph(loss, params=model)          # a graphviz.Digraph
    g.render("resnet", format="svg")            # or render_graph(g, "resnet.svg"); inline in Jupyter

How it works, in four steps:

1. Walk. A breadth-first walk from the outputs' `grad_fn` along `next_edges` (a queue, no
   recursion) finds the ops, nearest to the outputs first, and the leaf tensors they consume.
   `max_nodes` keeps the first N ops of that walk.
2. Group. Every op carries `module_path`, the qualified name of the innermost nn.Module that ran
   it. Each drawn item gets a *representative*: the op itself, a collapsed module (max_depth), or
   a fold of repeated blocks (fold_repeats). Edges are drawn between representatives.
3. Nodes and edges. Ops are labelled with their `name` and the short attributes of the call;
   leaves with their parameter name, shape, dtype and device; saved arrays and gradient
   statistics on request. Colors come from `legend.STYLES`.
4. Clusters. Items are placed in nested Graphviz clusters named "cluster_<module path>", built
   deepest first (no recursion either).
"""
import collections
import math
import os
import subprocess

import numpy as np

from tinygrad_bn import backend
from tinygrad_bn.tensor import Tensor
from tinygrad_bn.viz import legend as _legend
from tinygrad_bn.viz import render as _render

INSTALL_HINT = ("tinygrad_bn.viz needs the Python package 'graphviz': pip install 'tinygrad_bn[viz]' "
                "(or pip install graphviz). Rendering pictures also needs the Graphviz program "
                "`dot` (apt-get install graphviz) or `pip install graphviz-pure`; without either, "
                "graphs are still built and written as .dot text.")

#: attributes shown first, in this order; any other short attribute follows in call order
KEY_ATTRS = ("kernel_size", "stride", "padding", "dilation", "groups", "output_padding", "eps",
             "momentum", "training", "p", "dim", "dims", "keepdim", "negative_slope", "num_groups",
             "shape")
#: attributes never shown: internal bookkeeping of the op, not something a reader set
HIDDEN_ATTRS = {"node_name", "group_shape", "axes", "param_shape", "param_group_shape", "has_weight",
                "has_bias", "center", "mask_shape", "return_indices"}
_MAX_VALUE_CHARS = 32
_MAX_LINE_CHARS = 30


# ---- graphviz, imported lazily --------------------------------------------------------------
_graph_class = None


def _graphviz():
    try:
        import graphviz
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return graphviz


def graph_class():
    """The graphviz.Digraph subclass that draw_graph returns (made on first use, so that
    importing tinygrad_bn.viz does not need the graphviz package)."""
    global _graph_class
    if _graph_class is not None:
        return _graph_class
    graphviz = _graphviz()

    class Graph(graphviz.Digraph):
        """A graphviz.Digraph whose render() and Jupyter display never fail for want of `dot`:
        they fall back to graphviz-pure, else write the DOT file and print how to render it."""

        def render(self, filename=None, directory=None, view=False, cleanup=False, format=None,
                   **kwargs):
            """graphviz.Digraph.render; without `dot`: graphviz-pure, else the DOT file and a
            one-line hint (returns the path of what was written)."""
            try:
                return super().render(filename=filename, directory=directory, view=view,
                                      cleanup=cleanup, format=format, **kwargs)
            except graphviz.ExecutableNotFound:
                pass
            outfile = kwargs.get("outfile")
            if filename is None and outfile is not None:
                filename = os.path.splitext(os.fspath(outfile))[0] + ".gv"
            dot_path = self.save(filename=filename, directory=directory)
            fmt = (format or (os.path.splitext(os.fspath(outfile))[1][1:] if outfile else "")
                   or self.format or "svg")
            out_path = os.fspath(outfile) if outfile is not None else f"{dot_path}.{fmt}"
            done = _render.run_renderer(dot_path, out_path, fmt)
            if done is not None:
                return done
            if not kwargs.get("quiet", False):
                print(_render.hint(dot_path, out_path, fmt))
            return dot_path

        def _repr_mimebundle_(self, include=None, exclude=None, **kwargs):
            try:
                return super()._repr_mimebundle_(include, exclude, **kwargs)
            except graphviz.ExecutableNotFound:
                pass
            pure = _render.find_graphviz_pure()
            if pure is not None:
                result = subprocess.run([pure, "-Tsvg"], input=self.source, capture_output=True,
                                        text=True)
                if result.returncode == 0:
                    return {"image/svg+xml": result.stdout}
            return {"text/plain": "Graphviz 'dot' was not found: install it (apt-get install "
                                  "graphviz) or pip install graphviz-pure to see this graph; its "
                                  "DOT text is in `.source`."}

    _graph_class = Graph
    return Graph



# ---- formatting -----------------------------------------------------------------------------
def _fmt_value(value, depth=0):
    """A short text for an attribute value, or None when it is not worth showing (arrays,
    tensors, long things, None)."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.4g}"
    if isinstance(value, str):
        return value if len(value) <= _MAX_VALUE_CHARS else None
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, (tuple, list)) and depth < 2 and len(value) <= 6:
        parts = [_fmt_value(v, depth + 1) for v in value]
        if any(p is None for p in parts):
            return None
        text = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
        return text if len(text) <= _MAX_VALUE_CHARS else None
    return None


def attr_items(node):
    """[(name, text)] of the attributes worth showing for an op: scalars, short tuples."""
    attrs = node.attrs or {}
    names = [k for k in KEY_ATTRS if k in attrs]
    names += [k for k in attrs if k not in KEY_ATTRS]
    items = []
    for k in names:
        if k in HIDDEN_ATTRS or k.startswith("_"):
            continue
        text = _fmt_value(attrs[k])
        if text is not None:
            items.append((k, text))
    return items


def _attr_lines(node):
    """Attributes as `name=value` text, packed a few to a line."""
    lines, line = [], ""
    for k, v in attr_items(node):
        part = f"{k}={v}"
        if line and len(line) + 1 + len(part) > _MAX_LINE_CHARS:
            lines.append(line)
            line = part
        else:
            line = f"{line} {part}" if line else part
    if line:
        lines.append(line)
    return lines


def _shape(shape):
    return str(tuple(int(s) for s in shape))


def _label(lines):
    """A plain Graphviz label from text lines (DOT's \\n between them; quotes escaped)."""
    return "\\n".join(str(line).replace("\\", "\\\\").replace('"', '\\"') for line in lines)


def _forward_name(node):
    name = node.name
    return name[:-len("Backward")] if name.endswith("Backward") and len(name) > 8 else name


# ---- gradient statistics --------------------------------------------------------------------
GradStats = collections.namedtuple("GradStats", "norm min max n_nan n_inf size")
GradStats.__doc__ = """Statistics of one gradient array: L2 norm, min, max (of its finite entries),
the number of NaN and of Inf entries, and of all entries. `finite` is False when any is NaN/Inf."""
GradStats.finite = property(lambda self: self.n_nan == 0 and self.n_inf == 0)


def _host(x):
    return backend.to_numpy(x).item() if backend.is_array(x) else x


def grad_stats(array):
    """GradStats of a gradient array (NumPy, CuPy or fakegpu; computed where the array lives,
    only the scalars come to the host)."""
    if isinstance(array, Tensor):
        array = array.data
    size = int(array.size)
    if size == 0:
        return GradStats(0.0, math.nan, math.nan, 0, 0, 0)
    xp = backend.xp_of(array)
    a = array.astype(xp.float64)
    n_nan = int(_host(xp.isnan(a).sum()))
    n_inf = int(_host(xp.isinf(a).sum()))
    if n_nan or n_inf:  # statistics of the finite entries; the counts say what else is there
        finite = xp.isfinite(a)
        if not bool(_host(finite.any())):
            return GradStats(math.nan, math.nan, math.nan, n_nan, n_inf, size)
        a = a[finite]
    norm = float(_host(xp.sqrt((a * a).sum())))
    return GradStats(norm, float(_host(a.min())), float(_host(a.max())), n_nan, n_inf, size)


def _stats_lines(stats, prefix="grad"):
    lines = [f"{prefix} norm={stats.norm:.3g}", f"min={stats.min:.3g} max={stats.max:.3g}"]
    if not stats.finite:
        bad = []
        if stats.n_nan:
            bad.append(f"{stats.n_nan} NaN")
        if stats.n_inf:
            bad.append(f"{stats.n_inf} Inf")
        lines.append("!! " + ", ".join(bad) + f" of {stats.size}")
    return lines


class GradRecorder:
    """Gradient statistics of every op output, recorded by hooks during backward.

    Made by `record_grad_stats(outputs)` *before* backward; pass it to
    `draw_graph(..., show_grads=recorder)` after backward. `stats[(node, output_index)]` is a
    GradStats. The hooks only read gradients; `remove()` detaches them."""

    def __init__(self):
        self.stats = {}
        self._handles = []

    def get(self, node, index=0):
        return self.stats.get((node, index))

    def remove(self):
        for h in self._handles:
            h.remove()
        self._handles = []

    def __len__(self):
        return len(self.stats)

    def __repr__(self):
        bad = sum(1 for s in self.stats.values() if not s.finite)
        return f"<GradRecorder: {len(self.stats)} gradients recorded, {bad} with NaN/Inf>"


def record_grad_stats(outputs):
    """Register hooks on every op output reachable from `outputs`, so that the following backward
    records each op's output-gradient statistics (norm, min, max, NaN/Inf counts). Returns a
    GradRecorder to pass as `draw_graph(..., show_grads=recorder)`."""
    recorder = GradRecorder()
    empty = np.empty(0, dtype=np.float32)
    for node in _walk(_as_tensors(outputs), None)[0]:
        for index in range(len(node.output_meta)):
            def hook(grad, node=node, index=index):
                recorder.stats[(node, index)] = grad_stats(grad.data)
            proxy = Tensor._make(empty, node, index)  # stands for the op's output: same (node, index)
            recorder._handles.append(proxy.register_hook(hook))
    return recorder


# ---- step 1: the walk -----------------------------------------------------------------------
def _as_tensors(outputs):
    if isinstance(outputs, Tensor):
        return [outputs]
    if isinstance(outputs, dict):
        outputs = list(outputs.values())
    try:
        tensors = list(outputs)
    except TypeError:
        tensors = None
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"draw_graph: outputs must be a Tensor or a non-empty sequence of Tensors, "
                        f"got {type(outputs).__name__}")
    return tensors


def _walk(outputs, max_nodes):
    """(ops nearest-first, up to max_nodes; number of ops reachable in all). Breadth first."""
    seen = set()
    queue = collections.deque()
    for t in outputs:
        if t.grad_fn is not None and t.grad_fn not in seen:
            seen.add(t.grad_fn)
            queue.append(t.grad_fn)
    order = []
    while queue:
        node = queue.popleft()
        if max_nodes is None or len(order) < max_nodes:
            order.append(node)
        for edge in node.next_edges:
            if edge is not None and edge[0] is not None and edge[0] not in seen:
                seen.add(edge[0])
                queue.append(edge[0])
    return order, len(seen)


def _param_names(params):
    """(id(tensor) -> name, module path -> module type name) from a Module, dict or pairs."""
    if params is None:
        return {}, {}
    types = {}
    if hasattr(params, "named_parameters") and callable(params.named_parameters):
        if hasattr(params, "named_modules"):
            types = {path: type(m).__name__ for path, m in params.named_modules()}
        pairs = params.named_parameters()
    elif isinstance(params, dict):
        pairs = params.items()
    else:
        pairs = params
    names = {}
    for name, t in pairs:
        if not isinstance(t, Tensor):
            raise TypeError(f"draw_graph: params must map names to Tensors; {name!r} is a "
                            f"{type(t).__name__}")
        names.setdefault(id(t), str(name))
    return names, types


def _parts(path):
    return path.split(".") if path else []


def _prefix(path, depth):
    return ".".join(_parts(path)[:depth])


def _under(path, scope):
    return path == scope or path.startswith(scope + ".")


# ---- step 2: grouping -----------------------------------------------------------------------
class _Group:
    """A drawn node standing for several ops: a collapsed module or a fold of repeated blocks."""

    def __init__(self, kind, key, scopes, cluster):
        self.kind, self.key, self.scopes, self.cluster = kind, key, scopes, cluster
        self.ops = []
        self.label = []

    def covers(self, path):
        return any(_under(path, s) for s in self.scopes)


def _block_signature(ops, block, names):
    """What makes two blocks 'identical': for each op in run order, its name, its module path
    inside the block, its shown attributes, output shapes, and where each input comes from (an
    op of the block by position, a parameter of the block by relative name, or outside)."""
    index = {op: k for k, op in enumerate(ops)}
    cut = len(block) + 1
    sig = []
    for op in ops:
        inputs = []
        for edge in op.next_edges:
            if edge is None:
                inputs.append(None)
            elif edge[0] is None:
                name = names.get(id(edge[1]), "")
                rel = name[cut:] if name.startswith(block + ".") else "outside"
                inputs.append(("leaf", rel, tuple(edge[1].shape)))
            elif edge[0] in index:
                inputs.append(("op", index[edge[0]], edge[1]))
            else:
                inputs.append(("outside",))
        path = op.module_path or ""
        sig.append((op.name, path[cut:], tuple(attr_items(op)),
                    tuple(tuple(m[0]) for m in op.output_meta), tuple(inputs)))
    return tuple(sig)


def _find_folds(order, names, min_run):
    """block path -> fold key. Rule: among the children of one module that are named 0, 1, 2, ...
    (nn.Sequential, nn.ModuleList), a run of >= min_run consecutive children whose op structure
    is identical (_block_signature) keeps its first block and folds the others into one node.
    Outer modules are looked at first; a folded block's insides are not looked at again."""
    subtree = collections.defaultdict(list)
    children = collections.defaultdict(set)
    for op in sorted(order, key=lambda n: n.seq):
        parts = _parts(op.module_path or "")
        for i in range(1, len(parts) + 1):
            subtree[".".join(parts[:i])].append(op)
            children[".".join(parts[:i - 1])].add(parts[i - 1])
    folded = {}    # block path -> key
    folds = {}     # key -> (parent, [block indices])
    for parent in sorted(children, key=lambda p: len(_parts(p))):
        parts = _parts(parent)
        if any(".".join(parts[:i]) in folded for i in range(1, len(parts) + 1)):
            continue
        numbered = sorted(int(c) for c in children[parent] if c.isdigit())
        if len(numbered) < min_run:
            continue
        block_of = (lambda i: f"{parent}.{i}") if parent else str
        sigs = {i: _block_signature(subtree[block_of(i)], block_of(i), names) for i in numbered}
        runs, run = [], [numbered[0]]
        for i in numbered[1:]:
            if i == run[-1] + 1 and sigs[i] == sigs[run[0]]:
                run.append(i)
            else:
                runs.append(run)
                run = [i]
        runs.append(run)
        for run in runs:
            if len(run) >= min_run:
                key = ("fold", parent, run[1])
                folds[key] = (parent, run[1:], len(sigs[run[0]]))
                for i in run[1:]:
                    folded[block_of(i)] = key
    return folded, folds


# ---- the drawing ----------------------------------------------------------------------------
class _Drawing:
    """Collects nodes (per cluster) and edges, then emits a Graph."""

    def __init__(self):
        self.nodes = collections.defaultdict(list)   # cluster path -> [(id, attrs)]
        self.node_ids = set()
        self.edges = {}                                # (tail, head) -> attrs, insertion ordered
        self.kinds = set()

    def node(self, node_id, cluster, kind, lines, problem=False, **extra):
        if node_id in self.node_ids:
            return node_id
        self.node_ids.add(node_id)
        attrs = dict(_legend.STYLES[kind])
        if problem:
            attrs.update(_legend.STYLES["problem"])
            self.kinds.add("problem")
        attrs.update(extra)
        attrs["label"] = _label(lines)
        self.kinds.add(kind)
        self.nodes[cluster].append((node_id, attrs))
        return node_id

    def edge(self, tail, head, **attrs):
        if tail != head and (tail, head) not in self.edges:
            self.edges[(tail, head)] = attrs

    def build(self, title, rankdir, cluster_labels, show_legend):
        Graph = graph_class()
        g = Graph(name="tinygrad_bn", format="svg")
        g.attr(rankdir=rankdir, compound="true", newrank="true", fontname="Helvetica")
        if title:
            g.attr(label=_label([title]), labelloc="t", fontsize="16")
        g.attr("node", shape="box", style="filled,rounded", fontname="Helvetica", fontsize="10",
               height="0.2", margin="0.08,0.04")
        g.attr("edge", arrowsize="0.6", color="gray30")
        graphviz = _graphviz()
        # every cluster's ancestors exist too; fill deepest first, then nest each in its parent
        paths = {}  # cluster paths in the order they were first used (a dict keeps it)
        for path in self.nodes:
            parts = _parts(path)
            for i in range(1, len(parts) + 1):
                paths[".".join(parts[:i])] = None
        clusters = {}
        for path in paths:
            c = graphviz.Digraph(name=f"cluster_{path}")
            c.attr(label=cluster_labels.get(path, path), style="rounded", color="gray55",
                   fontcolor="gray25", fontname="Helvetica", fontsize="10", labeljust="l")
            clusters[path] = c
        for path, nodes in self.nodes.items():
            target = clusters[path] if path else g
            for node_id, attrs in nodes:
                target.node(node_id, **attrs)
        for path in sorted(paths, key=lambda p: -len(_parts(p))):
            parent = _prefix(path, len(_parts(path)) - 1)
            (clusters[parent] if parent else g).subgraph(clusters[path])
        for (tail, head), attrs in self.edges.items():
            g.edge(tail, head, **attrs)
        if show_legend:
            legend = graphviz.Digraph(name="cluster_legend")
            legend.attr(label="", style="rounded", color="gray70")
            legend.node("legend", label=_legend.legend_label(self.kinds), shape="plaintext",
                        style="", fontname="Helvetica", fontsize="9")
            g.subgraph(legend)
        return g


def draw_graph(outputs, params=None, direction="backward", show_saved=False, show_grads=False,
               max_depth=None, max_nodes=None, rankdir="TB", fold_repeats=False, title=None,
               show_legend=True):
    """Draw the graph that produced `outputs` (a Tensor or a list of Tensors) as a graphviz.Digraph.

    params:       a Module (its named_parameters() name the leaves, its module types label the
                  clusters) or a dict name -> Tensor, or (name, tensor) pairs.
    direction:    "backward": one node per op (its grad_fn name: MulBackward, ...), edges from each
                  input to the op that consumes it. "forward": ops in the order they ran (#1, #2,
                  ...) with the tensors between them as nodes.
    show_saved:   add each op's saved-for-backward arrays (name and shape). Backward frees them:
                  draw before backward, or backward with retain_graph=True.
    show_grads:   True: gradient norm/min/max of leaves (their .grad) and of non-leaf tensors that
                  called retain_grad(); a GradRecorder from record_grad_stats(): also every op's
                  output gradient. NaN/Inf gradients are drawn in red.
    max_depth:    keep module clusters max_depth levels deep; each deeper module becomes one node
                  "path (Type) / N ops" (0: every top-level module is one node).
    max_nodes:    draw at most this many ops (those nearest to the outputs) and a note node.
    fold_repeats: True (or a minimum run length >= 2): runs of identical numbered blocks
                  (layer1.0, layer1.1, ...) keep their first block; the rest become one node
                  "x N more identical blocks".
    rankdir:      "TB", "LR", "BT" or "RL".
    """
    if direction not in ("backward", "forward"):
        raise ValueError(f"draw_graph: direction must be 'backward' or 'forward', got {direction!r}")
    if rankdir not in ("TB", "LR", "BT", "RL"):
        raise ValueError(f"draw_graph: rankdir must be one of 'TB', 'LR', 'BT', 'RL', got {rankdir!r}")
    if max_depth is not None and (type(max_depth) is not int or max_depth < 0):
        raise ValueError(f"draw_graph: max_depth must be None or an int >= 0, got {max_depth!r}")
    if max_nodes is not None and (type(max_nodes) is not int or max_nodes < 1):
        raise ValueError(f"draw_graph: max_nodes must be None or an int >= 1, got {max_nodes!r}")
    if fold_repeats is True:
        min_run = 2
    elif fold_repeats is False or fold_repeats is None:
        min_run = None
    elif type(fold_repeats) is int and fold_repeats >= 2:
        min_run = fold_repeats
    else:
        raise ValueError(f"draw_graph: fold_repeats must be a bool or an int >= 2, got {fold_repeats!r}")
    _graphviz()  # fail early, with the install hint, when graphviz is missing
    builder = _Builder(_as_tensors(outputs), params, direction == "forward", show_saved,
                       show_grads, max_depth, max_nodes, min_run)
    return builder.draw().build(title, rankdir, builder.cluster_labels(), show_legend)


class _Builder:
    """One drawing: the walk and the grouping in __init__, the nodes and edges in draw()."""

    def __init__(self, outputs, params, forward, show_saved, show_grads, max_depth, max_nodes,
                 min_run):
        self.outputs, self.forward, self.show_saved = outputs, forward, show_saved
        self.max_depth, self.max_nodes = max_depth, max_nodes
        self.recorder = show_grads if isinstance(show_grads, GradRecorder) else None
        self.show_grads = self.recorder is not None or bool(show_grads)
        self.names, self.module_types = _param_names(params)
        # step 1: the walk
        self.order, self.total = _walk(outputs, max_nodes)
        self.kept = set(self.order)
        self.op_paths = set()
        for op in self.order:
            parts = _parts(op.module_path or "")
            for i in range(1, len(parts) + 1):
                self.op_paths.add(".".join(parts[:i]))
        # step 2: representatives
        self.folded, self.folds = _find_folds(self.order, self.names, min_run) if min_run else ({}, {})
        self.groups, self.rep = {}, {}
        self._group_ops()
        self.hidden_leaves = self._hidden_leaves()
        self.d = _Drawing()
        self.run_number = {op: k + 1 for k, op in enumerate(sorted(self.order, key=lambda n: n.seq))}
        self.op_ids, self.leaf_ids, self.tensor_ids = {}, {}, {}
        self.output_keys = {(t.grad_fn, t._output_index) for t in outputs if t.grad_fn is not None}
        self.truncated_id = None

    # ---- step 2: grouping ----------------------------------------------------------------------
    def cluster_of(self, path):
        """The cluster an item of module `path` is drawn in: its path, cut at max_depth."""
        return path if self.max_depth is None else _prefix(path, self.max_depth)

    def type_suffix(self, path):
        return f" ({self.module_types[path]})" if path in self.module_types else ""

    def cluster_labels(self):
        return {p: p + (f": {self.module_types[p]}" if p in self.module_types else "")
                for p in self.op_paths}

    def _group_ops(self):
        """rep[op]: the op itself, or the _Group (fold or collapsed module) that stands for it.
        A fold wins over max_depth when its blocks are at or above the collapsed depth."""
        k = self.max_depth
        for op in self.order:
            path = op.module_path or ""
            parts = _parts(path)
            fold_key = fold_depth = None
            for i in range(1, len(parts) + 1):
                fold_key = self.folded.get(".".join(parts[:i]))
                if fold_key is not None:
                    fold_depth = i
                    break
            collapse = _prefix(path, k + 1) if k is not None and len(parts) > k else None
            if fold_key is not None and (collapse is None or fold_depth <= k + 1):
                key = fold_key
                if key not in self.groups:
                    parent, blocks, _ = self.folds[key]
                    scopes = [f"{parent}.{i}" if parent else str(i) for i in blocks]
                    self.groups[key] = _Group("fold", key, scopes, self.cluster_of(parent))
            elif collapse is not None:
                key = ("module", collapse)
                if key not in self.groups:
                    self.groups[key] = _Group("module", key, [collapse], _prefix(collapse, k))
            else:
                self.rep[op] = op
                continue
            self.groups[key].ops.append(op)
            self.rep[op] = self.groups[key]
        for key, group in list(self.groups.items()):
            if group.kind == "module" and len(group.ops) == 1:  # a one-op module: draw the op
                self.rep[group.ops[0]] = group.ops[0]
                del self.groups[key]

    def leaf_module(self, leaf):
        """The module path of a named parameter ("layer1.0.conv1" for "layer1.0.conv1.weight")."""
        name = self.names.get(id(leaf))
        return name.rsplit(".", 1)[0] if name is not None and "." in name else None

    def _hidden_leaves(self):
        """id(leaf) -> group, for parameters of a group's modules that only that group uses."""
        hidden = {}
        for op in self.order:
            r = self.rep[op]
            if isinstance(r, _Group):
                for edge in op.next_edges:
                    if edge is not None and edge[0] is None:
                        mp = self.leaf_module(edge[1])
                        if mp is not None and r.covers(mp):
                            hidden.setdefault(id(edge[1]), r)
        for op in self.order:  # used by a drawn op or another group too: stays visible
            for edge in op.next_edges:
                if edge is not None and edge[0] is None and id(edge[1]) in hidden \
                        and hidden[id(edge[1])] is not self.rep[op]:
                    del hidden[id(edge[1])]
        return hidden

    # ---- step 3: nodes ---------------------------------------------------------------------------
    def op_grad_lines(self, op):
        """Gradient lines of an op's outputs (from the recorder, or retained non-leaf grads)."""
        lines, problem = [], False
        for index in range(len(op.output_meta)):
            stats = self.recorder.get(op, index) if self.recorder is not None else None
            if stats is None and op._retained:
                ref = op._retained.get(index)
                tensor = ref() if ref is not None else None
                if tensor is not None and tensor.grad is not None:
                    stats = grad_stats(tensor.grad.data)
            if stats is not None:
                lines += _stats_lines(stats, "grad" if len(op.output_meta) == 1 else f"grad[{index}]")
                problem = problem or not stats.finite
        return lines, problem

    def node_of(self, r):
        """The node id of a representative; an op is drawn the first time it is asked for."""
        if isinstance(r, _Group):
            if r.kind == "module":
                return "module_" + r.key[1]
            return f"fold_{r.key[1]}_{r.key[2]}" if r.key[1] else f"fold_{r.key[2]}"
        node_id = self.op_ids.get(r)
        if node_id is None:
            node_id = self.op_ids[r] = self.draw_op(r)
        return node_id

    def draw_op(self, op):
        path = op.module_path or ""
        lines = [f"{_forward_name(op)}  #{self.run_number[op]}" if self.forward else op.name]
        lines += _attr_lines(op)
        problem = False
        if self.show_grads:
            extra, problem = self.op_grad_lines(op)
            lines += extra
        if self.show_saved and op._released and not op.saved_shapes():
            lines.append("(saved arrays freed by backward)")
        tooltip = (f"{op.name} seq={op.seq} module={path or '(root)'} outputs="
                   + ", ".join(_shape(s) for s, _ in op.output_meta))
        node_id = self.d.node(f"op{op.seq}", self.cluster_of(path), "op", lines, problem,
                              tooltip=tooltip)
        if self.show_saved:
            for name, shape in op.saved_shapes().items():
                saved = self.d.node(f"{node_id}_saved_{name}", self.cluster_of(path), "saved",
                                    [name, _shape(shape)])
                self.d.edge(saved, node_id, style="dashed", dir="none")
        return node_id

    def draw_group(self, group):
        problem = False
        if self.show_grads:
            problem = any(self.op_grad_lines(op)[1] for op in group.ops)
        inside = {}  # the parameters hidden inside this node, by identity
        for op in group.ops:
            for edge in op.next_edges:
                if edge is not None and edge[0] is None and self.hidden_leaves.get(id(edge[1])) is group:
                    inside[id(edge[1])] = edge[1]
        if self.show_grads:
            problem = problem or any(leaf.grad is not None and not grad_stats(leaf.grad.data).finite
                                     for leaf in inside.values())
        if group.kind == "module":
            path = group.key[1]
            lines = [path + self.type_suffix(path),
                     f"{len(group.ops)} ops" + (f", {len(inside)} params" if inside else "")]
        else:
            _, blocks, per_block = self.folds[group.key]
            first, last, n = group.scopes[0], group.scopes[-1], len(blocks)
            span = f"{first} … {last}" if n > 1 else first
            lines = [f"× {n} more identical block{'s' if n != 1 else ''}",
                     span + self.type_suffix(first), f"{per_block} ops each"]
        if problem:
            lines.append("!! NaN/Inf gradient inside")
        self.d.node(self.node_of(group), group.cluster, group.kind, lines, problem,
                    tooltip=" ".join(group.scopes))

    def draw_leaf(self, leaf):
        lid = self.leaf_ids.get(id(leaf))
        if lid is not None:
            return lid
        lid = self.leaf_ids[id(leaf)] = f"leaf{len(self.leaf_ids)}"
        name = self.names.get(id(leaf)) or leaf.name
        lines = ([name] if name else []) + [_shape(leaf.shape), f"{np.dtype(leaf.dtype).name} {leaf.device}"]
        problem = False
        if self.show_grads and leaf.grad is not None:
            stats = grad_stats(leaf.grad.data)
            lines += _stats_lines(stats)
            problem = not stats.finite
        mp = self.leaf_module(leaf)
        cluster = self.cluster_of(mp) if mp is not None and mp in self.op_paths else ""
        self.d.node(lid, cluster, "param" if id(leaf) in self.names else "leaf", lines, problem)
        return lid

    def draw_tensor(self, op, index):
        """Forward graph: the tensor that is output `index` of `op`, drawn once."""
        key = (op, index)
        tid = self.tensor_ids.get(key)
        if tid is None:
            tid = self.tensor_ids[key] = f"t{op.seq}_{index}"
            if key in self.output_keys:
                return tid  # drawn as an output node
            shape, dtype = op.output_meta[index]
            r = self.rep[op]
            cluster = r.cluster if isinstance(r, _Group) else self.cluster_of(op.module_path or "")
            self.d.node(tid, cluster, "tensor", [_shape(shape), np.dtype(dtype).name])
            self.d.edge(self.node_of(r), tid)
        return tid

    def draw_output(self, k, t):
        name = t.name or ("output" if len(self.outputs) == 1 else f"output {k}")
        lines = [name, _shape(t.shape), f"{np.dtype(t.dtype).name} {t.device}"]
        problem = False
        if self.show_grads:
            stats = grad_stats(t.grad.data) if t.grad is not None else None
            if stats is None and self.recorder is not None and t.grad_fn is not None:
                stats = self.recorder.get(t.grad_fn, t._output_index)
            if stats is not None:
                lines += _stats_lines(stats)
                problem = not stats.finite
        if t.grad_fn is None:
            oid = self.d.node(f"out{k}", "", "output", lines, problem)
            if t.requires_grad:
                self.d.edge(self.draw_leaf(t), oid)
            return
        if self.forward:  # the output is the tensor node itself
            oid = self.d.node(self.draw_tensor(t.grad_fn, t._output_index), "", "output", lines, problem)
        else:
            oid = self.d.node(f"out{k}", "", "output", lines, problem)
        self.d.edge(self.node_of(self.rep[t.grad_fn]) if t.grad_fn in self.kept else self.truncated_id, oid)

    # ---- step 3: edges ---------------------------------------------------------------------------
    def draw(self):
        d = self.d
        for group in self.groups.values():
            self.draw_group(group)
        for op in sorted(self.order, key=lambda n: n.seq) if self.forward else self.order:
            self.node_of(self.rep[op])
        if len(self.order) < self.total:
            self.truncated_id = d.node("truncated", "", "truncated", [
                f"… {self.total - len(self.order)} more ops not drawn", f"(max_nodes={self.max_nodes})"])
        for op in self.order:
            head = self.node_of(self.rep[op])
            for i, edge in enumerate(op.next_edges):
                if edge is None:  # an input that needs no grad: only the forward graph shows it
                    if self.forward and not isinstance(self.rep[op], _Group) and op.input_meta:
                        shape, dtype = op.input_meta[i]
                        d.edge(d.node(f"in{op.seq}_{i}", self.cluster_of(op.module_path or ""), "input",
                                      ["input", _shape(shape), np.dtype(dtype).name]), head)
                    continue
                parent, where = edge
                if parent is None:  # a leaf
                    if id(where) not in self.hidden_leaves:
                        d.edge(self.draw_leaf(where), head)
                elif parent not in self.kept:
                    d.edge(self.truncated_id, head)
                elif self.rep[parent] is not self.rep[op]:  # inside one group: not drawn
                    tail = self.draw_tensor(parent, where) if self.forward else self.node_of(self.rep[parent])
                    d.edge(tail, head)
        for k, t in enumerate(self.outputs):
            self.draw_output(k, t)
        return d
