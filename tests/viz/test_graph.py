"""tinygrad_bn.viz: the DOT text of forward/backward graph drawings (labels, edges, clusters,
collapsing, folding, truncation, saved tensors, gradient flags, legend) and rendering with and
without the Graphviz `dot` program."""
import os
import re
import shutil
import stat
import sys

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tinygrad_bn.autograd.engine import topological_order

graphviz = pytest.importorskip("graphviz", reason="the 'viz' extra (pip install graphviz) is not installed")

from tinygrad_bn import viz  # noqa: E402
from tinygrad_bn.viz import draw_graph, record_grad_stats, render_graph  # noqa: E402
from tinygrad_bn.viz import render as viz_render  # noqa: E402
from tinygrad_bn.viz.legend import STYLES  # noqa: E402

HAVE_DOT = shutil.which("dot") is not None
needs_dot = pytest.mark.skipif(not HAVE_DOT, reason="the Graphviz program `dot` is not installed "
                                                    "(apt-get install graphviz)")


# ---- a small DOT reader ---------------------------------------------------------------------
_ID = r'("(?:[^"\\]|\\.)*"|[\w.]+)'
_EDGE = re.compile(rf"^\s*{_ID} -> {_ID}(?: \[(.*)\])?\s*$")
_NODE = re.compile(rf"^\s*{_ID} \[(.*)\]\s*$")
_SUBGRAPH = re.compile(rf"^\s*subgraph {_ID} {{\s*$")
_ATTR = re.compile(r'(\w+)=("(?:[^"\\]|\\.)*"|<.*>|[^\s\]]+)')


def _unquote(s):
    if s.startswith('"') and s.endswith('"'):
        s = s[1:-1].replace('\\"', '"')
    return s


def _attrs(text):
    out = {}
    for k, v in _ATTR.findall(text or ""):
        v = _unquote(v)
        out[k] = v.replace("\\n", "\n") if k == "label" else v
    return out


class Dot:
    """Nodes (id -> attrs, with '_cluster' the innermost cluster), edges [(tail, head, attrs)],
    clusters (name -> parent cluster name or None), parsed from DOT text."""

    def __init__(self, graph):
        self.source = graph.source
        self.nodes, self.edges, self.clusters, self.order = {}, [], {}, []
        stack = []
        for line in self.source.splitlines():
            m = _SUBGRAPH.match(line)
            if m:
                name = _unquote(m.group(1))
                self.clusters[name] = stack[-1] if stack else None
                stack.append(name)
                continue
            if line.strip() == "}":
                if stack:
                    stack.pop()
                continue
            m = _EDGE.match(line)
            if m:
                self.edges.append((_unquote(m.group(1)), _unquote(m.group(2)), _attrs(m.group(3))))
                continue
            m = _NODE.match(line)
            if m and m.group(1) not in ("node", "edge", "graph"):
                node_id = _unquote(m.group(1))
                attrs = _attrs(m.group(2))
                attrs["_cluster"] = stack[-1] if stack else None
                self.nodes[node_id] = attrs
                self.order.append(node_id)

    def label(self, node_id):
        return self.nodes[node_id].get("label", node_id)

    def find(self, text, kind=None):
        """Ids of nodes whose label contains text (and whose fill is STYLES[kind]'s)."""
        out = []
        for node_id, attrs in self.nodes.items():
            if node_id != "legend" and text in attrs.get("label", ""):
                if kind is None or attrs.get("fillcolor") == STYLES[kind]["fillcolor"]:
                    out.append(node_id)
        return out

    def one(self, text, kind=None):
        found = self.find(text, kind)
        assert len(found) == 1, f"expected one node labelled {text!r}, found {found}"
        return found[0]

    def named(self, first_line, kind=None):
        """The one node whose label's first line is first_line."""
        found = [n for n in self.find(first_line, kind) if self.label(n).split("\n")[0] == first_line]
        assert len(found) == 1, f"expected one node named {first_line!r}, found {found}"
        return found[0]

    def ops(self):
        return [n for n, a in self.nodes.items() if a.get("fillcolor") == STYLES["op"]["fillcolor"]]

    def has_edge(self, tail, head):
        return any(t == tail and h == head for t, h, _ in self.edges)

    def ancestors(self, cluster):
        out = []
        while cluster is not None:
            out.append(cluster)
            cluster = self.clusters[cluster]
        return out


# ---- models ---------------------------------------------------------------------------------
class Block(nn.Module):
    """A post-activation residual block; extra=True adds one more ReLU (a different structure)."""

    def __init__(self, c, extra=False):
        super().__init__()
        self.extra = extra
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        if self.extra:
            out = self.relu(out)
        out = self.bn2(self.conv2(out))
        return self.relu(out + x)


class Net(nn.Module):
    def __init__(self, c=4, blocks=3, extra=()):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.layer1 = nn.Sequential(*[Block(c, extra=i in extra) for i in range(blocks)])
        self.head = nn.Linear(c, 2)

    def forward(self, x):
        return self.head(self.layer1(self.stem(x)).mean(dim=(2, 3)))


def small_seq():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, stride=1, padding=1, bias=False), nn.BatchNorm2d(4),
                          nn.ReLU())
    loss = model(tg.randn(2, 3, 5, 5)).sum()
    return model, loss


def n_ops(tensor):
    return len(topological_order([tensor.grad_fn]))


# ---- backward graph -------------------------------------------------------------------------
def test_returns_a_digraph_with_source_and_jupyter_display():
    model, loss = small_seq()
    g = draw_graph(loss, params=model)
    assert isinstance(g, graphviz.Digraph)
    assert g.source.startswith("digraph")
    assert hasattr(g, "_repr_mimebundle_") and hasattr(g, "render")


def test_backward_op_labels_attributes_and_parameters():
    model, loss = small_seq()
    dot = Dot(draw_graph(loss, params=model))
    conv = dot.one("ConvolutionBackward")
    bn = dot.one("BatchNorm2dBackward")
    relu = dot.one("ReluBackward")
    dot.one("SumBackward")
    assert "stride=(1, 1)" in dot.label(conv) and "padding=(1, 1)" in dot.label(conv)
    assert "groups=1" in dot.label(conv)
    assert "eps=1e-05" in dot.label(bn) and "momentum=0.1" in dot.label(bn)
    assert "training=True" in dot.label(bn)
    assert "node_name" not in dot.source and "group_shape" not in dot.source  # internals hidden
    assert len(dot.ops()) == n_ops(loss) == 4
    # parameters: named from named_parameters(), with shape, dtype and device
    w = dot.one("0.weight", "param")
    assert "(4, 3, 3, 3)" in dot.label(w) and "float32" in dot.label(w) and "cpu" in dot.label(w)
    bn_w, bn_b = dot.one("1.weight", "param"), dot.one("1.bias", "param")
    assert "(4,)" in dot.label(bn_w)
    # edges point from an input to the op that consumes it
    assert dot.has_edge(w, conv) and not dot.has_edge(conv, w)
    assert dot.has_edge(bn_w, bn) and dot.has_edge(bn_b, bn)
    assert dot.has_edge(conv, bn) and dot.has_edge(bn, relu) and not dot.has_edge(bn, conv)
    out = dot.one("output", "output")
    assert dot.has_edge(dot.one("SumBackward"), out)


def test_eval_mode_batchnorm_shows_no_arrays():
    model, _ = small_seq()
    model.eval()
    x = tg.randn(2, 3, 5, 5, requires_grad=True)
    dot = Dot(draw_graph(model(x).sum(), params=model))
    label = dot.label(dot.one("BatchNorm2dBackward"))
    assert "training=False" in label
    assert "mean=" not in label and "invstd=" not in label  # running statistics are arrays
    assert "[" not in label  # no array repr anywhere
    # an input that requires grad is a leaf without a parameter name
    leaf = dot.one("(2, 3, 5, 5)", "leaf")
    assert dot.has_edge(leaf, dot.one("ConvolutionBackward"))


def test_params_as_dict_tensor_names_and_several_outputs():
    a = tg.tensor([1.0, 2.0], requires_grad=True)
    b = tg.tensor([3.0, 4.0], requires_grad=True)
    b.name = "bee"
    y1, y2 = a * b, (a + b).sum()
    dot = Dot(draw_graph([y1, y2], params={"alpha": a}))
    assert dot.find("alpha", "param") and dot.find("bee", "leaf")
    assert dot.find("output 0", "output") and dot.find("output 1", "output")
    mul, add = dot.one("MulBackward"), dot.one("AddBackward")
    assert dot.has_edge(dot.one("alpha"), mul) and dot.has_edge(dot.one("alpha"), add)
    assert dot.has_edge(mul, dot.one("output 0"))


def test_title_and_rankdir():
    _, loss = small_seq()
    src = draw_graph(loss, title="my net", rankdir="LR").source
    assert "rankdir=LR" in src and 'label="my net"' in src


def test_bad_arguments_are_named():
    _, loss = small_seq()
    with pytest.raises(ValueError, match="direction"):
        draw_graph(loss, direction="sideways")
    with pytest.raises(ValueError, match="max_nodes"):
        draw_graph(loss, max_nodes=0)
    with pytest.raises(ValueError, match="max_depth"):
        draw_graph(loss, max_depth=-1)
    with pytest.raises(ValueError, match="fold_repeats"):
        draw_graph(loss, fold_repeats=1)
    with pytest.raises(TypeError, match="outputs"):
        draw_graph("loss")


def test_missing_graphviz_package_names_the_extra(monkeypatch):
    _, loss = small_seq()
    monkeypatch.setitem(sys.modules, "graphviz", None)  # `import graphviz` now fails
    with pytest.raises(ImportError, match=re.escape("pip install 'tinygrad_bn[viz]'")):
        draw_graph(loss)


# ---- module clusters, max_depth, fold_repeats -----------------------------------------------
def test_module_clusters_are_nested_by_path():
    model = Net(blocks=2)
    dot = Dot(draw_graph(model(tg.randn(2, 3, 4, 4)).sum(), params=model))
    for name in ("cluster_stem", "cluster_layer1", "cluster_layer1.0", "cluster_layer1.0.conv1",
                 "cluster_layer1.1.bn2", "cluster_head"):
        assert name in dot.clusters
    assert dot.ancestors("cluster_layer1.0.conv1") == [
        "cluster_layer1.0.conv1", "cluster_layer1.0", "cluster_layer1"]
    # the ops and parameters of a module sit in its cluster; the block's own Add in the block's
    w = dot.one("layer1.0.conv1.weight", "param")
    assert dot.nodes[w]["_cluster"] == "cluster_layer1.0.conv1"
    adds = dot.find("AddBackward")
    assert sorted(dot.nodes[a]["_cluster"] for a in adds) == ["cluster_layer1.0", "cluster_layer1.1"]
    bns = [n for n in dot.find("BatchNorm2dBackward") if dot.nodes[n]["_cluster"] == "cluster_layer1.0.bn1"]
    assert len(bns) == 1
    assert dot.has_edge(w, [c for c in dot.find("ConvolutionBackward")
                            if dot.nodes[c]["_cluster"] == "cluster_layer1.0.conv1"][0])
    # cluster labels carry the module type
    assert re.search(r'label="layer1.0: Block"', dot.source)
    # the loss (outside any module) is at the top level
    assert dot.nodes[dot.one("SumBackward")]["_cluster"] is None


def test_max_depth_collapses_deeper_modules():
    model = Net(blocks=3)
    loss = model(tg.randn(2, 3, 4, 4)).sum()
    full = Dot(draw_graph(loss, params=model))
    block_ops = [n for n in full.ops() if "module=layer1.0" in full.nodes[n].get("tooltip", "")]
    dot = Dot(draw_graph(loss, params=model, max_depth=1))
    assert len(dot.nodes) < len(full.nodes)
    blocks = [dot.one(f"layer1.{i} (Block)", "module") for i in range(3)]
    assert f"{len(block_ops)} ops" in dot.label(blocks[0]) and "6 params" in dot.label(blocks[0])
    assert all(dot.nodes[b]["_cluster"] == "cluster_layer1" for b in blocks)
    assert not any(c.count(".") >= 1 for c in dot.clusters if c.startswith("cluster_layer1"))
    assert not dot.find("layer1.0.conv1.weight")  # hidden inside the collapsed block
    # edges are re-routed to the collapsed nodes, in order
    stem = dot.one("ConvolutionBackward")
    assert dot.has_edge(stem, blocks[0])
    assert dot.has_edge(blocks[0], blocks[1]) and dot.has_edge(blocks[1], blocks[2])
    assert not any(t == h for t, h, _ in dot.edges)
    # one level less: the whole stage is one node
    top = Dot(draw_graph(loss, params=model, max_depth=0))
    stage = top.one("layer1 (Sequential)", "module")
    assert f"{3 * len(block_ops)} ops" in top.label(stage)
    assert top.has_edge(top.one("ConvolutionBackward"), stage)
    assert top.has_edge(stage, top.one("MeanBackward"))
    assert [c for c in top.clusters if c != "cluster_legend"] == []


def test_fold_repeats_keeps_first_block_and_folds_the_rest():
    model = Net(blocks=4)
    loss = model(tg.randn(2, 3, 4, 4)).sum()
    dot = Dot(draw_graph(loss, params=model, fold_repeats=True))
    fold = dot.one("× 3 more identical blocks", "fold")
    assert "layer1.1 … layer1.3 (Block)" in dot.label(fold)
    assert "cluster_layer1.0" in dot.clusters and "cluster_layer1.1" not in dot.clusters
    assert dot.nodes[fold]["_cluster"] == "cluster_layer1"
    assert not dot.find("layer1.2.conv1.weight")
    last_relu_of_block0 = [n for n in dot.find("ReluBackward")
                           if dot.nodes[n]["_cluster"] == "cluster_layer1.0.relu"]
    assert any(dot.has_edge(r, fold) for r in last_relu_of_block0)
    assert dot.has_edge(fold, dot.one("MeanBackward"))
    # with max_depth: the first block collapsed, the rest folded
    both = Dot(draw_graph(loss, params=model, max_depth=1, fold_repeats=True))
    first = both.one("layer1.0 (Block)", "module")
    fold = both.one("× 3 more identical blocks", "fold")
    assert both.has_edge(first, fold)
    assert len(both.nodes) < 15


def test_fold_repeats_only_folds_consecutive_identical_blocks():
    model = Net(blocks=4, extra=(1,))  # block 1 has one more ReLU: runs are [0], [1], [2, 3]
    dot = Dot(draw_graph(model(tg.randn(2, 3, 4, 4)).sum(), params=model, fold_repeats=True))
    fold = dot.one("× 1 more identical block", "fold")
    assert "layer1.3" in dot.label(fold)
    for kept in ("cluster_layer1.0", "cluster_layer1.1", "cluster_layer1.2"):
        assert kept in dot.clusters
    assert "cluster_layer1.3" not in dot.clusters
    # a minimum run length of 3 folds nothing here
    plain = Dot(draw_graph(model(tg.randn(2, 3, 4, 4)).sum(), params=model, fold_repeats=3))
    assert not plain.find("more identical")


# ---- max_nodes, show_saved, show_grads --------------------------------------------------------
def test_max_nodes_truncates_with_a_note():
    x = tg.randn(3, requires_grad=True)
    y = x
    for _ in range(50):
        y = y * 1.5
    loss = y.sum()
    dot = Dot(draw_graph(loss, max_nodes=10))
    assert len(dot.ops()) == 10
    note = dot.one("41 more ops not drawn", "truncated")
    assert "max_nodes=10" in dot.label(note)
    assert sum(1 for t, _, _ in dot.edges if t == note) == 1
    assert dot.has_edge(dot.one("SumBackward"), dot.one("output"))  # nearest ops are kept
    assert not dot.find("(3,)", "leaf")  # x is beyond the cut
    assert not Dot(draw_graph(loss)).find("not drawn")


def test_show_saved_names_shapes_and_links():
    model, loss = small_seq()
    dot = Dot(draw_graph(loss, params=model, show_saved=True))
    bn = dot.one("BatchNorm2dBackward")
    saved = {dot.label(t): t for t, h, a in dot.edges if h == bn and a.get("style") == "dashed"}
    assert "x\n(2, 4, 5, 5)" in saved and "mean\n(1, 4, 1)" in saved and "invstd\n(1, 4, 1)" in saved
    for node in saved.values():
        assert dot.nodes[node]["fillcolor"] == STYLES["saved"]["fillcolor"]
    conv = dot.one("ConvolutionBackward")
    assert any(dot.label(t) == "x\n(2, 3, 5, 5)" for t, h, _ in dot.edges if h == conv)
    assert not Dot(draw_graph(loss, params=model)).find("", "saved")
    loss.backward()  # frees the saved arrays: the drawing says so
    after = Dot(draw_graph(loss, params=model, show_saved=True))
    assert not after.find("", "saved")
    assert "(saved arrays freed by backward)" in after.label(after.one("BatchNorm2dBackward"))


def _nan_graph():
    """w's gradient has a NaN (d sqrt(x)/dx at x = -1); v's is finite."""
    w = nn.Parameter(tg.tensor([-1.0, 4.0]))
    v = nn.Parameter(tg.tensor([1.0, 2.0]))
    with np.errstate(invalid="ignore"):
        loss = w.sqrt().sum() + (v * v).sum()
    return w, v, loss


def test_show_grads_flags_nan_in_red():
    w, v, loss = _nan_graph()
    with np.errstate(invalid="ignore"):
        loss.backward()
    dot = Dot(draw_graph(loss, params={"w": w, "v": v}, show_grads=True))
    wn, vn = dot.named("w"), dot.named("v")
    assert dot.nodes[wn]["color"] == "red" and dot.nodes[wn]["fillcolor"] == STYLES["problem"]["fillcolor"]
    assert "1 NaN of 2" in dot.label(wn)
    assert "grad norm=" in dot.label(vn) and "NaN" not in dot.label(vn)
    assert dot.nodes[vn].get("color") != "red" and dot.nodes[vn]["fillcolor"] == STYLES["param"]["fillcolor"]
    # v.grad = 2 v = [2, 4]: norm sqrt(20), min 2, max 4
    assert "grad norm=4.47" in dot.label(vn) and "min=2 max=4" in dot.label(vn)
    assert not Dot(draw_graph(loss, params={"w": w, "v": v})).find("grad norm")


def test_record_grad_stats_per_op_and_retain_grad():
    w = nn.Parameter(tg.tensor([-1.0, 4.0]))
    u = nn.Parameter(tg.tensor([1.0, 9.0]))
    with np.errstate(invalid="ignore"):
        c = u.sqrt()
        c.retain_grad()
        loss = (c * w.sqrt()).sum()  # c's gradient is sqrt(w): NaN in its first entry
    recorder = record_grad_stats(loss)
    with np.errstate(invalid="ignore"):
        loss.backward()
    assert len(recorder) == n_ops(loss)
    dot = Dot(draw_graph(loss, params={"w": w, "u": u}, show_grads=recorder))
    sum_op, mul = dot.one("SumBackward"), dot.one("MulBackward")
    assert "grad norm=1" in dot.label(sum_op)
    u_node = dot.named("u")
    sqrt_u = [n for n in dot.find("SqrtBackward") if dot.has_edge(u_node, n)][0]
    assert dot.nodes[sqrt_u]["color"] == "red" and "1 NaN" in dot.label(sqrt_u)
    assert dot.nodes[mul].get("color") != "red"
    # without the recorder, the retained gradient of c is still shown on its op
    plain = Dot(draw_graph(loss, params={"w": w, "u": u}, show_grads=True))
    assert "1 NaN" in plain.label(sqrt_u) and "grad norm" not in plain.label(mul)
    recorder.remove()


def test_collapsed_module_flags_nan_inside():
    model = Net(blocks=2)
    loss = model(tg.randn(2, 3, 4, 4)).sum()
    loss.backward()
    model.layer1[1].conv2.weight.grad.data[0, 0, 0, 0] = np.inf
    dot = Dot(draw_graph(loss, params=model, max_depth=1, show_grads=True))
    assert dot.nodes[dot.one("layer1.1 (Block)")]["color"] == "red"
    assert dot.nodes[dot.one("layer1.0 (Block)")].get("color") != "red"


def test_grad_stats_on_every_backend(device):
    g = tg.tensor([3.0, -4.0, np.nan, np.inf, 0.0], device=device)
    s = viz.grad_stats(g)
    assert (s.norm, s.min, s.max, s.n_nan, s.n_inf, s.size) == (5.0, -4.0, 3.0, 1, 1, 5)
    assert not s.finite and viz.grad_stats(tg.ones(2, device=device)).finite
    model = nn.Sequential(nn.Linear(3, 2)).to(device)
    loss = model(tg.randn(4, 3, device=device)).sum()
    recorder = record_grad_stats(loss)
    loss.backward()
    dot = Dot(draw_graph(loss, params=model, show_grads=recorder))
    assert "grad norm=" in dot.label(dot.one("LinearBackward"))
    assert "fakegpu" in dot.label(dot.one("0.weight")) or device != "fakegpu"


# ---- forward graph, legend --------------------------------------------------------------------
def test_forward_direction_runs_in_order_with_tensor_nodes():
    model, loss = small_seq()
    dot = Dot(draw_graph(loss, params=model, direction="forward"))
    conv, bn = dot.one("Convolution  #1"), dot.one("BatchNorm2d  #2")
    relu, total = dot.one("Relu  #3"), dot.one("Sum  #4")
    assert not dot.find("Backward")
    seqs = [int(re.search(r"seq=(\d+)", dot.nodes[n]["tooltip"]).group(1)) for n in (conv, bn, relu, total)]
    assert seqs == sorted(seqs)  # numbered in the order they ran
    # input -> op -> tensor -> op
    x = dot.one("input", "input")
    assert "(2, 3, 5, 5)" in dot.label(x) and dot.has_edge(x, conv)
    assert dot.has_edge(dot.one("0.weight", "param"), conv)
    t = [h for tl, h, _ in dot.edges if tl == conv]
    assert len(t) == 1 and "(2, 4, 5, 5)" in dot.label(t[0]) and dot.has_edge(t[0], bn)
    out = dot.one("output", "output")
    assert dot.has_edge(total, out) and "()" in dot.label(out)
    # collapsing works the same way forward
    net = Net(blocks=2)
    fwd = Dot(draw_graph(net(tg.randn(2, 3, 4, 4)).sum(), params=net, direction="forward", max_depth=1))
    b0, b1 = fwd.one("layer1.0 (Block)"), fwd.one("layer1.1 (Block)")
    between = [h for t, h, _ in fwd.edges if t == b0]
    assert len(between) == 1 and fwd.has_edge(between[0], b1)


def test_legend_lists_the_colors():
    model, loss = small_seq()
    dot = Dot(draw_graph(loss, params=model))
    assert "cluster_legend" in dot.clusters and "legend" in dot.nodes
    table = dot.nodes["legend"]["label"]
    for kind, text in (("param", "parameter"), ("saved", "saved for backward"), ("output", "output"),
                       ("op", "op"), ("problem", "NaN")):
        assert re.search(rf'BGCOLOR="{re.escape(STYLES[kind]["fillcolor"])}">[^<]*(<FONT[^>]*>)?[^<]*{text}',
                         table), kind
    assert 'COLOR="red"' in table
    assert "collapsed module" not in table  # kinds not in this graph are left out
    net = Net(blocks=2)
    collapsed = Dot(draw_graph(net(tg.randn(1, 3, 3, 3)).sum(), params=net, max_depth=0))
    assert re.search(rf'BGCOLOR="{STYLES["module"]["fillcolor"]}">collapsed module',
                     collapsed.nodes["legend"]["label"])
    assert "legend" not in Dot(draw_graph(loss, show_legend=False)).nodes


# ---- size ---------------------------------------------------------------------------------------
def test_deep_residual_stack_stays_small_with_max_depth_and_fold():
    model = Net(c=2, blocks=24)
    loss = model(tg.randn(1, 3, 3, 3)).sum()
    total = n_ops(loss)
    full = Dot(draw_graph(loss, params=model))
    assert len(full.ops()) == total > 24 * 7
    assert len(full.find("", "param")) == len(list(model.parameters()))
    folded = Dot(draw_graph(loss, params=model, max_depth=1, fold_repeats=True))
    assert len(folded.nodes) < 15
    assert folded.find("× 23 more identical blocks")


def test_long_chain_needs_no_recursion():
    x = tg.randn(2, requires_grad=True)
    y = x
    for _ in range(3000):
        y = y + 1.0
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(200)  # a recursive walk would fail here
    try:
        g = draw_graph(y.sum())
    finally:
        sys.setrecursionlimit(limit)
    assert len(Dot(g).find("AddBackward")) == 3000


# ---- rendering ----------------------------------------------------------------------------------
@needs_dot
def test_render_svg_and_png(tmp_path):
    model, loss = small_seq()
    g = draw_graph(loss, params=model, show_saved=True)
    svg = render_graph(g, tmp_path / "graph.svg")
    assert svg == str(tmp_path / "graph.svg")
    text = open(svg, encoding="utf-8").read()
    assert "<svg" in text and "BatchNorm2dBackward" in text and "0.weight" in text
    assert (tmp_path / "graph.dot").read_text().startswith("digraph")
    png = render_graph(g, tmp_path / "graph", format="png")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    out = g.render(outfile=str(tmp_path / "r.svg"))
    assert "<svg" in open(out, encoding="utf-8").read()
    assert "image/svg+xml" in g._repr_mimebundle_()


def _hide_renderers(monkeypatch, tmp_path, shim=None):
    empty = tmp_path / "bin"
    empty.mkdir()
    if shim is not None:
        path = empty / "graphviz-pure"
        path.write_text(shim)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", str(empty))
    if shim is None:
        monkeypatch.setattr(viz_render, "find_graphviz_pure", lambda: None)


def test_without_dot_writes_the_dot_file_and_says_how(tmp_path, monkeypatch, capsys):
    model, loss = small_seq()
    g = draw_graph(loss, params=model)
    _hide_renderers(monkeypatch, tmp_path)
    got = render_graph(g, tmp_path / "out" / "graph.svg")
    assert got == str(tmp_path / "out" / "graph.dot")
    assert open(got, encoding="utf-8").read() == g.source
    assert not (tmp_path / "out" / "graph.svg").exists()
    line = capsys.readouterr().out.strip()
    assert len(line.splitlines()) == 1
    assert f"dot -Tsvg {got} -o {tmp_path / 'out' / 'graph.svg'}" in line and "graphviz-pure" in line
    # the returned object's own render and Jupyter display do not raise either
    src = g.render(str(tmp_path / "r"), format="png")
    assert src == str(tmp_path / "r") and os.path.exists(src)
    assert "dot -Tpng" in capsys.readouterr().out
    assert "text/plain" in g._repr_mimebundle_()


def test_without_dot_uses_graphviz_pure_when_present(tmp_path, monkeypatch, capsys):
    model, loss = small_seq()
    g = draw_graph(loss, params=model)
    # a stand-in graphviz-pure that records its arguments into the output file (-Tfmt in -o out)
    _hide_renderers(monkeypatch, tmp_path, shim='#!/bin/sh\nprintf "%s\\n" "$@" > "$4"\n')
    got = render_graph(g, tmp_path / "graph.png")
    assert got == str(tmp_path / "graph.png")
    assert open(got).read().split() == ["-Tpng", str(tmp_path / "graph.dot"), "-o", got]
    assert capsys.readouterr().out == ""
    # graphviz-pure has no pdf writer: back to the .dot file and the hint
    got = render_graph(g, tmp_path / "graph.pdf")
    assert got.endswith("graph.dot") and "dot -Tpdf" in capsys.readouterr().out


def test_render_graph_accepts_dot_text_and_dot_format(tmp_path):
    got = render_graph("digraph { a -> b }", tmp_path / "tiny", format="dot")
    assert got == str(tmp_path / "tiny.dot") and "a -> b" in open(got).read()


def test_public_names():
    for name in ("draw_graph", "render_graph", "record_grad_stats", "GradRecorder", "LEGEND", "STYLES"):
        assert hasattr(viz, name)
