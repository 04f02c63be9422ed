"""The normalizers, one per file, each with its Function(s), Module and NormSpec(s).

REGISTRY maps a name ("BatchNorm2d", "GroupNorm", ...) to its NormSpec. It is filled by
`build_registry` below: every module of this package whose name does not start with "_" is
imported, and the entries of its `SPECS` list are added. Adding a normalizer is therefore adding
one file with a `SPECS` list; the shared test matrix (tests/norms/test_matrix.py) and the examples'
`--norm` option pick it up from here. See docs/extending.md.

A file that fails to import, or a name registered twice (or twice up to case: `batchnorm2d` beside
`BatchNorm2d`), does not stop `import tinygrad_bn`: the problem is kept, and the first use of the
registry raises NormalizerRegistryError naming the file(s) and the error. The test matrix uses the
registry when it is collected, so the test run fails on it.
"""
import importlib
import os
import pkgutil
import traceback

from tinygrad_bn.norms._base import NormSpec  # noqa: F401 - re-exported for normalizer files


class NormalizerRegistryError(RuntimeError):
    """A normalizer file could not be registered (it failed to import, or reuses a name)."""


class Registry(dict):
    """name -> NormSpec. Every way of reading it first raises the problems found while filling it."""

    def __init__(self):
        super().__init__()
        self.problems = []   # one message per broken file or clashing name
        self.files = {}      # name -> the file that registered it

    def check(self):
        if self.problems:
            raise NormalizerRegistryError(
                "the normalizer registry could not be built:\n- " + "\n- ".join(self.problems))

    def __getitem__(self, name):
        self.check()
        return super().__getitem__(name)

    def __iter__(self):
        self.check()
        return super().__iter__()

    def __len__(self):
        self.check()
        return super().__len__()

    def __contains__(self, name):
        self.check()
        return super().__contains__(name)

    def get(self, name, default=None):
        self.check()
        return super().get(name, default)

    def keys(self):
        self.check()
        return super().keys()

    def values(self):
        self.check()
        return super().values()

    def items(self):
        self.check()
        return super().items()

    def add(self, spec, where):
        """Register one spec from file `where`, or record why it cannot be."""
        folded = {name.casefold(): name for name in dict.keys(self)}
        clash = folded.get(spec.name.casefold())
        if clash == spec.name:
            self.problems.append(f"normalizer {spec.name!r} is registered twice: in "
                                 f"{self.files[clash]} and in {where}; rename one")
        elif clash is not None:
            self.problems.append(f"normalizer {spec.name!r} (in {where}) differs from {clash!r} (in "
                                 f"{self.files[clash]}) only in case; --norm names must differ by "
                                 f"more than case, rename one")
        else:
            dict.__setitem__(self, spec.name, spec)
            self.files[spec.name] = where


def build_registry(path, package):
    """Import every public module of the package at `path` and collect their SPECS."""
    registry = Registry()
    for info in sorted(pkgutil.iter_modules(path), key=lambda info: info.name):
        if info.name.startswith("_"):
            continue
        where = os.path.join(info.module_finder.path, info.name + ".py")
        try:
            module = importlib.import_module(f"{package}.{info.name}")
            specs = list(getattr(module, "SPECS", []))
        except Exception as e:  # noqa: BLE001 - a student's file may raise anything
            frames = traceback.extract_tb(e.__traceback__)
            line = next((f for f in reversed(frames) if f.filename == where), None)
            at = f", line {line.lineno}: {line.line}" if line is not None else ""
            registry.problems.append(f"{where} failed to import ({type(e).__name__}: {e}{at})")
            continue
        for spec in specs:
            if not isinstance(spec, NormSpec):
                registry.problems.append(f"{where}: SPECS holds a {type(spec).__name__}, not a NormSpec")
                continue
            registry.add(spec, where)
    return registry


REGISTRY = build_registry(__path__, __name__)
