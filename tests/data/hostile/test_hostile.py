"""The hostile-file catalogue (build.py): every loader refuses each file with a clear
DatasetFileError / CheckpointError naming the file and the field, and no load allocates more
than a small multiple of the file's own size plus a few MiB (measured by probe.py in a child
process under an address-space limit): 3x for every file, except a gzip, which may cost the buffer
its trailer declares, at most MAX_GZIP_RATIO (8) x its size + GZIP_ALLOWANCE (1 MiB) before the
loader can know the stream lies; mnist_gzip_at_the_cap is that worst case."""
import json
import os
import subprocess
import sys

import pytest

from tests.data.hostile.build import CASES, build
from tinygrad_bn.data._files import GZIP_ALLOWANCE, MAX_GZIP_RATIO

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
ALLOWED_PEAK_FACTOR = 3        # times the file's own size ...
ALLOWED_PEAK_SLACK = 4 << 20   # ... plus 4 MiB


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("hostile"))
    build(folder)

    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "tests.data.hostile.probe", folder, *CASES],
                            cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return folder, json.loads(result.stdout)


@pytest.mark.parametrize("name", list(CASES))
def test_hostile_file_is_refused_cheaply(report, name):
    folder, results = report
    loader, error_type, fragments, _ = CASES[name]
    got = results[name]
    assert got["error"] is not None, f"{name}: the {loader} loader accepted the file"
    kind, message = got["error"]
    assert kind == error_type, f"{name}: {kind}: {message}"
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message, f"{name}: {fragment!r} not in {message!r}"
    bound = ALLOWED_PEAK_FACTOR * got["size"] + ALLOWED_PEAK_SLACK
    if "gzip" in name:  # the declared buffer, the most a gzip is allowed to declare
        bound = max(bound, MAX_GZIP_RATIO * got["size"] + GZIP_ALLOWANCE + ALLOWED_PEAK_SLACK)
    assert got["peak"] <= bound, (f"{name}: the load allocated {got['peak']} bytes at its peak, "
                                  f"more than {bound} for a {got['size']}-byte file")


def test_catalogue_is_what_it_claims(tmp_path):
    """The bombs really inflate to what they declare (checked in a stream), and they are small."""
    import gzip
    import zipfile
    paths = build(str(tmp_path), ["mnist_gzip_2gib", "npz_deflated_3gib"])
    gz = os.path.join(paths["mnist_gzip_2gib"], "train-images-idx3-ubyte.gz")
    assert os.path.getsize(gz) < 3 << 20
    with open(gz, "rb") as f:
        f.seek(-4, 2)
        assert int.from_bytes(f.read(4), "little") == 2 << 30
    with gzip.open(gz) as f:  # the first 64 MiB inflate as zeros; the CRC is checked at build
        assert f.read(64 << 20) == bytes(64 << 20)
    cap = os.path.join(build(str(tmp_path), ["mnist_gzip_at_the_cap"])["mnist_gzip_at_the_cap"],
                       "train-images-idx3-ubyte.gz")
    with open(cap, "rb") as f:  # it declares exactly the most read_bytes accepts
        f.seek(-4, 2)
        assert int.from_bytes(f.read(4), "little") == MAX_GZIP_RATIO * os.path.getsize(cap) + GZIP_ALLOWANCE
    with zipfile.ZipFile(paths["npz_deflated_3gib"]) as z:
        info = z.getinfo("a0.npy")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.file_size == 3 << 30
        assert os.path.getsize(paths["npz_deflated_3gib"]) < 4 << 20
