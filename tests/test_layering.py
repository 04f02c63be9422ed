"""The package's import layering: no import circle between its modules, except the core one
between Tensor and the ops its methods call (tensor.py <-> ops/*, autograd/*, creation.py).

A circle elsewhere makes a module's import order matter: `import tinygrad_bn.norms.weightnorm`
first could fail where `import tinygrad_bn` first works. nn/utils/parametrizations.py once imported
norms/weightnorm.py, whose registry entries imported parametrizations back; now the functions live
with their normalizer and nn only re-exports them (nn -> norms, one way).

The graph is read from the source (every `import`, at the top of a file or inside a function, since a
lazy import closes a circle just as well, only later), so the test needs no import side effects.
What the graph does not see is a package's __init__: importing tinygrad_bn.nn.utils.parametrize
runs nn/utils/__init__.py, which imports norms/weightnorm.py. So norms import such modules inside
the function that needs them, and the last test imports every module first, in a fresh interpreter,
and reads the normalizer registry (which records a normalizer file that failed to import).
"""
import ast
import pathlib
import subprocess
import sys
import textwrap

import tinygrad_bn

PACKAGE_DIR = pathlib.Path(tinygrad_bn.__file__).parent
CORE = ("tinygrad_bn.tensor", "tinygrad_bn.creation", "tinygrad_bn.autograd", "tinygrad_bn.ops")


def _module_names():
    names = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = ("tinygrad_bn",) + path.relative_to(PACKAGE_DIR).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def _imported_module(name, modules):
    """The package module that `import name` loads: name itself, or the nearest module above it
    (`from tinygrad_bn.nn.module import Module` imports tinygrad_bn.nn.module)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name


def import_graph(modules):
    """{module: the package modules it imports}."""
    graph = {}
    for module, path in modules.items():
        is_package = path.name == "__init__.py"
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # a relative import
                    here = module.split(".") if is_package else module.split(".")[:-1]
                    base = ".".join(here[:len(here) - node.level + 1] + ([base] if base else []))
                # `from pkg import name` imports the submodule pkg.name when there is one, else pkg
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            imported |= {_imported_module(t, modules) for t in targets if t.startswith("tinygrad_bn")}
        graph[module] = imported - {module, ""}
    return graph


def circles(graph):
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _is_core(module):
    return any(module == c or module.startswith(c + ".") for c in CORE)


def test_the_circle_finder_finds_a_circle():
    # the test below must be able to fail: a lazy import that closes a circle is found
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [{"a", "b", "c"}]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_reads_imports_inside_functions():
    modules = _module_names()
    graph = import_graph(modules)
    # weightnorm's registry entry imports Conv2d inside a function
    assert "tinygrad_bn.nn.layers" in graph["tinygrad_bn.norms.weightnorm"]
    assert "tinygrad_bn.norms.weightnorm" in graph["tinygrad_bn.nn.utils.parametrizations"]


def test_no_import_circle_beyond_the_tensor_core():
    graph = import_graph(_module_names())
    outside_core = [sorted(c) for c in circles(graph) if not all(_is_core(m) for m in c)]
    assert not outside_core, f"import circles outside the Tensor/ops core: {outside_core}"


def test_every_module_imports_first_in_a_fresh_interpreter():
    modules = sorted(m for m in _module_names() if m != "tinygrad_bn")
    script = textwrap.dedent(f"""
        import importlib, sys
        failed = []
        for name in {modules!r}:
            for loaded in [m for m in sys.modules if m == "tinygrad_bn" or m.startswith("tinygrad_bn.")]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
                importlib.import_module("tinygrad_bn.norms").REGISTRY.check()
            except Exception as error:  # a module that needs an optional package says so by name
                if not (isinstance(error, ImportError) and getattr(error, "name", "") in ("cupy", "mpi4py")):
                    failed.append(f"{{name}}: {{type(error).__name__}}: {{error}}")
        print("\\n".join(failed))
        sys.exit(1 if failed else 0)
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE_DIR.parent)
    assert done.returncode == 0, f"modules that fail when imported first:\n{done.stdout}{done.stderr[-2000:]}"
