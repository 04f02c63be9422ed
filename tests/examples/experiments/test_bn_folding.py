"""bn_folding's invariants, on small direct calls (no training): a ResNet folded with the project's
fuse_bn equals the unfolded one to 1e-5 relative in float32 and 1e-10 in float64 (and a wrong
fold fails the same check); every BN of a post-activation ResNet folds away; the operation,
FLOP and parameter counts are the ones arithmetic gives; the verdict follows the rule."""
import numpy as np
import pytest

import tinygrad_bn as tg
from tinygrad_bn import nn
from examples.experiments import bn_folding as E
from examples.models import resnet


def trained_looking(block="post", seed=0, dtype="float32"):
    """ResNet-8 whose BNs have non-trivial running statistics and affine parameters (what
    training leaves), in eval mode, and a batch of inputs."""
    tg.manual_seed(seed)
    model = resnet(8, block, image_size=8)
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.data[...] = rng.normal(0, 0.5, c)
            m.running_var.data[...] = rng.uniform(0.2, 3.0, c)
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.normal(0, 0.3, c)
    model.eval()
    x = tg.tensor(rng.standard_normal((16, 3, 8, 8)).astype(np.float32))
    if dtype == "float64":
        model, x = model.double(), x.double()
    return model, x


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("block", ["post", "pre"])
def test_folded_equals_unfolded(dtype, block):
    model, x = trained_looking(block, dtype=dtype)
    folded, n = E.fold(model, x[:2])
    assert n > 0
    assert folded.fc.weight.dtype == model.fc.weight.dtype
    labels = np.zeros(16, dtype=np.int64)
    result = E.compare(model, folded, [x[:8], x[8:]], labels)
    assert result["max_rel_logit_diff"] <= E.TOLERANCE[dtype]
    assert result["changed_predictions"] == 0
    # a wrong fold (one BN's running variance changed after folding) fails the same check
    bn = next(m for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    bn.running_var.data[...] *= 1.5
    assert E.compare(model, folded, [x], labels)["max_rel_logit_diff"] > 1e-3


def test_every_bn_of_a_post_resnet_folds_and_pre_keeps_its_input_bns():
    post, x = trained_looking("post")
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in post.modules())
    folded, n = E.fold(post, x[:2])
    assert n == n_bn and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    pre, x = trained_looking("pre")
    _, n_pre = E.fold(pre, x[:2])
    # pre-activation: each unit's bn2 follows its conv1, and the first unit's bn1 takes the stem
    # conv's output (which goes nowhere else); every other bn1 and the final bn normalize a sum
    assert n_pre == sum(1 for m in pre.modules() if hasattr(m, "bn2")) + 1


def test_node_flop_and_parameter_counts():
    model, x = trained_looking("post")
    folded, n = E.fold(model, x[:2])
    before, after = E.graph_nodes(model, x[:2]), E.graph_nodes(folded, x[:2])
    assert before["BatchNorm2dBackward"] == n and "BatchNorm2dBackward" not in after
    assert sum(before.values()) - sum(after.values()) == n
    assert before["ConvolutionBackward"] == after["ConvolutionBackward"]
    # parameters: each BN's weight and bias (2 C) go, its conv gains a bias (C)
    bn_channels = sum(m.num_features for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert E.count_parameters(model) - E.count_parameters(folded) == bn_channels


def test_flops_by_hand():
    conv, bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
    model = nn.Sequential(conv, bn).eval()
    x = tg.tensor(np.ones((1, 3, 5, 5), dtype=np.float32))
    outputs = 4 * 5 * 5
    assert E.flops(model, x) == 2 * outputs * 27 + 4 * outputs
    folded, _ = E.fold(model, x)
    assert E.flops(folded, x) == 2 * outputs * 27 + outputs  # the fused conv's bias add


def test_time_pair_times_both_alternately():
    model, x = trained_looking("post")
    folded, _ = E.fold(model, x[:2])
    medians, raw = E.time_pair(model, folded, x, repeats=3)
    assert len(raw["unfolded"]) == len(raw["folded"]) == 3
    assert all(v > 0 for v in medians.values())


def test_verdict_follows_the_rule():
    def runs(rel, ratio, flops=(100, 90)):
        return [{"max_rel_logit_diff": rel, "test_acc_unfolded": 0.5, "test_acc_folded": 0.5, "n_test": 100,
                 "flops_unfolded": flops[0], "flops_folded": flops[1], "nodes_unfolded": 10,
                 "nodes_folded": 8, "time_ratio": ratio + 0.01 * s} for s in range(3)]
    good = {"float32": runs(1e-7, 0.8), "float64": runs(1e-15, 0.8)}
    assert E.verdict(good)[0] == "reproduced"
    assert E.verdict(dict(good, float64=runs(1e-9, 0.8)))[0] == "not reproduced"
    assert E.verdict(dict(good, float32=runs(1e-7, 1.2)))[0] == "not reproduced"
    assert E.verdict(dict(good, float32=runs(1e-7, 1.0)))[0] == "inconclusive"
