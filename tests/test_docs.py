"""The docs that quote the code: docs/api.md is what docs/make_api.py writes now, the messages of
docs/extending.md ("Common mistakes and what you will see") are the framework's own, and the
worked example of "Adding an op" runs and passes the op table's checks."""
import importlib.util
import os
import re

import pytest

from tests.helpers import check_grads, check_torch, needs_torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXTENDING = os.path.join(ROOT, "docs", "extending.md")


def _load_make_api():
    spec = importlib.util.spec_from_file_location("make_api", os.path.join(ROOT, "docs", "make_api.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_api_reference_is_up_to_date():
    make_api = _load_make_api()
    with open(make_api.OUTPUT) as f:
        committed = f.read()
    assert committed == make_api.render(), \
        "docs/api.md is out of date: run `python docs/make_api.py` and commit the result"


def _page():
    with open(EXTENDING) as f:
        return f.read()


def _blocks(kind):
    """{key: text} of the ```-blocks that follow `<!-- kind: key -->` on the page."""
    return {m.group(1): m.group(2) for m in
            re.finditer(rf"<!-- {kind}: ([\w-]+) -->\n```\w*\n(.*?)\n```", _page(), re.S)}


def _normalize(text):
    return re.sub(r"line \d+", "line N", " ".join(text.split()))


def test_every_mistake_message_is_on_the_page():
    from tests.autograd.test_extension_mistakes import MESSAGES
    assert sorted(_blocks("message")) == sorted(MESSAGES)


@pytest.mark.parametrize("key", sorted(__import__("tests.autograd.test_extension_mistakes",
                                                  fromlist=["MESSAGES"]).MESSAGES))
def test_page_message_is_what_the_framework_prints(key):
    from tests.autograd.test_extension_mistakes import MESSAGES
    assert _normalize(_blocks("message")[key]) == _normalize(MESSAGES[key]())


def _softplus_example():
    namespace = {}
    exec(compile(_blocks("example")["softplus"], "docs/extending.md (softplus example)", "exec"), namespace)
    return namespace["softplus"]


def test_adding_an_op_example_passes_the_op_table_checks(device):
    from tests.ops.test_op_table import check_special_values
    softplus = _softplus_example()
    import tests.helpers as helpers
    entry = ("softplus_beta", lambda a: softplus(a, beta=2.0, threshold=5.0),
             lambda a: helpers.torch.nn.functional.softplus(a, beta=2.0, threshold=5.0), [(3, 4)], {})
    check_grads(entry[1], entry[3], device=device)
    check_special_values(entry, device)


@needs_torch
def test_adding_an_op_example_matches_pytorch(device):
    import tests.helpers as helpers
    softplus = _softplus_example()
    for beta, threshold in ((1.0, 20.0), (2.0, 5.0), (0.5, 1.0)):
        check_torch(lambda a: softplus(a, beta=beta, threshold=threshold),
                    lambda a: helpers.torch.nn.functional.softplus(a, beta=beta, threshold=threshold),
                    [(4, 5)], device=device)
