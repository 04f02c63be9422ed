"""examples/models.py: the block orderings of post- and pre-activation units (read off the graph
that one forward records), projection shortcuts, bias-free convs, parameter counts, names, and
every registered conv normalizer inside a ResNet."""
import math
import re

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
import tinygrad_bn.nn.functional as F
from tinygrad_bn.norms import REGISTRY

from examples import models

# ---- helpers ------------------------------------------------------------------------------------


def leaf_input(shape, seed=0):
    return tg.tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32),
                     requires_grad=True)


def forward_ops(output):
    """Every graph node behind `output`, in the order the forward pass created them."""
    seen, stack = set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        stack.extend(edge[0] for edge in node.next_edges if edge is not None)
    return sorted(seen, key=lambda node: node.seq)


def kind(node):
    """Conv / BN / ReLU / Add from the node's op name and the module that made it."""
    name, path = node.name, node.module_path or ""
    last = path.rsplit(".", 1)[-1]
    if "Convolution" in name:
        return "Conv"
    if last in ("bn1", "bn2", "bn"):
        return "BN"
    if name.startswith("Relu"):
        return "ReLU"
    if name.startswith("Add"):
        return "Add"
    return name


def unit_ops(unit, hw=8):
    """(ops in forward order, input leaf, output) of unit applied to a leaf input, drawn as
    layer1.1 (the unit sits under NamedUnit, so module paths read layer1.1.conv1)."""
    holder = models.NamedUnit("layer1", 1, unit)
    x = leaf_input((2, unit.conv1.in_channels, hw, hw))
    y = holder(x)
    return forward_ops(y), x, y


def edge_sources(node):
    """What each input edge of node points at: a node, or the leaf Tensor itself."""
    return [e[0] if e[0] is not None else e[1] for e in node.next_edges if e is not None]


@pytest.fixture(scope="module")
def nets():
    tg.manual_seed(0)
    return {b: models.ResNet(20, b, image_size=16) for b in ("post", "pre")}


# ---- block orderings ------------------------------------------------------------------------


def test_post_unit_op_order_conv_bn_relu_conv_bn_add_relu(nets):
    ops, x, y = unit_ops(nets["post"].layer1[1])
    assert [kind(n) for n in ops] == ["Conv", "BN", "ReLU", "Conv", "BN", "Add", "ReLU"]
    assert [n.module_path for n in ops] == ["layer1.1.conv1", "layer1.1.bn1", "layer1.1",
                                            "layer1.1.conv2", "layer1.1.bn2", "layer1.1", "layer1.1"]
    # the ReLU comes after the addition: the output is the ReLU, the Add takes x directly
    assert y.grad_fn is ops[-1] and ops[-1].name.startswith("Relu")
    assert any(src is x for src in edge_sources(ops[-2]))


def test_pre_unit_op_order_bn_relu_conv_bn_relu_conv_add(nets):
    ops, x, y = unit_ops(nets["pre"].layer1[1])
    assert [kind(n) for n in ops] == ["BN", "ReLU", "Conv", "BN", "ReLU", "Conv", "Add"]
    assert [n.module_path for n in ops] == ["layer1.1.bn1", "layer1.1", "layer1.1.conv1",
                                            "layer1.1.bn2", "layer1.1", "layer1.1.conv2", "layer1.1"]
    add = y.grad_fn
    assert add is ops[-1]  # nothing after the addition
    # the identity path: the block's input goes straight into the Add, no op between
    sources = edge_sources(add)
    assert any(src is x for src in sources)
    assert any(getattr(src, "module_path", None) == "layer1.1.conv2" for src in sources)


def test_module_children_in_execution_order(nets):
    post, pre = nets["post"], nets["pre"]
    for unit in post.modules():
        if isinstance(unit, models.BasicBlock):
            assert list(unit._modules) == ["conv1", "bn1", "conv2", "bn2", "shortcut"]
    for unit in pre.modules():
        if isinstance(unit, models.PreActBlock):
            assert list(unit._modules) == ["bn1", "conv1", "bn2", "conv2", "shortcut"]
    assert list(post._modules) == ["conv1", "bn1", "layer1", "layer2", "layer3", "fc"]
    assert list(pre._modules) == ["conv1", "layer1", "layer2", "layer3", "bn", "fc"]
    names = [name for name, _ in post.named_parameters()]
    assert names[:3] == ["conv1.weight", "bn1.weight", "bn1.bias"]
    assert "layer2.0.shortcut.conv.weight" in names and "layer2.0.shortcut.bn.weight" in names
    assert names[-2:] == ["fc.weight", "fc.bias"]
    pre_names = [name for name, _ in pre.named_parameters()]
    assert pre_names[:2] == ["conv1.weight", "layer1.0.bn1.weight"]
    assert pre_names[-4:] == ["bn.weight", "bn.bias", "fc.weight", "fc.bias"]


def test_whole_network_identity_path_between_pre_units_carries_no_op(nets):
    """In the pre-act net, unit layerS.i (i > 0) adds its input, which is the previous unit's
    Add output: Add -> Add with nothing between. In the post net a ReLU sits there."""
    x = leaf_input((2, 3, 16, 16))
    for block, between in (("pre", "Add"), ("post", "ReLU")):
        ops = forward_ops(nets[block](x))
        adds = {n.module_path: n for n in ops if n.name.startswith("Add")}
        for stage in ("layer1", "layer2", "layer3"):
            for i in (1, 2):
                prev = f"{stage}.{i - 1}"
                sources = edge_sources(adds[f"{stage}.{i}"])
                kinds = [(kind(s), s.module_path) for s in sources if hasattr(s, "module_path")]
                assert (between, prev) in kinds, (block, stage, i, kinds)


def test_pre_stem_and_first_units_follow_he_2016b(nets):
    """Stem = bare conv; layer1.0 and the projection units apply BN-ReLU before the split
    (the shortcut takes the activated input); the net ends with BN-ReLU before pooling."""
    pre = nets["pre"]
    assert not hasattr(pre, "bn1")
    shared = {f"{s}.{i}": u.preact_shared for s in ("layer1", "layer2", "layer3")
              for i, u in enumerate(getattr(pre, s))}
    assert shared == {"layer1.0": True, "layer1.1": False, "layer1.2": False,
                      "layer2.0": True, "layer2.1": False, "layer2.2": False,
                      "layer3.0": True, "layer3.1": False, "layer3.2": False}
    # layer1.0: the identity shortcut carries relu(bn1(x)), not x
    ops, x, y = unit_ops(pre.layer1[0])
    add = y.grad_fn
    relu1 = [n for n in ops if n.name.startswith("Relu")][0]
    assert any(s is relu1 for s in edge_sources(add)) and not any(s is x for s in edge_sources(add))
    # layer2.0: the 1x1 shortcut conv reads the same ReLU output as conv1
    holder = models.NamedUnit("layer2", 0, pre.layer2[0])
    y = holder(leaf_input((2, 16, 8, 8)))
    ops = forward_ops(y)
    convs = [n for n in ops if "Convolution" in n.name]
    relu1 = [n for n in ops if n.name.startswith("Relu")][0]
    by_path = {n.module_path: n for n in convs}
    assert any(s is relu1 for s in edge_sources(by_path["layer2.0.conv1"]))
    assert any(s is relu1 for s in edge_sources(by_path["layer2.0.shortcut"]))
    # the head: BN, ReLU, pool, linear
    out = pre(leaf_input((2, 3, 16, 16)))
    tail = [n for n in forward_ops(out) if n.module_path in ("bn", "", "fc")]
    assert [n.module_path for n in tail][:2] == ["bn", ""] and tail[1].name.startswith("Relu")


def test_drawn_graph_shows_the_clean_identity_path(nets):
    """In the DOT text of the pre unit, the input leaf has an edge straight into AddBackward, and
    the Add's output is the graph's output; the post unit's Add feeds a ReLU, which is the output."""
    pytest.importorskip("graphviz")
    from tinygrad_bn.viz import draw_graph
    for block in ("pre", "post"):
        holder = models.NamedUnit("layer1", 1, nets[block].layer1[1])
        y = holder(leaf_input((2, 16, 8, 8)))
        source = draw_graph(y, params=holder).source
        labels = dict(re.findall(r'^\s*(\w+) \[label="?([A-Za-z0-9_]+)', source, re.M))
        (add,) = [node for node, label in labels.items() if label == "AddBackward"]
        (leaf,) = re.findall(r'^\s*(leaf\d+) \[label="\(2, 16, 8, 8\)', source, re.M)
        assert f"{leaf} -> {add}" in source
        ((last, _),) = re.findall(r"^\s*(\w+) -> (out\d+)", source, re.M)
        if block == "pre":
            assert last == add
        else:
            assert labels[last] == "ReluBackward" and f"{add} -> {last}" in source


# ---- shortcuts, biases, init ------------------------------------------------------------------


@pytest.mark.parametrize("block", ["post", "pre"])
def test_projection_shortcuts_exactly_at_stage_changes(nets, block):
    net = nets[block]
    for stage, cin, cout in (("layer1", 16, 16), ("layer2", 16, 32), ("layer3", 32, 64)):
        for i, unit in enumerate(getattr(net, stage)):
            if i == 0 and stage != "layer1":
                conv = unit.shortcut.conv if block == "post" else unit.shortcut
                assert isinstance(conv, nn.Conv2d)
                assert (conv.in_channels, conv.out_channels) == (cin, cout)
                assert conv.kernel_size == (1, 1) and conv.stride == (2, 2) and conv.bias is None
                if block == "post":
                    assert list(unit.shortcut._modules) == ["conv", "bn"]
                    assert isinstance(unit.shortcut.bn, nn.BatchNorm2d)
                    assert unit.shortcut.bn.num_features == cout
                assert unit.conv1.stride == (2, 2)
            else:
                assert isinstance(unit.shortcut, nn.Identity), (stage, i)
                assert unit.conv1.stride == (1, 1)
    x = leaf_input((2, 3, 16, 16))
    assert net(x).shape == (2, 10)


@pytest.mark.parametrize("block", ["post", "pre"])
def test_convs_have_no_bias_and_kaiming_init(block):
    tg.manual_seed(0)
    net = models.ResNet(56, block, image_size=16)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 56 - 1 + 2  # 55 3x3 convs + 2 projections (the fc is the 56th layer)
    assert all(conv.bias is None for conv in convs)
    big = [c for c in convs if c.weight.shape == (64, 64, 3, 3)]
    weights = np.concatenate([c.weight.detach().numpy().ravel() for c in big])
    assert math.isclose(weights.std(), math.sqrt(2 / (64 * 9)), rel_tol=0.03)  # fan_out, ReLU gain
    assert abs(weights.mean()) < 0.003


def test_depth_must_be_6n_plus_2():
    for bad in (0, 2, 19, 21, 57, 20.0, "20"):
        with pytest.raises(ValueError, match="6n\\+2"):
            models.ResNet(bad)
    with pytest.raises(ValueError, match="block"):
        models.ResNet(20, block="middle")
    with pytest.raises(ValueError, match="unknown norm 'NoSuchNorm'.*BatchNorm2d"):
        models.ResNet(20, norm="NoSuchNorm")


# ---- parameter counts -----------------------------------------------------------------------


def test_resnet20_post_parameter_count():
    """He et al.'s ResNet-20 has 0.27M parameters. By hand, with option-B projections and
    BatchNorm's two affine parameters per channel:
      stem   conv 3*16*9 = 432, bn 2*16 = 32
      stage1 3 units x (2 convs 16*16*9 + 2 bn 2*16)                      = 3 * 4672 = 14016
      stage2 unit0 16*32*9 + 32*32*9 + 2*(2*32) + proj 16*32 + bn 2*32   = 14528
             2 units x (2 * 32*32*9 + 2*(2*32))                          = 2 * 18560 = 37120
      stage3 unit0 32*64*9 + 64*64*9 + 2*(2*64) + proj 32*64 + bn 2*64   = 57728
             2 units x (2 * 64*64*9 + 2*(2*64))                          = 2 * 73984 = 147968
      fc     64*10 + 10 = 650
    """
    by_hand = 432 + 32 + 14016 + 14528 + 37120 + 57728 + 147968 + 650
    assert by_hand == 272474
    tg.manual_seed(0)
    net = models.ResNet(20, "post")
    assert models.count_parameters(net) == by_hand == models.resnet_param_count(20, "post")
    assert round(by_hand / 1e6, 2) == 0.27
    # the pre-act net: no stem BN, no BN in the projections, a final BN; bn1 sees cin channels
    pre = models.ResNet(20, "pre")
    assert models.count_parameters(pre) == by_hand - 32 - 64 - 128 + 128 - 32 - 64 == 272282


@pytest.mark.parametrize("depth", [8, 32, 44, 56, 110])
@pytest.mark.parametrize("block", ["post", "pre"])
def test_parameter_count_formula(depth, block):
    tg.manual_seed(0)
    net = models.ResNet(depth, block, image_size=8)
    assert models.count_parameters(net) == models.resnet_param_count(depth, block)


def test_resnet110_is_1_7m():
    assert round(models.resnet_param_count(110, "post") / 1e6, 1) == 1.7  # He et al.: 1.7M


# ---- every registered conv normalizer -------------------------------------------------------


CONV_NORMS = models.conv_norm_names()


def test_registry_is_read_at_run_time():
    assert "BatchNorm2d" in CONV_NORMS
    assert CONV_NORMS == [n for n, s in REGISTRY.items() if s.make_for_conv is not None]


@pytest.mark.parametrize("norm", CONV_NORMS)
def test_every_conv_normalizer_builds_a_resnet_that_trains(norm):
    tg.manual_seed(0)
    batch = max(4, REGISTRY[norm].test_options.get("min_batch", 4))
    for block in ("post", "pre"):
        net = models.ResNet(8, block, norm=norm, image_size=8)
        x = leaf_input((batch, 3, 8, 8))
        y = tg.tensor(np.arange(batch) % 10)
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        assert math.isfinite(loss.item())
        for name, p in net.named_parameters():
            if p.requires_grad:
                assert p.grad is not None, (norm, block, name)
                assert np.all(np.isfinite(p.grad.numpy())), (norm, block, name)
        net.eval()
        with tg.no_grad():
            assert net(x).shape == (batch, 10)


def test_small_cnn_shapes():
    tg.manual_seed(0)
    net = models.SmallCNN(image_size=16)
    assert net(leaf_input((3, 3, 16, 16))).shape == (3, 10)
    assert all(m.bias is None for m in net.modules() if isinstance(m, nn.Conv2d))


# ---- the same network in PyTorch --------------------------------------------------------------


def _torch_resnet(torch, depth, block):
    """The architecture of models.ResNet written independently in PyTorch (same names)."""
    import collections as _c
    tnn, TF = torch.nn, torch.nn.functional

    class Post(tnn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.shortcut = tnn.Identity() if (stride, cin) == (1, cout) else tnn.Sequential(_c.OrderedDict(
                conv=tnn.Conv2d(cin, cout, 1, stride, bias=False), bn=tnn.BatchNorm2d(cout)))

        def forward(self, x):
            return TF.relu(self.bn2(self.conv2(TF.relu(self.bn1(self.conv1(x))))) + self.shortcut(x))

    class Pre(tnn.Module):
        def __init__(self, cin, cout, stride, first):
            super().__init__()
            projection = (stride, cin) != (1, cout)
            self.shared = first or projection
            self.bn1 = tnn.BatchNorm2d(cin)
            self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = tnn.BatchNorm2d(cout)
            self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.shortcut = tnn.Conv2d(cin, cout, 1, stride, bias=False) if projection else tnn.Identity()

        def forward(self, x):
            a = TF.relu(self.bn1(x))
            return self.conv2(TF.relu(self.bn2(self.conv1(a)))) + self.shortcut(a if self.shared else x)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            n = (depth - 2) // 6
            self.conv1 = tnn.Conv2d(3, 16, 3, 1, 1, bias=False)
            if block == "post":
                self.bn1 = tnn.BatchNorm2d(16)
            cin = 16
            for s, width in enumerate((16, 32, 64)):
                units = []
                for i in range(n):
                    stride = 2 if s > 0 and i == 0 else 1
                    units.append(Post(cin, width, stride) if block == "post"
                                 else Pre(cin, width, stride, s == 0 and i == 0))
                    cin = width
                setattr(self, f"layer{s + 1}", tnn.Sequential(*units))
            if block == "pre":
                self.bn = tnn.BatchNorm2d(64)
            self.fc = tnn.Linear(64, 10)

        def forward(self, x):
            x = self.conv1(x)
            if block == "post":
                x = TF.relu(self.bn1(x))
            x = self.layer3(self.layer2(self.layer1(x)))
            if block == "pre":
                x = TF.relu(self.bn(x))
            return self.fc(TF.adaptive_avg_pool2d(x, 1).flatten(1))

    return Net()


@pytest.mark.parametrize("block", ["post", "pre"])
def test_matches_the_same_network_written_in_pytorch(block):
    """Load our weights into an independent PyTorch version: same loss, same gradients."""
    torch = pytest.importorskip("torch")
    tg.manual_seed(0)
    ours = models.ResNet(14, block, image_size=8)
    theirs = _torch_resnet(torch, 14, block)
    theirs.load_state_dict({k: torch.tensor(v.numpy()) for k, v in ours.state_dict().items()},
                           strict=True)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 6)
    loss = F.cross_entropy(ours(tg.tensor(x)), tg.tensor(y))
    loss.backward()
    ref = torch.nn.functional.cross_entropy(theirs(torch.tensor(x)), torch.tensor(y))
    ref.backward()
    assert math.isclose(loss.item(), ref.item(), rel_tol=1e-5)
    grads = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(p.grad.numpy(), grads[name].grad.numpy(), rtol=1e-3,
                                   atol=1e-5 * float(np.abs(grads[name].grad.numpy()).max()),
                                   err_msg=name)


def test_both_variants_start_from_the_same_conv_and_linear_weights():
    """Same seed: the two nets draw their convs and fc in the same order and shapes, so the
    comparison starts from identical weights (the normalizers start at 1 and 0 anyway)."""
    params = {}
    for block in ("post", "pre"):
        tg.manual_seed(3)
        params[block] = dict(models.ResNet(20, block, image_size=8).named_parameters())
    pairs = [(k, k.replace("shortcut.conv", "shortcut")) for k in params["post"]
             if k.endswith(".weight") and ("conv" in k or k.startswith("fc"))]
    pairs += [("fc.bias", "fc.bias")]
    assert len(pairs) == 19 + 2 + 1 + 1  # 19 3x3 convs, 2 projections, fc weight and bias
    for post_name, pre_name in pairs:
        np.testing.assert_array_equal(params["post"][post_name].detach().numpy(),
                                      params["pre"][pre_name].detach().numpy(), err_msg=post_name)
