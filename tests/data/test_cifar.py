"""CIFAR10 from small files in the real formats (binary records, Python-2-style pickles), the
restricted unpickler refusing malicious pickles without running them, and bad-file errors."""
import os
import pickle
import re
import pickletools
import struct

import numpy as np
import pytest

from tinygrad_bn.data import CIFAR10, DatasetFileError, UnsafePickleError
from tinygrad_bn.data.cifar import TEST_BATCHES, TRAIN_BATCHES

PER_BATCH = 2


def _records(seed, n):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n)


def _write_binary(folder, test_n=3):
    os.makedirs(folder, exist_ok=True)
    expected = {}
    for i, name in enumerate(TRAIN_BATCHES + TEST_BATCHES):
        pixels, labels = _records(i, test_n if name == "test_batch" else PER_BATCH)
        records = np.concatenate([labels.astype(np.uint8)[:, None], pixels], axis=1)
        with open(os.path.join(folder, name + ".bin"), "wb") as f:
            f.write(records.tobytes())
        expected[name] = (pixels, labels)
    return expected


class _Python2Pickler(pickle._Pickler):
    """Writes bytes as Python 2 str opcodes (SHORT_BINSTRING / BINSTRING), as cPickle did when the
    real CIFAR-10 batches were made; Python 3 would instead call _codecs.encode."""

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2_pickle(obj, numpy_module="numpy.core.multiarray"):
    import io
    buf = io.BytesIO()
    _Python2Pickler(buf, protocol=2).dump(obj)
    # the real files name NumPy 1's module; protocol 2 GLOBALs are newline-terminated text
    return buf.getvalue().replace(b"cnumpy._core.multiarray\n", f"c{numpy_module}\n".encode())


def _globals(raw):
    return {arg for op, arg, _ in pickletools.genops(raw) if op.name == "GLOBAL"}


def _write_python(folder, test_n=3, numpy_module="numpy.core.multiarray"):
    os.makedirs(folder, exist_ok=True)
    expected = {}
    for i, name in enumerate(TRAIN_BATCHES + TEST_BATCHES):
        pixels, labels = _records(i, test_n if name == "test_batch" else PER_BATCH)
        batch = {b"batch_label": name.encode(), b"labels": [int(v) for v in labels],
                 b"data": pixels, b"filenames": [b"img_%d.png" % j for j in range(len(labels))]}
        with open(os.path.join(folder, name), "wb") as f:
            f.write(_py2_pickle(batch, numpy_module))
        expected[name] = (pixels, labels)
    return expected


def _check(ds, expected, names):
    pixels = np.concatenate([expected[n][0] for n in names])
    labels = np.concatenate([expected[n][1] for n in names])
    assert ds.data.shape == (len(labels), 3, 32, 32) and ds.data.dtype == np.float32
    assert ds.targets.dtype == np.int64
    np.testing.assert_array_equal(ds.targets, labels)
    # record layout: 1024 red, 1024 green, 1024 blue, each 32 rows of 32
    np.testing.assert_array_equal(ds.data[:, 1, 2, 3], pixels[:, 1024 + 2 * 32 + 3] / np.float32(255))
    np.testing.assert_array_equal((ds.data * 255).round().astype(np.uint8).reshape(len(labels), -1), pixels)


def test_binary_format(tmp_path):
    expected = _write_binary(tmp_path / "cifar-10-batches-bin")
    _check(CIFAR10(tmp_path, train=True), expected, TRAIN_BATCHES)
    test = CIFAR10(tmp_path, train=False, format="binary")
    _check(test, expected, TEST_BATCHES)
    assert test.format == "binary" and test.classes[0] == "airplane" and len(test.classes) == 10


def test_python_format_with_numpy1_and_numpy2_module_names(tmp_path):
    expected = _write_python(tmp_path / "cifar-10-batches-py")
    ds = CIFAR10(tmp_path, train=True)
    assert ds.format == "python"
    _check(ds, expected, TRAIN_BATCHES)
    expected = _write_python(tmp_path / "flat", numpy_module="numpy._core.multiarray")
    _check(CIFAR10(tmp_path / "flat", train=False, format="python"), expected, TEST_BATCHES)


def test_our_fixture_references_exactly_what_a_real_cifar_pickle_does(tmp_path):
    raw = _py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})
    assert _globals(raw) == {"numpy.core.multiarray _reconstruct", "numpy ndarray", "numpy dtype"}


class _RunsCode:
    """Unpickling this calls func(*args): the classic pickle exploit."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("payload", ["os.system", "builtins.eval", "builtins.exec", "nested"])
def test_malicious_pickle_is_refused_and_never_runs(tmp_path, payload):
    import builtins
    marker = tmp_path / "pwned"
    write_marker = f"open({str(marker)!r}, 'w').write('x')"
    evil = {"os.system": _RunsCode(os.system, f"touch {marker}"),
            "builtins.eval": _RunsCode(builtins.eval, write_marker),
            "builtins.exec": _RunsCode(builtins.exec, write_marker),
            "nested": {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0],
                       b"filenames": [_RunsCode(builtins.eval, write_marker)]}}[payload]
    folder = tmp_path / "cifar-10-batches-py"
    _write_python(folder)
    path = folder / "data_batch_1"
    # written as the real batches are, so the numpy globals pass and the payload's is the one refused
    path.write_bytes(_py2_pickle(evil))
    with pytest.raises(UnsafePickleError) as info:
        CIFAR10(tmp_path, train=True)
    message = str(info.value)
    assert str(path) in message and "refusing to unpickle the global" in message
    # the forbidden global is named (Python 3 writes builtins as __builtin__ in protocol 2)
    function = {"os.system": "system", "builtins.exec": "exec"}.get(payload, "eval")
    assert re.search(rf"global '(posix|nt|os|__builtin__|builtins)\.{function}'", message), message
    assert not marker.exists()
    assert isinstance(info.value, ValueError) and isinstance(info.value, pickle.UnpicklingError)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="data_batch_1.bin") as info:
        CIFAR10(tmp_path)
    assert "never downloads" in str(info.value)
    _write_binary(tmp_path)
    os.remove(tmp_path / "data_batch_4.bin")
    with pytest.raises(FileNotFoundError, match=r"data_batch_4\.bin"):
        CIFAR10(tmp_path)


def test_truncated_binary(tmp_path):
    _write_binary(tmp_path)
    path = tmp_path / "test_batch.bin"
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DatasetFileError, match="3073-byte CIFAR-10 record") as info:
        CIFAR10(tmp_path, train=False)
    assert str(path) in str(info.value)


def test_bad_label_byte(tmp_path):
    _write_binary(tmp_path)
    path = tmp_path / "test_batch.bin"
    raw = bytearray(path.read_bytes())
    raw[0] = 200
    path.write_bytes(bytes(raw))
    with pytest.raises(DatasetFileError, match="labels must be in 0..9"):
        CIFAR10(tmp_path, train=False)


def test_truncated_or_wrong_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    _write_python(folder)
    path = folder / "test_batch"
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetFileError, match="truncated or corrupt") as info:
        CIFAR10(tmp_path, train=False)
    assert str(path) in str(info.value)
    path.write_bytes(_py2_pickle([1, 2, 3]))
    with pytest.raises(DatasetFileError, match="expected a pickled dict"):
        CIFAR10(tmp_path, train=False)
    path.write_bytes(_py2_pickle({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DatasetFileError, match=r"uint8 array of shape \(N, 3072\)"):
        CIFAR10(tmp_path, train=False)
    path.write_bytes(_py2_pickle({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}))
    with pytest.raises(DatasetFileError, match="list of 2 ints"):
        CIFAR10(tmp_path, train=False)


def test_bad_format_argument(tmp_path):
    with pytest.raises(ValueError, match="format must be"):
        CIFAR10(tmp_path, format="jpeg")
