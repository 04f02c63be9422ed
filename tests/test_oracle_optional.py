"""PyTorch is an optional test oracle: without it, every test that needs it skips with a reason.

The rule is enforced in one place, tests/helpers.py: there `torch` is either PyTorch or a
stand-in whose first real use skips the calling test. These tests check the stand-in itself, and
that no test file goes around it by importing torch on its own.
"""
import ast
import pathlib

import pytest

from tests.helpers import NO_ORACLE, MissingOracle

TESTS = pathlib.Path(__file__).resolve().parent


def _skip_reason(action):
    with pytest.raises(pytest.skip.Exception) as caught:
        action()
    return str(caught.value)


@pytest.mark.parametrize("use", [
    lambda t: t.tensor([1.0]),
    lambda t: t.nn.functional.relu(None),
    lambda t: t.float64[0],
    lambda t: list(t.nn.Module),
    lambda t: t.float64 == t.float32,
])
def test_any_use_of_the_missing_oracle_skips_with_the_reason(use):
    reason = _skip_reason(lambda: use(MissingOracle()))
    assert NO_ORACLE in reason


def test_attribute_access_alone_does_not_skip_so_modules_still_import():
    stand_in = MissingOracle()
    functional = stand_in.nn.functional  # a module-level alias in a test file
    assert "torch.nn.functional" in repr(functional)
    assert not stand_in and not functional  # `if HAVE_TORCH:` / `if torch:` stay optional


def test_a_class_built_on_a_missing_torch_class_skips_when_instantiated():
    class Net(MissingOracle().nn.Module):
        pass

    assert NO_ORACLE in _skip_reason(Net)


def test_dunder_lookups_are_not_faked():
    with pytest.raises(AttributeError):
        MissingOracle().__deepcopy__


def _direct_torch_imports(path):
    """Lines where a test file imports torch itself instead of taking it from tests.helpers."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        if any(n == "torch" or n.startswith("torch.") for n in names):
            found.append(node.lineno)
    return found


def test_no_test_file_imports_torch_except_through_the_helpers():
    offenders = []
    for path in sorted(TESTS.rglob("*.py")):
        if path.name == "helpers.py" and path.parent == TESTS:
            continue
        offenders += [f"{path.relative_to(TESTS)}:{line}" for line in _direct_torch_imports(path)]
    assert not offenders, (
        "import torch via `from tests.helpers import torch, needs_torch` (or "
        "pytest.importorskip('torch')), so the suite still runs without the oracle: "
        + ", ".join(offenders))


def test_the_scan_would_catch_a_direct_import(tmp_path):
    bad = tmp_path / "test_bad.py"
    bad.write_text("import numpy\nfrom torch import nn\n\ndef f():\n    import torch.nn.functional as F\n")
    assert _direct_torch_imports(bad) == [2, 5]
