"""Turning DOT text into a picture, with or without the Graphviz `dot` program.

The Python package `graphviz` only writes DOT text; pictures come from an external program. In
order of preference:

1. `dot` (Graphviz: apt-get install graphviz, brew install graphviz, conda install graphviz);
2. `graphviz-pure` (`pip install graphviz-pure`): a self-contained port of Graphviz's `dot`
   command line with the same flags. It renders svg, png, jpeg (not pdf) and installs a program
   named `graphviz-pure`, not `dot`, so the `graphviz` package never finds it by itself;
3. neither: the DOT text is written to a `.dot` file and one line says how to render it.

Nothing here raises because a program is missing.
"""
import os
import shutil
import subprocess
import sys

#: output formats graphviz-pure can write (it has no pdf/ps writer yet)
PURE_FORMATS = {"svg", "png", "jpg", "jpeg", "dot", "xdot", "json", "plain", "canon"}
#: file suffixes taken as the format when render_graph's path ends with one
KNOWN_FORMATS = {"svg", "png", "pdf", "jpg", "jpeg", "gif", "ps", "eps", "json", "plain", "xdot"}


def find_dot():
    """Path of Graphviz's `dot` on PATH, or None."""
    return shutil.which("dot")


def find_graphviz_pure():
    """Path of the `graphviz-pure` program (on PATH or beside this Python's executable), or None."""
    found = shutil.which("graphviz-pure")
    if found:
        return found
    beside = os.path.join(os.path.dirname(sys.executable), "graphviz-pure")
    return beside if os.path.isfile(beside) and os.access(beside, os.X_OK) else None


def hint(dot_path, out_path, fmt):
    """The one line printed when no renderer is available."""
    return (f"tinygrad_bn.viz: Graphviz 'dot' was not found, so the graph was written as DOT text "
            f"to {dot_path}; render it with `dot -T{fmt} {dot_path} -o {out_path}` (apt-get install "
            f"graphviz / brew install graphviz) or `pip install graphviz-pure` then "
            f"`graphviz-pure -T{fmt} {dot_path} -o {out_path}`")


def run_renderer(dot_path, out_path, fmt):
    """Render a DOT file with `dot`, else graphviz-pure. Returns out_path, or None when neither
    program is available (or graphviz-pure cannot write `fmt`). Raises RuntimeError, naming the
    file, if the program ran and failed."""
    program = find_dot()
    if program is None:
        pure = find_graphviz_pure()
        if pure is not None and fmt in PURE_FORMATS:
            program = pure
    if program is None:
        return None
    result = subprocess.run([program, f"-T{fmt}", os.fspath(dot_path), "-o", os.fspath(out_path)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"tinygrad_bn.viz: {os.path.basename(program)} failed to render "
                           f"{dot_path} as {fmt} (exit {result.returncode}): {result.stderr.strip()}")
    return os.fspath(out_path)


def render_graph(graph, path, format=None, quiet=False):
    """Write `graph` (a graphviz.Digraph, or DOT text) as a picture at `path`.

    `path` may end in the format ("graph.svg") or not ("graph" -> "graph.svg"). The DOT text is
    always written beside it as "graph.dot". Returns the path of the picture, or - when neither
    `dot` nor `graphviz-pure` can render it - the path of the .dot file, after printing one line
    that says how to render it (unless quiet).
    """
    source = graph if isinstance(graph, str) else graph.source
    path = os.fspath(path)
    base, ext = os.path.splitext(path)
    ext = ext[1:].lower()
    if format is None:
        format = ext if ext in KNOWN_FORMATS else "svg"
    format = format.lower()
    if ext != format:
        base = path  # "graph" or "graph.v2": keep the whole name, add the format
    directory = os.path.dirname(base)
    if directory:
        os.makedirs(directory, exist_ok=True)
    dot_path = base + ".dot"
    with open(dot_path, "w", encoding="utf-8") as f:
        f.write(source)
    if format in ("dot", "gv"):
        return dot_path
    out_path = base + "." + format
    done = run_renderer(dot_path, out_path, format)
    if done is not None:
        return done
    if not quiet:
        print(hint(dot_path, out_path, format))
    return dot_path
