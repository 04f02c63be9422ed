"""The normalizers, one per file, each with its Function(s), Module and NormSpec(s).

REGISTRY maps a name ("BatchNorm2d", "GroupNorm", ...) to its NormSpec. It is filled by the
loop below: every module of this package whose name does not start with "_" is imported, and
the entries of its `SPECS` list are added. Adding a normalizer is therefore adding one file
with a `SPECS` list; the shared test matrix (tests/norms/test_matrix.py) and the examples'
`--norm` option pick it up from here. See docs/extending.md.
"""
import importlib
import pkgutil

from tinygrad_bn.norms._base import NormSpec  # noqa: F401 - re-exported for normalizer files

REGISTRY = {}
for _info in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _spec in getattr(_module, "SPECS", []):
        if _spec.name in REGISTRY:
            raise RuntimeError(f"normalizer {_spec.name!r} is registered twice "
                               f"(second time in {_module.__name__})")
        REGISTRY[_spec.name] = _spec
