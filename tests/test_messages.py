"""No user-facing message names another framework (issue 15, item 4).

Two scans: every string literal in a `raise ...(...)` or `warnings.warn(...)` of the package, read
from the source; and the messages actually raised by the bad-input catalogues of the test suite
(every `fn/call, exc, pattern` table below) and by the extension-mistake catalogue. Only messages
about the oracle itself may say "torch": the benchmark's comparisons and the normalizer registry's
PyTorch twin (`torch_make`), which exist to talk about it."""
import ast
import importlib
import pathlib
import re

import pytest

import tinygrad_bn

TORCH = re.compile(r"\btorch\b", re.IGNORECASE)  # "torch", "torch.Size"; not "PyTorch"
PACKAGE = pathlib.Path(tinygrad_bn.__file__).parent
ABOUT_THE_ORACLE = {"bench"}  # tinygrad_bn/bench/ compares against PyTorch and says so
CATALOGUES = ["tests.ops.test_errors", "tests.ops.test_conv", "tests.ops.test_pool", "tests.ops.test_upsample",
              "tests.ops.test_pointwise", "tests.ops.test_indexing", "tests.ops.test_layout",
              "tests.ops.test_cumulative", "tests.ops.test_sorting", "tests.ops.test_linalg",
              "tests.ops.test_activation", "tests.ops.test_embedding", "tests.nn.test_activation", "tests.nn.test_sparse",
              "tests.test_tensor_methods"]


def _message_literals(path):
    """(line, text) of every string constant inside a raise or a warnings.warn call."""
    tree = ast.parse(path.read_text(), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "warn":
            target = node
        else:
            continue
        for sub in ast.walk(target):
            if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                yield node.lineno, sub.value


def test_no_raise_or_warning_in_the_package_says_torch():
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.relative_to(PACKAGE).parts[0] in ABOUT_THE_ORACLE:
            continue
        for line, text in _message_literals(path):
            if TORCH.search(text) and "torch_make" not in text:  # NormSpec: the oracle's own field
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert found == [], "messages naming another framework:\n" + "\n".join(found)


def _catalogue_cases():
    """(where, callable, exception type) of every bad-input table in CATALOGUES."""
    cases = []
    for name in CATALOGUES:
        module = importlib.import_module(name)
        for attr, test in vars(module).items():
            for mark in getattr(test, "pytestmark", ()):
                if mark.name != "parametrize":
                    continue
                names = [n.strip() for n in mark.args[0].split(",")] if isinstance(mark.args[0], str) else list(mark.args[0])
                if "exc" not in names or not names or names[0] not in ("fn", "call"):
                    continue
                for i, row in enumerate(mark.args[1]):
                    row = row.values if hasattr(row, "values") else row
                    cases.append((f"{name}::{attr}[{i}]", row[0], row[names.index("exc")]))
    return cases


def test_the_catalogues_are_found():
    assert len(_catalogue_cases()) > 80


def test_no_message_of_the_bad_input_catalogues_says_torch():
    said = []
    for where, call, exc in _catalogue_cases():
        try:
            call()
        except exc as e:
            if TORCH.search(str(e)):
                said.append(f"{where}: {e}")
        except pytest.skip.Exception:
            continue
    assert said == [], "\n".join(said)


def test_no_message_of_the_extension_mistakes_says_torch():
    from tests.autograd.test_extension_mistakes import MESSAGES
    said = [f"{key}: {text}" for key, produce in MESSAGES.items() if TORCH.search(text := produce())]
    assert said == [], "\n".join(said)


def test_the_scan_can_fail():
    assert TORCH.search("got input size torch.Size([1, 3])")
    assert not TORCH.search("PyTorch's own rule")


@pytest.mark.parametrize("make,shape,expected", [
    # PyTorch's own wording, with the size as a tuple (it printed torch.Size([1, 3]) before)
    (lambda nn: nn.BatchNorm1d(3), (1, 3), r"^BatchNorm1d: Expected more than 1 value per channel when training, got input size \(1, 3\)$"),
    (lambda nn: nn.DecorrelatedBatchNorm(4, groups=2), (1, 4), r"^DecorrelatedBatchNorm: Expected more than 1 value per channel when training, got input size \(1, 4\)$"),
    (lambda nn: nn.BatchNorm2d(4), (2, 3, 5, 5), r"^BatchNorm2d\(4\): expected input with 4 channels \(dim 1\), got input of shape \[2, 3, 5, 5\]$"),
    (lambda nn: nn.BatchNorm3d(2), (2, 2, 3, 3), r"^BatchNorm3d\(2\): expected 5D input \(got 4D input\); input of shape \[2, 2, 3, 3\]$"),
    (lambda nn: nn.InstanceNorm3d(2, affine=True), (2, 3, 2, 2, 2), r"^InstanceNorm3d\(2\): expected input's size at dim=1 to match num_features \(2\), but got: 3\. Input of shape \[2, 3, 2, 2, 2\]\.$"),
    (lambda nn: nn.GroupNorm(2, 4), (2, 3, 5), r"^GroupNorm\(2, 4\): expected input with 4 channels \(dim 1\), got input of shape \[2, 3, 5\]$"),
])
def test_normalizer_shape_errors_name_the_shape_and_no_other_framework(make, shape, expected):
    import tinygrad_bn as tg
    layer = make(tg.nn)
    with pytest.raises((ValueError, RuntimeError)) as info:
        layer(tg.ones(*shape))
    assert re.search(expected, str(info.value)), str(info.value)
    assert not TORCH.search(str(info.value))
