"""examples/_common.py: --no-wd-norm-bias puts normalization parameters and biases in a parameter
group without weight decay."""
import argparse

import numpy as np

import tinygrad_bn as tg
from examples import _common as C
from examples import models


def tiny_resnet(norm="BatchNorm2d"):
    tg.manual_seed(0)
    return models.ResNet(8, "pre", norm, 10, 3, 8)


def args(**options):
    base = dict(optimizer="sgd", lr=0.1, momentum=0.0, weight_decay=0.5, nesterov=False, no_wd_norm_bias=False)
    base.update(options)
    return argparse.Namespace(**base)


def test_without_the_option_one_group_decays_everything():
    model = tiny_resnet()
    optimizer = C.make_optimizer(args(), model)
    assert len(optimizer.param_groups) == 1
    assert optimizer.param_groups[0]["weight_decay"] == 0.5


def test_norm_parameters_and_biases_get_no_weight_decay():
    model = tiny_resnet()
    optimizer = C.make_optimizer(args(no_wd_norm_bias=True), model)
    decay, no_decay = optimizer.param_groups
    assert decay["weight_decay"] == 0.5 and no_decay["weight_decay"] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay["params"]}
    decayed = {names[id(p)] for p in decay["params"]}
    assert exempt | decayed == set(names.values()) and not exempt & decayed
    assert all(p.ndim > 1 for p in decay["params"])
    assert any(".bn" in n or "norm" in n.lower() for n in exempt), exempt
    assert any(n.endswith("bias") for n in exempt)
    assert not any(n.endswith("bias") for n in decayed)
    # one step with zero gradients: only the decayed parameters shrink
    before = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = tg.zeros_like(p)
    optimizer.step()
    for n, p in model.named_parameters():
        moved = not np.array_equal(p.detach().numpy(), before[n])
        assert moved == (n in decayed and np.abs(before[n]).sum() > 0), n


def test_frn_parameters_of_any_shape_are_exempt():
    model = tiny_resnet("FilterResponseNorm2d")
    decay, no_decay = C.make_optimizer(args(no_wd_norm_bias=True), model).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert any(names[id(p)].endswith("tau") for p in no_decay["params"])
    assert all(not names[id(p)].endswith(("tau", "bias")) for p in decay["params"])
