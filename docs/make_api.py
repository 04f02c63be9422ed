"""Write docs/api.md, the API reference, from the docstrings: every public Tensor method and
property, every public function of `tinygrad_bn`, `tinygrad_bn.nn.functional` and
`tinygrad_bn.autograd`. Run from the repository root:

    python docs/make_api.py

tests/test_docs.py fails when the committed docs/api.md differs from what this writes, so the
reference cannot drift from the code: after adding or changing a public function, rerun this.
"""
import inspect
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import tinygrad_bn as tg  # noqa: E402
import tinygrad_bn.autograd as autograd  # noqa: E402
import tinygrad_bn.nn.functional as F  # noqa: E402

OUTPUT = os.path.join(HERE, "api.md")


def summary(obj):
    """The docstring's first paragraph, on one line (pipes escaped for the tables). A function
    without a docstring that applies a Function of the same name (tg.exp applies Exp, log_softmax
    LogSoftmax) shows that Function's docstring, which holds the math."""
    doc = inspect.getdoc(obj) if getattr(obj, "__doc__", None) else None
    if not doc and inspect.isfunction(obj):
        module = sys.modules.get(obj.__module__)
        wanted = obj.__name__.replace("_", "").lower()
        for cls_name, cls in vars(module).items() if module else ():
            if inspect.isclass(cls) and issubclass(cls, autograd.Function) and \
                    cls_name.lower() == wanted and cls.__doc__:
                doc = inspect.getdoc(cls)
                break
    if not doc:
        return ""
    return " ".join(doc.split("\n\n")[0].split()).replace("|", "\\|")


def signature(obj):
    try:
        return str(inspect.signature(obj))
    except (TypeError, ValueError):
        return "(...)"


def public_functions(module):
    """Public callables of a module that are defined in tinygrad_bn (not classes, not re-exported
    third-party helpers), by name."""
    out = {}
    for name in dir(module):
        if name.startswith("_"):
            continue
        obj = getattr(module, name)
        if inspect.isclass(obj) or not callable(obj):
            continue
        if not (getattr(obj, "__module__", "") or "").startswith("tinygrad_bn"):
            continue
        out[name] = obj
    return out


def tensor_members():
    """name -> (kind, object, the docstring to show) for every public Tensor attribute. A method
    without a docstring of its own that forwards to a documented function of the same name
    (Tensor.exp -> tg.exp) shows that function's summary."""
    members = {}
    for name in sorted(dir(tg.Tensor)):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(tg.Tensor, name)
        if isinstance(attr, property):
            members[name] = ("property", attr, summary(attr.fget))
            continue
        obj = getattr(tg.Tensor, name)
        if not callable(obj):
            continue
        text = summary(obj)
        if not text:
            for module, prefix in ((tg, "tg"), (F, "F")):
                other = getattr(module, name, None)
                if callable(other) and not inspect.isclass(other) and summary(other):
                    text = f"As `{prefix}.{name}`: {summary(other)}"
                    break
        members[name] = ("method", obj, text)
    return members


def render():
    lines = ["# API reference", "",
             "Generated from the docstrings by `python docs/make_api.py`; do not edit by hand "
             "(tests/test_docs.py checks that this file is up to date). Names and signatures "
             "follow PyTorch 2.13 where PyTorch has the thing. An entry without a description "
             "has no docstring yet.", ""]
    lines += ["## Tensor", "", "| member | signature | description |", "|---|---|---|"]
    for name, (kind, obj, text) in tensor_members().items():
        sig = "(property)" if kind == "property" else signature(obj)
        lines.append(f"| `Tensor.{name}` | `{sig}` | {text} |")
    sections = [("Functions: `tinygrad_bn`", "tg", tg),
                ("Functions: `tinygrad_bn.nn.functional`", "F", F),
                ("Functions: `tinygrad_bn.autograd`", "tg.autograd", autograd)]
    for title, prefix, module in sections:
        lines += ["", f"## {title}", "", "| function | signature | description |", "|---|---|---|"]
        for name, obj in sorted(public_functions(module).items()):
            lines.append(f"| `{prefix}.{name}` | `{signature(obj)}` | {summary(obj)} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    with open(OUTPUT, "w") as f:
        f.write(render())
    print(f"wrote {os.path.relpath(OUTPUT)}")
