"""The experiments: each claim of the texts the project was built from, as one command.

    python -m examples.experiments                  # list them: name, claim, source, budget
    python -m examples.experiments.<name>           # the default run (a few minutes on 2 cores)
    python -m examples.experiments.<name> --quick   # under a minute (the tests use it)
    python -m examples.experiments.<name> --full    # closer to the paper's setting

One experiment is one module of this package whose name does not start with "_"; `discover()`
finds them by scanning the package, so a new file joins with no edit elsewhere. The shared
machinery (options, seeding, outputs, metrics.json, plots, the table, --resume) is in _runner.py;
docs/experiments.md says how to write one.
"""
import importlib
import os
import pkgutil


def names():
    """The experiment module names, sorted (modules of this package not starting with "_")."""
    here = os.path.dirname(os.path.abspath(__file__))
    return sorted(m.name for m in pkgutil.iter_modules([here])
                  if not m.name.startswith("_") and not m.ispkg)


def discover():
    """Every experiment module, imported, sorted by name."""
    return [importlib.import_module(f"{__name__}.{name}") for name in names()]
