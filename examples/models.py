"""The example models: CIFAR-style ResNets (post- and pre-activation) and a small CNN.

    from examples.models import resnet, SmallCNN
    post = resnet(20, block="post", norm="BatchNorm2d", image_size=32)
    pre = resnet(20, block="pre")

ResNet for 32x32 inputs (He et al. 2016a, section 4.2): depth 6n+2 = a 3x3 stem conv, three
stages of n residual units each (widths 16/32/64, feature maps S, S/2, S/4; each unit two 3x3
convs), global average pooling and a linear classifier. Where the shape changes (the first unit
of stages 2 and 3) the shortcut is a 1x1 stride-2 projection ("option B"); elsewhere identity.

    post-activation (2016a)                 pre-activation (He et al. 2016b)
    x --conv-BN-ReLU-conv-BN--(+)--ReLU-->   x --BN-ReLU-conv-BN-ReLU-conv--(+)-->
    \\-------- shortcut --------/            \\---------- identity ----------/

Pre-activation, the paper's rules for the ends of the network (2016b), and how the authors'
code (KaimingHe/resnet-1k-layers, resnet-pre-act.lua) applies them:
  * the stem is a bare conv (no BN, no ReLU);
  * the first unit after the stem, and every unit with a projection shortcut, applies its
    BN-ReLU *before* splitting into the two paths: the shortcut (identity after the stem,
    1x1 conv at a stage change) takes the activated input. `block.preact_shared` is True there.
  * every other unit keeps its BN-ReLU on the residual branch: its shortcut is the bare
    identity, not a single op between one unit's addition and the next one's;
  * after the last unit, an extra BN-ReLU (`bn`) before pooling.
Projection shortcuts are a 1x1 conv + norm in the post variant, a bare 1x1 conv in the pre variant
(its output goes straight into the addition, like the residual branch's last conv).

Every conv followed by a normalizer has no bias. Convs are Kaiming-normal initialised (fan_out,
ReLU gain, as torchvision does); normalizers keep their own init (weight 1, bias 0).

Module names (state_dict keys and graph clusters): stem "conv1" (+ "bn1" in the post variant),
"layer1".."layer3" (Sequentials of units "0", "1", ...), each unit with children "conv1",
"bn1", "conv2", "bn2", "shortcut" (created in the order they run), and "bn" (pre only), "fc".
"""
import collections

import tinygrad_bn.nn as nn
import tinygrad_bn.nn.functional as F
from tinygrad_bn.norms import REGISTRY

DEFAULT_NORM = "BatchNorm2d"
WIDTHS = (16, 32, 64)


# ---- normalizers from the registry ----------------------------------------------------------
def conv_norm_names():
    """Names in tinygrad_bn.norms.REGISTRY that can normalize conv feature maps, read now (other
    files may have registered more since this module was written)."""
    return [name for name, spec in REGISTRY.items() if spec.make_for_conv is not None]


def make_norm(norm, channels, hw):
    """A normalizer Module for (N, channels, hw, hw) maps, from the registry's make_for_conv."""
    spec = REGISTRY.get(norm)
    if spec is None or spec.make_for_conv is None:
        raise ValueError(f"unknown norm {norm!r}; choose one of: {', '.join(conv_norm_names())}")
    layer = spec.make_for_conv(channels, hw)
    if layer is None:
        raise ValueError(f"norm {norm!r} cannot normalize ({channels}, {hw}, {hw}) feature maps "
                         f"(its make_for_conv returned None)")
    return layer


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def conv1x1(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 1, stride=stride, bias=False)


# ---- residual units -------------------------------------------------------------------------
class BasicBlock(nn.Module):
    """Post-activation unit (He et al. 2016a): relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)).

    hw is the input's spatial size (for normalizers whose shape depends on it)."""

    def __init__(self, cin, cout, stride=1, norm=DEFAULT_NORM, hw=32):
        super().__init__()
        hw_out = (hw + stride - 1) // stride
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = make_norm(norm, cout, hw_out)
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = make_norm(norm, cout, hw_out)
        if stride != 1 or cin != cout:  # option B: projection where the shape changes
            self.shortcut = nn.Sequential(collections.OrderedDict(
                [("conv", conv1x1(cin, cout, stride)), ("bn", make_norm(norm, cout, hw_out))]))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class PreActBlock(nn.Module):
    """Pre-activation unit (He et al. 2016b): conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut.

    preact_shared=False: shortcut(x) is the untouched input (identity).
    preact_shared=True (first unit after the stem, and units with a projection): a = relu(bn1(x))
    feeds both paths, so the output is conv2(...(a)) + shortcut(a)."""

    def __init__(self, cin, cout, stride=1, norm=DEFAULT_NORM, hw=32, preact_shared=False):
        super().__init__()
        hw_out = (hw + stride - 1) // stride
        projection = stride != 1 or cin != cout
        self.preact_shared = bool(preact_shared or projection)
        self.bn1 = make_norm(norm, cin, hw)
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn2 = make_norm(norm, cout, hw_out)
        self.conv2 = conv3x3(cout, cout)
        self.shortcut = conv1x1(cin, cout, stride) if projection else nn.Identity()

    def forward(self, x):
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + self.shortcut(a if self.preact_shared else x)

    def extra_repr(self):
        return "preact_shared=True" if self.preact_shared else ""


# ---- the network ----------------------------------------------------------------------------
def check_depth(depth):
    """n for a depth of the form 6n+2 (n >= 1), else ValueError."""
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
        raise ValueError(f"depth must be of the form 6n+2 with n >= 1 (8, 14, 20, 32, 44, 56, 110, "
                         f"...), got {depth!r}")
    return (depth - 2) // 6


class ResNet(nn.Module):
    """ResNet(depth=20, block="post"|"pre", norm="BatchNorm2d", num_classes=10, in_channels=3,
    image_size=32): a CIFAR-style ResNet of depth 6n+2 (see the module docstring)."""

    def __init__(self, depth=20, block="post", norm=DEFAULT_NORM, num_classes=10, in_channels=3,
                 image_size=32):
        super().__init__()
        n = check_depth(depth)
        if block not in ("post", "pre"):
            raise ValueError(f"block must be 'post' or 'pre', got {block!r}")
        make_norm(norm, WIDTHS[0], image_size)  # fail early, with the list of valid names
        self.depth, self.block, self.norm, self.image_size = depth, block, norm, image_size
        pre = block == "pre"
        self.conv1 = conv3x3(in_channels, WIDTHS[0])
        if not pre:
            self.bn1 = make_norm(norm, WIDTHS[0], image_size)
        cin, hw = WIDTHS[0], image_size
        for stage, width in enumerate(WIDTHS):
            units = []
            for i in range(n):
                stride = 2 if (stage > 0 and i == 0) else 1
                if pre:
                    unit = PreActBlock(cin, width, stride, norm, hw, preact_shared=(stage == 0 and i == 0))
                else:
                    unit = BasicBlock(cin, width, stride, norm, hw)
                units.append(unit)
                cin, hw = width, (hw + stride - 1) // stride
            setattr(self, f"layer{stage + 1}", nn.Sequential(*units))
        if pre:
            self.bn = make_norm(norm, cin, hw)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.conv1(x)
        if self.block == "post":
            x = F.relu(self.bn1(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        if self.block == "pre":
            x = F.relu(self.bn(x))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)

    def extra_repr(self):
        return f"depth={self.depth}, block={self.block!r}, norm={self.norm!r}"


def resnet(depth=20, block="post", norm=DEFAULT_NORM, **kwargs):
    return ResNet(depth, block, norm, **kwargs)


def resnet_param_count(depth, block="post", num_classes=10, in_channels=3, affine_per_channel=2):
    """The parameter count of ResNet(depth, block) with a normalizer that has
    `affine_per_channel` parameters per channel (BatchNorm: weight and bias = 2), by arithmetic."""
    n = check_depth(depth)
    k = affine_per_channel
    total = 9 * in_channels * WIDTHS[0]  # stem conv
    total += 0 if block == "pre" else k * WIDTHS[0]
    cin = WIDTHS[0]
    for stage, width in enumerate(WIDTHS):
        for i in range(n):
            proj = cin != width
            total += 9 * cin * width + 9 * width * width  # conv1, conv2
            total += k * (cin if block == "pre" else width) + k * width  # bn1, bn2
            if proj:
                total += cin * width + (0 if block == "pre" else k * width)
            cin = width
    total += k * cin if block == "pre" else 0  # final bn
    return total + cin * num_classes + num_classes  # fc


# ---- a small CNN ----------------------------------------------------------------------------
class SmallCNN(nn.Module):
    """Three conv-norm-ReLU-maxpool stages (32/64/128 channels), global average pool, linear.

    A quick model for the embedded dataset: a few seconds per epoch at 16x16."""

    def __init__(self, num_classes=10, in_channels=3, norm=DEFAULT_NORM, image_size=32,
                 widths=(32, 64, 128)):
        super().__init__()
        layers, cin, hw = [], in_channels, image_size
        for width in widths:
            layers += [nn.Conv2d(cin, width, 3, padding=1, bias=False), make_norm(norm, width, hw),
                       nn.ReLU(), nn.MaxPool2d(2)]
            cin, hw = width, hw // 2
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.features(x)
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---- helpers for drawing one unit -------------------------------------------------------------
class NamedUnit(nn.Module):
    """Holds one residual unit under its place in a ResNet (stage "layer2", index 0), so that a
    graph drawn from NamedUnit(...)(x) names its parameters and clusters as in the whole network
    (layer2.0.conv1.weight) rather than conv1.weight."""

    def __init__(self, stage, index, unit):
        super().__init__()
        self.add_module(stage, nn.Sequential(collections.OrderedDict([(str(index), unit)])))
        self.stage = stage

    def forward(self, x):
        return getattr(self, self.stage)(x)


def unit_input_size(image_size, stage, index):
    """Spatial size of the input of unit `index` of stage "layerS" for image_size inputs."""
    s = int(stage[len("layer"):])
    halvings = (s - 1) - (1 if (s > 1 and index == 0) else 0)
    size = image_size
    for _ in range(halvings):
        size = (size + 1) // 2
    return size


def count_parameters(model):
    return sum(p.numel() for p in model.parameters())
