"""Sequential, ModuleList, ModuleDict: indexing, slicing, mutation and the resulting names
(checked against PyTorch's), forward chaining, repr."""
import collections

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import needs_torch, torch


def keys(module):
    return list(module.state_dict())


def build(mod, *sizes):
    return [mod.Linear(a, b) for a, b in zip(sizes, sizes[1:])]


def test_sequential_forward_chains():
    seq = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    x = tg.randn(5, 3)
    expected = seq[2](seq[1](seq[0](x)))
    np.testing.assert_array_equal(seq(x).detach().numpy(), expected.detach().numpy())


@needs_torch
def test_sequential_indexing_and_mutation_match_pytorch():
    ours = nn.Sequential(*build(nn, 1, 2, 3, 4, 5))
    theirs = torch.nn.Sequential(*build(torch.nn, 1, 2, 3, 4, 5))
    assert len(ours) == len(theirs) == 4
    assert ours[-1] is list(ours)[3]
    assert keys(ours[1:3]) == keys(theirs[1:3])  # slices keep the original names
    assert isinstance(ours[1:3], nn.Sequential)
    for seq, mod in ((ours, nn), (theirs, torch.nn)):
        del seq[1]
        seq.append(mod.ReLU())
        seq.insert(1, mod.Linear(2, 3))
        seq[0] = mod.Linear(1, 2)
    assert keys(ours) == keys(theirs)
    assert repr(ours) == repr(theirs)


@needs_torch
def test_sequential_from_ordered_dict():
    def make(mod):
        return mod.Sequential(collections.OrderedDict([("conv", mod.Conv2d(1, 2, 3)),
                                                       ("act", mod.ReLU())]))
    assert keys(make(nn)) == keys(make(torch.nn))
    assert repr(make(nn)) == repr(make(torch.nn))
    assert make(nn)[0].out_channels == 2


def test_sequential_index_out_of_range():
    with pytest.raises(IndexError, match="Sequential: index 3 is out of range for a container of length 2"):
        nn.Sequential(nn.ReLU(), nn.ReLU())[3]


@needs_torch
def test_module_list_matches_pytorch():
    ours = nn.ModuleList(build(nn, 2, 2, 2, 2))
    theirs = torch.nn.ModuleList(build(torch.nn, 2, 2, 2, 2))
    for lst, mod in ((ours, nn), (theirs, torch.nn)):
        lst.append(mod.ReLU())
        lst.extend([mod.Linear(2, 1)])
        lst.insert(0, mod.Tanh())
        lst += [mod.Sigmoid()]
        del lst[2]
    assert keys(ours) == keys(theirs)
    assert repr(ours) == repr(theirs)  # including the "(1-2): 2 x Linear(...)" compression
    assert [type(m).__name__ for m in ours] == [type(m).__name__ for m in theirs]
    assert isinstance(ours[1:], nn.ModuleList) and len(ours[1:]) == len(ours) - 1
    assert len(list(ours.parameters())) == len(list(theirs.parameters()))


def test_module_list_is_not_callable():
    with pytest.raises(NotImplementedError, match="ModuleList is a container"):
        nn.ModuleList([nn.ReLU()])(tg.ones(1))


@needs_torch
def test_module_dict_matches_pytorch():
    def make(mod):
        d = mod.ModuleDict({"b": mod.Linear(1, 2), "a": mod.Linear(2, 1)})
        d["c"] = mod.ReLU()
        d.update([("d", mod.Linear(3, 3))])
        d.pop("a")
        return d
    ours, theirs = make(nn), make(torch.nn)
    assert list(ours.keys()) == list(theirs.keys()) == ["b", "c", "d"]
    assert keys(ours) == keys(theirs)
    assert repr(ours) == repr(theirs)
    assert "c" in ours and "a" not in ours and len(ours) == 3
    assert [k for k in ours] == ["b", "c", "d"]
    assert dict(ours.items())["b"] is ours["b"]
