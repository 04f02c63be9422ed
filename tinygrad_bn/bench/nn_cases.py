"""Layer-level cases (issues: nn, normalizers, performance): matmul, conv2d forward+backward at
ResNet-20 shapes, every normalizer PyTorch also has, a ResNet-20 training step and its peak memory.

Each case is (name, ours, torch): two zero-argument callables doing the same work."""
import json
import os
import subprocess
import sys

import numpy as np

import tinygrad_bn as tg
from tinygrad_bn.norms import REGISTRY


def _pair(shape, torch, seed=0, requires_grad=True):
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    return tg.tensor(x, requires_grad=requires_grad), torch.tensor(x, requires_grad=requires_grad)


def _fwd_bwd(module, x, grad):
    def run():
        x.grad = None
        module(x).backward(grad)
    return run


def matmul_cases(torch, n=512):
    (a, ta), (b, tb) = _pair((n, n), torch, 0, False), _pair((n, n), torch, 1, False)
    return [(f"matmul {n}x{n}", lambda: a @ b, lambda: ta @ tb)]


# ResNet-20 on 32x32 inputs, batch 128: the three stages' 3x3 convolutions
RESNET20_CONVS = [(128, 16, 32, 16, 1), (128, 32, 16, 32, 1), (128, 64, 8, 64, 1), (128, 16, 32, 32, 2)]


def conv_cases(torch, quick=False):
    cases = []
    convs = [(64, 32, 32, 32, 1)] + ([] if quick else RESNET20_CONVS)
    for n, cin, hw, cout, stride in convs:
        conv = tg.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        tconv = torch.nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        with torch.no_grad():
            tconv.weight.copy_(torch.tensor(conv.weight.numpy() if not conv.weight.requires_grad else conv.weight.detach().numpy()))
        x, tx = _pair((n, cin, hw, hw), torch)
        out_hw = (hw + 2 - 3) // stride + 1
        g, tgrad = _pair((n, cout, out_hw, out_hw), torch, 1, False)
        cases.append((f"conv3x3 {n}x{cin}x{hw}x{hw}->{cout} s{stride} f+b",
                       _fwd_bwd(conv, x, g), _fwd_bwd(tconv, tx, tgrad)))
    return cases


def norm_cases(torch, quick=False):
    """Every registered normalizer that PyTorch also has, forward+backward on a conv-sized map."""
    shape = (32, 64, 16, 16) if quick else (128, 64, 32, 32)
    cases = []
    seen = set()
    for name, spec in REGISTRY.items():
        if spec.torch_make is None or spec.make_for_conv is None:
            continue
        ours = spec.make_for_conv(shape[1], shape[2])
        kind = type(ours).__name__
        if kind in seen:
            continue
        seen.add(kind)
        theirs = _torch_twin(torch, ours, shape)
        if theirs is None:
            continue
        x, tx = _pair(shape, torch)
        g, tgrad = _pair(shape, torch, 1, False)
        cases.append((f"{kind} {'x'.join(map(str, shape))} f+b", _fwd_bwd(ours, x, g), _fwd_bwd(theirs, tx, tgrad)))
    return cases


def _torch_twin(torch, module, shape):
    """The PyTorch layer with the same configuration (read back from our module's repr args)."""
    kind = type(module).__name__
    c = shape[1]
    if kind in ("BatchNorm2d",):
        return torch.nn.BatchNorm2d(c)
    if kind == "GroupNorm":
        return torch.nn.GroupNorm(module.num_groups, module.num_channels)
    if kind == "LayerNorm":
        return torch.nn.LayerNorm(list(module.normalized_shape))
    if kind == "InstanceNorm2d":
        return torch.nn.InstanceNorm2d(c, affine=module.affine)
    if kind == "RMSNorm":
        return torch.nn.RMSNorm(list(module.normalized_shape))
    return None


def resnet_step_cases(torch, depth=20, batch=128, which=("ours", "torch"), device="cpu", torch_device="cpu"):
    """One SGD training step of a post-activation CIFAR ResNet, ours and PyTorch's
    (`which` limits what is built, so that a memory probe holds one framework only)."""
    try:
        from examples.models import resnet
    except ImportError:
        return []  # run from the repository root to include the ResNet cases
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
    y_np = rng.integers(0, 10, batch)
    steps = {"ours": None, "torch": None}
    if "ours" in which:
        model = resnet(depth=depth, block="post").to(device)
        opt = tg.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x, y = tg.tensor(x_np, device=device), tg.tensor(y_np, device=device)

        def ours():
            opt.zero_grad()
            tg.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        steps["ours"] = ours
    if "torch" in which:
        tmodel = _torch_resnet(torch, depth).to(torch_device)
        topt = torch.optim.SGD(tmodel.parameters(), lr=0.1, momentum=0.9)
        tx, ty = torch.tensor(x_np, device=torch_device), torch.tensor(y_np, device=torch_device)

        def theirs():
            topt.zero_grad()
            torch.nn.functional.cross_entropy(tmodel(tx), ty).backward()
            topt.step()
        steps["torch"] = theirs
    return [(f"ResNet-{depth} train step b{batch}", steps["ours"], steps["torch"])]


def _torch_resnet(torch, depth):
    """The same post-activation CIFAR ResNet in PyTorch (He et al. 2016a, option B shortcuts)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            out = torch.relu(self.bn1(self.conv1(x)))
            return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))

    n = (depth - 2) // 6
    layers, cin = [nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU()], 16
    for cout, stride in ((16, 1), (32, 2), (64, 2)):
        for i in range(n):
            layers.append(Block(cin, cout, stride if i == 0 else 1))
            cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)]
    return nn.Sequential(*layers)


_PEAK_SCRIPT = r"""
import json, sys, threading, time
framework, depth, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
import torch
torch.set_num_threads(2)
from tinygrad_bn.bench.nn_cases import resnet_step_cases
cases = resnet_step_cases(torch, depth, batch, which=(framework,))
if not cases:
    print(json.dumps(None)); sys.exit()
_, ours, theirs = cases[0]
step = ours if framework == "ours" else theirs

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

baseline, peak, done = rss_mib(), [0.0], []
def sample():  # the resident set, sampled every millisecond while the steps run
    while not done:
        peak[0] = max(peak[0], rss_mib())
        time.sleep(0.001)
sampler = threading.Thread(target=sample)
sampler.start()
for _ in range(4):  # the first step included: after it, freed memory stays in the heap
    step()
done.append(True)
sampler.join()
print(json.dumps({"peak_increase_mib": peak[0] - baseline, "baseline_mib": baseline}))
"""


def peak_memory(depth=20, batch=128):
    """Peak resident-memory increase during 4 training steps over the resident set after setup
    (model, optimizer and batch built), each framework alone in its own process, in MiB:
    (ours, torch) or None."""
    results = {}
    env = dict(os.environ, PYTHONPATH=os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for framework in ("ours", "torch"):
        proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, framework, str(depth), str(batch)],
                              capture_output=True, text=True, env=env, timeout=600)
        if proc.returncode != 0:
            return None
        value = json.loads(proc.stdout.strip().splitlines()[-1])
        if value is None:
            return None
        results[framework] = value["peak_increase_mib"]
    return results["ours"], results["torch"]
