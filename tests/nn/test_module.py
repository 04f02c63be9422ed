"""Module: registration, naming and order (against PyTorch), state_dict save/load, modes, hooks,
deepcopy, repr, devices, and the module_path tags on graph nodes."""
import collections
import copy

import numpy as np
import pytest

import tinygrad_bn as tg
import tinygrad_bn.nn as nn
from tests.helpers import needs_torch, torch
from tests.nn.parity import load_from_torch


def make_net(lib):
    """The same network in tinygrad_bn (lib=tg) and in PyTorch (lib=torch): nested children, a
    tied module, a bias-less layer, persistent / non-persistent / None buffers."""
    mod = lib.nn

    class Block(mod.Module):
        def __init__(self):
            super().__init__()
            self.conv = mod.Conv2d(2, 3, 3, padding=1, bias=False)
            self.register_buffer("scale", lib.ones(3))
            self.register_buffer("cache", lib.zeros(2), persistent=False)
            self.register_buffer("absent", None)
            self.fc = mod.Linear(3, 3)

    class Net(mod.Module):
        def __init__(self):
            super().__init__()
            self.stem = mod.Linear(4, 3)
            self.register_buffer("steps", lib.zeros((), dtype=lib.int64))
            self.blocks = mod.Sequential(Block(), mod.ReLU(), Block())
            self.head = mod.ModuleDict({"out": mod.Linear(3, 2), "aux": mod.Linear(3, 1)})
            self.shared = self.stem  # the same module twice: listed once
            self.gain = mod.Parameter(lib.ones(1))

        def forward(self, x):
            return self.head["out"](self.stem(x).relu()) * self.gain

    return Net()


@needs_torch
def test_names_and_order_match_pytorch():
    ours, theirs = make_net(tg), make_net(torch)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert ours.state_dict()._metadata == theirs.state_dict()._metadata
    assert [n for n, _ in ours.named_modules(remove_duplicate=False)] == \
        [n for n, _ in theirs.named_modules(remove_duplicate=False)]
    assert [n for n, _ in ours.named_parameters(prefix="model", recurse=False)] == \
        [n for n, _ in theirs.named_parameters(prefix="model", recurse=False)]
    assert [n for n, _ in ours.named_parameters(remove_duplicate=False)] == \
        [n for n, _ in theirs.named_parameters(remove_duplicate=False)]


@needs_torch
def test_repr_matches_pytorch():
    def seq(mod):
        return mod.Sequential(mod.Linear(4, 3), mod.ReLU(), mod.Conv2d(3, 8, 3, padding=1),
                              mod.Conv2d(8, 8, (1, 3), stride=2, bias=False, groups=2))
    assert repr(seq(nn)) == repr(seq(torch.nn))
    assert repr(make_net(tg)) == repr(make_net(torch))


def test_state_dict_values_are_detached_and_share_data():
    net = make_net(tg)
    sd = net.state_dict()
    assert isinstance(sd, collections.OrderedDict)
    assert not sd["stem.weight"].requires_grad
    assert sd["stem.weight"].data is net.stem.weight.data
    assert net.state_dict(keep_vars=True)["stem.weight"] is net.stem.weight
    assert "blocks.0.cache" not in sd and "blocks.0.absent" not in sd


def test_round_trip_restores_outputs():
    a, b = make_net(tg), make_net(tg)
    x = tg.randn(2, 4)
    result = b.load_state_dict(a.state_dict())
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    np.testing.assert_array_equal(a(x).detach().numpy(), b(x).detach().numpy())


@needs_torch
def test_load_from_pytorch_copies_in_place():
    ours, theirs = make_net(tg), make_net(torch)
    weight = ours.stem.weight
    version = weight._version[0]
    load_from_torch(ours, theirs)
    # copied in place (twice: the tied "shared" module has its own keys, as in PyTorch)
    assert ours.stem.weight is weight and weight._version[0] == version + 2
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        np.testing.assert_array_equal(p.detach().numpy(), q.detach().numpy(), err_msg=name)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(ours(tg.tensor(x)).detach().numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-6)


@needs_torch
def test_strict_load_reports_every_problem_at_once():
    ours, theirs = make_net(tg), make_net(torch)
    sd = {k: v.detach().numpy() for k, v in theirs.state_dict().items()}
    del sd["stem.bias"], sd["blocks.2.scale"]
    sd["head.extra.weight"] = np.zeros(3)
    sd["blocks.0.fc.weight"] = np.zeros((2, 2))
    with pytest.raises(RuntimeError) as ours_error:
        ours.load_state_dict(sd)
    with pytest.raises(RuntimeError) as theirs_error:
        theirs.load_state_dict({k: torch.tensor(v) for k, v in sd.items()})
    lines, torch_lines = str(ours_error.value).split("\n"), str(theirs_error.value).split("\n")
    assert lines[0] == "Error(s) in loading state_dict for Net:"
    assert lines[:3] == torch_lines[:3]  # header, missing keys, unexpected keys: word for word
    assert lines[1] == '\tMissing key(s) in state_dict: "stem.bias", "blocks.2.scale". '
    assert lines[2] == '\tUnexpected key(s) in state_dict: "head.extra.weight". '
    assert lines[3] == ("\tsize mismatch for blocks.0.fc.weight: copying a param with shape [2, 2] "
                        "from checkpoint, the shape in current model is [3, 3].")


def test_non_strict_load_returns_the_keys():
    net = make_net(tg)
    sd = net.state_dict()
    del sd["head.aux.bias"]
    sd["bogus"] = tg.zeros(1)
    result = net.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["head.aux.bias"]
    assert result.unexpected_keys == ["bogus"]
    missing, unexpected = result  # a namedtuple
    assert missing == ["head.aux.bias"]


def test_non_strict_load_still_rejects_shape_mismatch():
    net = make_net(tg)
    sd = net.state_dict()
    sd["stem.weight"] = tg.zeros(2, 2)
    with pytest.raises(RuntimeError, match=r"size mismatch for stem.weight: .*\[2, 2\].*\[3, 4\]"):
        net.load_state_dict(sd, strict=False)


def test_load_rejects_non_mapping_and_non_tensor_values():
    net = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="Expected state_dict to be dict-like"):
        net.load_state_dict([("weight", tg.zeros(2, 2))])
    with pytest.raises(RuntimeError, match='While copying the parameter named "bias", expected a Tensor'):
        net.load_state_dict({"weight": tg.zeros(2, 2), "bias": [1.0, 2.0]})


def test_load_across_devices_and_dtypes(device):
    src = nn.Linear(3, 2).to(device).double()
    dst = nn.Linear(3, 2)
    dst.load_state_dict(src.state_dict())
    assert dst.weight.device == "cpu" and dst.weight.dtype == np.float32
    np.testing.assert_allclose(dst.weight.detach().numpy(), src.weight.detach().cpu().numpy(), rtol=1e-6)


class VersionedNet(nn.Module):
    """Saves `count` since version 2; loading a version-1 checkpoint fills it in (like BatchNorm's
    num_batches_tracked)."""

    _version = 2

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.register_buffer("count", tg.zeros((), dtype=tg.int64))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and prefix + "count" not in state_dict:
            state_dict[prefix + "count"] = tg.tensor(7)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)


def test_version_metadata_lets_old_checkpoints_load():
    outer = nn.Sequential(VersionedNet())
    sd = outer.state_dict()
    assert sd._metadata["0"] == {"version": 2} and sd._metadata[""] == {"version": 1}
    del sd["0.count"]
    with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "0.count"'):
        outer.load_state_dict(sd)  # a version-2 checkpoint must have it
    sd._metadata["0"]["version"] = 1
    outer.load_state_dict(sd)      # a version-1 checkpoint gets it filled in
    assert outer[0].count.item() == 7
    assert "0.count" not in sd     # the caller's dict is untouched


def test_setattr_registers_and_guards():
    m = nn.Module()
    m.w = nn.Parameter(tg.ones(2))
    m.sub = nn.Linear(1, 1)
    m.register_buffer("buf", tg.zeros(2))
    m.plain = tg.zeros(3)  # a plain Tensor attribute is not a buffer, as in PyTorch
    assert list(m._parameters) == ["w"] and list(m._modules) == ["sub"]
    assert list(m._buffers) == ["buf"]
    m.buf = tg.ones(2)  # replaces the registered buffer
    assert m._buffers["buf"] is m.buf and m.buf.numpy().sum() == 2
    with pytest.raises(TypeError, match="cannot assign 'Tensor' as parameter 'w'"):
        m.w = tg.zeros(2)
    with pytest.raises(TypeError, match="cannot assign 'int' as buffer 'buf'"):
        m.buf = 3
    m.w = None
    assert m.w is None and "w" in m._parameters
    del m.sub
    assert "sub" not in m._modules
    with pytest.raises(AttributeError, match="'Module' object has no attribute 'sub'"):
        m.sub


def test_assignment_before_init_is_an_error():
    class Broken(nn.Module):
        def __init__(self):
            self.w = nn.Parameter(tg.ones(1))

    with pytest.raises(AttributeError, match=r"cannot assign parameters before Module.__init__\(\) call"):
        Broken()


def test_register_errors():
    m = nn.Linear(2, 2)
    with pytest.raises(KeyError, match=r'contain "\."'):
        m.register_buffer("a.b", tg.zeros(1))
    with pytest.raises(KeyError, match="attribute 'in_features' already exists"):
        m.register_buffer("in_features", tg.zeros(1))
    with pytest.raises(TypeError, match="cannot assign 'list' object to buffer 'x'"):
        m.register_buffer("x", [1.0])
    with pytest.raises(TypeError, match="cannot assign 'Tensor' object to parameter 'p'"):
        m.register_parameter("p", tg.zeros(1))
    with pytest.raises(NotImplementedError, match='Module \\[Module\\] is missing the required "forward"'):
        nn.Module()(tg.ones(1))


def test_train_eval_recurse():
    net = make_net(tg)
    assert net.training and all(m.training for m in net.modules())
    assert net.eval() is net
    assert not any(m.training for m in net.modules())
    net.blocks.train()
    assert net.blocks[0].conv.training and not net.head.training
    with pytest.raises(ValueError, match="training mode is expected to be boolean"):
        net.train("yes")


def test_forward_hooks_and_removal():
    lin = nn.Linear(2, 2)
    calls = []
    pre = lin.register_forward_pre_hook(lambda m, args: (calls.append("pre"), (args[0] * 0,))[1])
    post = lin.register_forward_hook(lambda m, args, out: (calls.append("post"), out + 1)[1])
    y = lin(tg.ones(1, 2))
    assert calls == ["pre", "post"]
    np.testing.assert_allclose(y.detach().numpy(), lin.bias.detach().numpy()[None] + 1, rtol=1e-6)
    pre.remove()
    post.remove()
    np.testing.assert_allclose(lin(tg.zeros(1, 2)).detach().numpy(), lin.bias.detach().numpy()[None])
    assert calls == ["pre", "post"]
    with lin.register_forward_hook(lambda m, a, o: calls.append("ctx")):
        lin(tg.ones(1, 2))
    lin(tg.ones(1, 2))
    assert calls == ["pre", "post", "ctx"]


def test_deepcopy():
    net = make_net(tg)
    net.stem.weight.grad = tg.ones(3, 4)
    clone = copy.deepcopy(net)
    assert isinstance(clone.stem.weight, nn.Parameter) and clone.stem.weight.requires_grad
    assert clone.stem.weight is not net.stem.weight
    assert clone.stem.weight.data is not net.stem.weight.data
    np.testing.assert_array_equal(clone.stem.weight.detach().numpy(), net.stem.weight.detach().numpy())
    assert clone.shared is clone.stem  # sharing survives the copy
    assert clone.blocks[0].scale is not net.blocks[0].scale
    np.testing.assert_array_equal(clone.blocks[0].scale.numpy(), np.ones(3))
    assert "cache" in clone.blocks[0]._non_persistent_buffers_set
    clone.blocks[0].scale.data[0] = 5  # the copy's buffer has its own memory
    assert net.blocks[0].scale.numpy()[0] == 1
    assert list(clone.state_dict()) == list(net.state_dict())


def test_to_device_moves_everything_in_place(device):
    net = make_net(tg)
    net.stem.weight.grad = tg.ones(3, 4)
    params_before = list(net.parameters())
    assert net.to(device) is net
    assert list(net.parameters()) == params_before  # same Parameter objects (optimizers keep working)
    assert all(p.device == device for p in net.parameters())
    assert all(b.device == device for b in net.buffers())
    assert net.stem.weight.grad.device == device
    x = tg.randn(2, 4, device=device)
    net.zero_grad()
    net(x).sum().backward()
    assert net.stem.weight.grad.device == device and net.gain.grad.device == device
    net.cpu()
    assert all(p.device == "cpu" for p in net.parameters())


def test_to_dtype_casts_only_floats():
    net = make_net(tg).double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net.steps.dtype == np.int64 and net.blocks[0].scale.dtype == np.float64
    net.to(tg.float32)
    assert net.stem.weight.dtype == np.float32
    with pytest.raises(TypeError, match="only accepts floating point dtypes"):
        net.to(tg.int64)


def test_zero_grad_and_requires_grad():
    lin = nn.Linear(2, 2)
    lin(tg.ones(1, 2)).sum().backward()
    grad = lin.weight.grad
    lin.zero_grad(set_to_none=False)
    assert lin.weight.grad is grad and not grad.numpy().any()
    lin.zero_grad()
    assert lin.weight.grad is None
    lin.requires_grad_(False)
    assert not any(p.requires_grad for p in lin.parameters())


@needs_torch
def test_apply_visits_children_first():
    ours, theirs = [], []
    make_net(tg).apply(lambda m: ours.append(type(m).__name__))
    make_net(torch).apply(lambda m: theirs.append(type(m).__name__))
    assert ours == theirs


def test_get_submodule():
    net = make_net(tg)
    assert net.get_submodule("blocks.2.fc") is net.blocks[2].fc
    assert net.get_submodule("") is net
    with pytest.raises(AttributeError, match="has no submodule `nope`"):
        net.get_submodule("blocks.nope")


# ---- module_path tags on graph nodes (for graph drawing) ---------------------------------------
def _paths(output):
    """node name -> module_path for every node reachable from output."""
    from tinygrad_bn.autograd.engine import topological_order
    return [(node.name, node.module_path) for node in topological_order([output.grad_fn])]


class Tagged(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, 4), nn.ReLU())
        self.head = nn.Linear(4, 2)

    def forward(self, x):
        h = self.body(x)
        h = nn.Sigmoid()(h)  # made on the fly: no name of its own, tagged as the caller
        return self.head.forward(h) * 2  # calling forward directly bypasses __call__ too


def test_module_path_tags_innermost_module(device):
    net = Tagged().to(device)
    out = net(tg.randn(5, 3, device=device))
    paths = dict(_paths(out))
    assert paths["MulBackward"] == ""
    assert paths["SigmoidBackward"] == ""
    assert paths["ReluBackward"] == "body.1"
    tags = [p for name, p in _paths(out) if name == "LinearBackward"]
    assert sorted(tags) == ["", "body.0"]  # head.forward() called directly belongs to the root


def test_module_path_of_a_nested_root_call():
    net = Tagged()
    x = tg.randn(1, 3, requires_grad=True)
    pre = (x * 3)  # made before the module ran: never tagged
    out = net.body(pre)  # a submodule used as a root gets the root's path ""
    paths = dict(_paths(out))
    assert paths["LinearBackward"] == "0" and paths["ReluBackward"] == "1"
    assert paths["MulBackward"] is None


def test_no_tagging_without_grad():
    net = Tagged()
    with tg.no_grad():
        out = net(tg.randn(1, 3))
    assert out.grad_fn is None


@needs_torch
def test_reassignment_keeps_registration_order():
    ours, theirs = make_net(tg), make_net(torch)
    for net, lib in ((ours, tg), (theirs, torch)):
        net.stem = lib.nn.Linear(4, 3)       # a module replaced in place
        net.head["out"].weight = lib.nn.Parameter(lib.zeros(2, 3))  # a parameter replaced
    assert list(ours.state_dict()) == list(theirs.state_dict())
