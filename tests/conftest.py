"""Shared fixtures: every backend-parametrized test runs on "cpu", on "fakegpu" (the CI stand-in
accelerator whose arrays refuse implicit host conversion, like CuPy's) and, when a GPU is
present, on "cuda"."""
import pytest

import tinygrad_bn as tg

DEVICES = ["cpu", "fakegpu"] + (["cuda"] if tg.cuda.is_available() else [])


@pytest.fixture(params=DEVICES)
def device(request):
    return request.param


@pytest.fixture(autouse=True)
def _seed():
    tg.manual_seed(0)
    yield


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", default=False,
                     help="draw many more examples in the property-based parity suite (tests/parity)")
