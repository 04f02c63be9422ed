"""The normalizer registry (tinygrad_bn/norms/__init__.py): a broken or clashing file is reported
with its path when the registry is used, and never stops `import tinygrad_bn`."""
import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import tinygrad_bn
from tinygrad_bn.norms import REGISTRY, NormalizerRegistryError, build_registry

GOOD = """
from tinygrad_bn.norms import NormSpec
from tinygrad_bn.norms.meanonly import MeanOnlyBatchNorm2d, reference
SPECS = [NormSpec(name={name!r}, make=MeanOnlyBatchNorm2d, input_shape=lambda c: (3, c, 2, 2),
                  reference=reference)]
"""


def make_package(tmp_path, files, name="student_norms"):
    package = tmp_path / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for filename, text in files.items():
        (package / filename).write_text(textwrap.dedent(text))
    sys.path.insert(0, str(tmp_path))
    return package, name


@pytest.fixture
def cleanup_path():
    before = list(sys.path), set(sys.modules)
    yield
    sys.path[:] = before[0]
    for name in set(sys.modules) - before[1]:
        if name.startswith("student_norms"):
            del sys.modules[name]


def test_the_project_registry_has_no_problems():
    assert REGISTRY.problems == []
    assert "BatchNorm2d" in REGISTRY


def test_duplicate_name_names_both_files(tmp_path, cleanup_path):
    package, name = make_package(tmp_path, {"a.py": GOOD.format(name="SwitchNorm2d"),
                                            "b.py": GOOD.format(name="SwitchNorm2d")})
    registry = build_registry([str(package)], name)
    with pytest.raises(NormalizerRegistryError) as info:
        registry["SwitchNorm2d"]
    message = str(info.value)
    assert "normalizer 'SwitchNorm2d' is registered twice" in message
    assert str(package / "a.py") in message and str(package / "b.py") in message


def test_case_variant_name_names_both_files(tmp_path, cleanup_path):
    package, name = make_package(tmp_path, {"a.py": GOOD.format(name="BatchNorm2d"),
                                            "z.py": GOOD.format(name="batchnorm2d")})
    registry = build_registry([str(package)], name)
    with pytest.raises(NormalizerRegistryError, match=r"normalizer 'batchnorm2d' \(in .*z\.py\) differs "
                                                      r"from 'BatchNorm2d' \(in .*a\.py\) only in case"):
        list(registry.values())


def test_broken_file_is_reported_when_the_registry_is_used(tmp_path, cleanup_path):
    package, name = make_package(tmp_path, {"good.py": GOOD.format(name="Fine"),
                                            "switchnorm.py": "import numpy as np\nSPECS = [np.nonexistent]\n"})
    registry = build_registry([str(package)], name)   # no exception here
    with pytest.raises(NormalizerRegistryError) as info:
        len(registry)
    message = str(info.value)
    assert str(package / "switchnorm.py") in message
    assert "failed to import (AttributeError" in message and "line 2: SPECS = [np.nonexistent]" in message


def test_a_broken_file_in_the_package_does_not_stop_import(tmp_path):
    """A copy of the package with a broken normalizer file: `import tinygrad_bn` works, using the
    registry raises with the file's path."""
    root = tmp_path / "copy"
    shutil.copytree(os.path.dirname(tinygrad_bn.__file__), root / "tinygrad_bn",
                    ignore=shutil.ignore_patterns("__pycache__"))
    broken = root / "tinygrad_bn" / "norms" / "switchnorm.py"
    broken.write_text("raise ImportError('half-written file')\n")
    code = ("import tinygrad_bn, tinygrad_bn.nn\n"
            "from tinygrad_bn.norms import REGISTRY\n"
            "try:\n    REGISTRY['BatchNorm2d']\nexcept RuntimeError as e:\n    print('RAISED', e)\n")
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "RAISED the normalizer registry could not be built" in out.stdout
    assert str(broken) in out.stdout and "half-written file" in out.stdout
