"""The names CuPy really has, so that the fakegpu stand-in can refuse every other one.

fakegpu does its arithmetic with NumPy. If it let every NumPy name through, code on the device
path could call a function that CuPy lacks and CI would stay green until the first run on a GPU.
So fakegpu only answers to the names listed in `_cupy_names.txt` (beside this file), which is
generated from CuPy's own source by this module:

    python -m tinygrad_bn._cupy_names PATH_TO_A_CUPY_GIT_CHECKOUT [TAG]

It reads, at that tag, without importing CuPy (which needs a GPU):
- `cupy/__init__.py`, `cupy/linalg/__init__.py`, `cupy/random/__init__.py` and
  `cupy/lib/stride_tricks.py`: the public names each module binds (imports, assignments,
  functions and classes; the NumPy-2 shims that only raise are left out);
- `cupy/_core/core.pyx` and `core.pxd`: the methods, properties and readonly attributes of
  `cupy.ndarray`;
- `cupy/random/_generator_api.pyx`: the methods of `cupy.random.Generator`;
- `cupy/_core/*.pyx`: which ufuncs have a scatter operation, the only ones whose `.at` works.
"""
import ast
import pathlib
import re
import subprocess
import sys

NAMES_FILE = pathlib.Path(__file__).with_name("_cupy_names.txt")

# module sections: section name -> file in the CuPy repository
MODULE_FILES = {
    "cupy": "cupy/__init__.py",
    "cupy.linalg": "cupy/linalg/__init__.py",
    "cupy.random": "cupy/random/__init__.py",
    "cupy.lib.stride_tricks": "cupy/lib/stride_tricks.py",
}


def load(path=NAMES_FILE):
    """{section: frozenset of names} and the CuPy version they were read from."""
    sections, version, current = {}, None, None
    for line in path.read_text().splitlines():
        line = line.strip()
        if line.startswith("# cupy version:"):
            version = line.split(":", 1)[1].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
            sections[current] = set()
        else:
            sections[current].add(line)
    return {k: frozenset(v) for k, v in sections.items()}, version


def _only_raises(node):
    body = [n for n in node.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    return all(isinstance(n, ast.Raise) for n in body) or (
        len(body) == 2 and isinstance(body[0], ast.Assign) and isinstance(body[1], ast.Raise))


def module_names(source):
    """Public names a module binds at its top level (including inside if/else/try blocks)."""
    names = set()

    def visit(statements):
        for node in statements:
            # `import numpy as np` binds a helper module, not CuPy API; `from numpy import pi` is API
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                names.update(a.asname or a.name for a in node.names if a.name != "*")
            elif isinstance(node, ast.Assign):
                for target in node.targets:
                    for t in ast.walk(target):
                        if isinstance(t, ast.Name):
                            names.add(t.id)
            elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                if not (isinstance(node, ast.FunctionDef) and _only_raises(node)):
                    names.add(node.name)
            elif isinstance(node, ast.If):
                visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
    visit(ast.parse(source).body)
    return {n for n in names if not n.startswith("_")}


_METHOD = re.compile(r"^    (?:(?:cp)?def\s+(?:[\w\[\], ]+\s+)*?(\w+)\s*\(|property\s+(\w+)\s*:)", re.M)


def class_members(source, class_header):
    """Public methods and properties of the class whose definition line matches class_header."""
    start = re.search(class_header, source, re.M)
    end = re.search(r"^\S", source[start.end():], re.M)
    body = source[start.end(): start.end() + end.start() if end else len(source)]
    members = {m.group(1) or m.group(2) for m in _METHOD.finditer(body)}
    return {m for m in members if not m.startswith("_")}


def scatter_ufuncs(sources):
    """Names of the ufuncs created with a scatter_op: CuPy's `ufunc.at` supports only those."""
    found = set()
    for text in sources:
        for call in re.split(r"\n(?=\S)", text):  # one top-level statement at a time
            if "scatter_op='" in call or 'scatter_op="' in call:
                first = re.search(r"\(\s*['\"](?:cupy_)?(\w+)['\"]", call)
                is_definition = re.match(r"(?:c?p?def)\s+[\w ]*\(", call)  # `cdef create_x(` itself
                if first and not is_definition:
                    found.add(first.group(1))
    return found


def generate(repo, tag):
    def show(path):
        return subprocess.run(["git", "-C", str(repo), "show", f"{tag}:{path}"], check=True,
                              capture_output=True, text=True).stdout

    def ls(folder):
        out = subprocess.run(["git", "-C", str(repo), "ls-tree", "--name-only", tag, folder + "/"],
                             check=True, capture_output=True, text=True).stdout
        return out.split()

    commit = subprocess.run(["git", "-C", str(repo), "rev-list", "-n1", tag], check=True,
                            capture_output=True, text=True).stdout.strip()
    sections = {name: module_names(show(path)) for name, path in MODULE_FILES.items()}
    sections["cupy.random"].add("Generator")  # bound lazily by the module's __getattr__
    core = show("cupy/_core/core.pyx")
    readonly = set(re.findall(r"readonly\s+[\w.]+\s+(\w+)", show("cupy/_core/core.pxd")))
    sections["cupy.ndarray"] = (class_members(core, r"^cdef class _ndarray_base\b.*:$")
                                | {r for r in readonly if not r.startswith("_")})
    sections["cupy.random.Generator"] = class_members(show("cupy/random/_generator_api.pyx"),
                                                      r"^class Generator\b.*:$")
    sections["cupy.ufunc"] = class_members(show("cupy/_core/_kernel.pyx"), r"^cdef class ufunc\b.*:$")
    sections["cupy.ufunc.at"] = scatter_ufuncs(show(p) for p in ls("cupy/_core") if p.endswith(".pyx"))
    version = re.search(r"__version__ = ['\"]([^'\"]+)", show("cupy/_version.py")).group(1)
    lines = [f"# The names CuPy {version} has: fakegpu refuses every other one.",
             f"# cupy version: {version}",
             f"# read from github.com/cupy/cupy at {tag} ({commit}) by",
             "#   python -m tinygrad_bn._cupy_names PATH_TO_CUPY_CHECKOUT TAG",
             "# Do not edit by hand; regenerate for another CuPy version."]
    for name in sorted(sections):
        lines += ["", f"[{name}]"] + sorted(sections[name])
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit("usage: python -m tinygrad_bn._cupy_names PATH_TO_CUPY_CHECKOUT [TAG]")
    NAMES_FILE.write_text(generate(pathlib.Path(sys.argv[1]), sys.argv[2] if len(sys.argv) == 3 else "HEAD"))
    print(f"wrote {NAMES_FILE}")
