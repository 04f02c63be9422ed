"""Build the catalogue of hostile files: tiny or small files that once made the loaders allocate
gigabytes or fail with an internal error (issue 18's table), plus a few of the same family.

    python -m tests.data.hostile.build OUTDIR      # writes every case under OUTDIR/<case>/

Nothing large is checked in: the "bombs" (2 GiB gzips, a 3 GiB deflated .npz entry) are written
in a stream from one repeated 1037-byte deflate block (1 MiB of zeros, ended with a full flush,
compresses to the same bytes every time), so building takes about a second, mostly CRC-32.

Each case is a CASES entry: name -> (loader, what the loader must raise, message fragments, a
builder). loader is "cifar10", "mnist" or "checkpoint"; the builder writes the case's files into
a folder and returns the path to load (a root folder or a checkpoint file).
"""
import gzip
import io
import json
import os
import pickle
import struct
import sys
import zipfile
import zlib

import numpy as np

MIB = 1 << 20
_ZEROS_BLOCK = None


def _affine(step):
    """CRC-32 over a fixed run of zeros is an affine map of the running CRC: c -> b ^ A c."""
    b = step(0)
    return b, [step(1 << i) ^ b for i in range(32)]


def _apply(m, c):
    b, columns = m
    for i in range(32):
        if c >> i & 1:
            b ^= columns[i]
    return b


def crc32_zeros(n_bytes, crc=0):
    """zlib.crc32(bytes(n_bytes), crc) without touching n_bytes of memory (square and multiply)."""
    whole, rest = divmod(n_bytes, MIB)
    power = _affine(lambda c: zlib.crc32(bytes(MIB), c))
    while whole:
        if whole & 1:
            crc = _apply(power, crc)
        power = _affine(lambda c, p=power: _apply(p, _apply(p, c)))
        whole >>= 1
    return zlib.crc32(bytes(rest), crc)


def zeros_deflate(n_mib):
    """A raw deflate stream of n_mib MiB of zeros as (block, count, end, CRC-32): the stream is
    block * count + end."""
    global _ZEROS_BLOCK
    if _ZEROS_BLOCK is None:
        c = zlib.compressobj(9, zlib.DEFLATED, -15)
        _ZEROS_BLOCK = (c.compress(bytes(MIB)) + c.flush(zlib.Z_FULL_FLUSH), c.flush())
    block, end = _ZEROS_BLOCK
    return block, n_mib, end, crc32_zeros(n_mib * MIB)


def write_gzip_zeros(path, n_mib, declared=None):
    """A gzip file that inflates to n_mib MiB of zeros; `declared` overrides the ISIZE field."""
    block, count, end, crc = zeros_deflate(n_mib)
    size = (n_mib * MIB) & 0xFFFFFFFF if declared is None else declared
    with open(path, "wb") as f:
        f.write(b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff")  # magic, deflate, no flags, mtime 0
        for _ in range(count):
            f.write(block)
        f.write(end)
        f.write(struct.pack("<II", crc, size))


# ---- CIFAR-10 python batches -------------------------------------------------------------
class _Call:
    """Pickles as a call of func(*args) (how a hostile pickle names an allowed global)."""

    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _cifar_root(folder, batch_bytes, every=True):
    root = os.path.join(folder, "cifar-10-batches-py")
    os.makedirs(root, exist_ok=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names if every else names[:1]:
        with open(os.path.join(root, name), "wb") as f:
            f.write(batch_bytes)
    return folder


def _batch(data, labels):
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=3)


def good_pixels(n=2):
    return np.zeros((n, 3072), np.uint8)


def cifar_ndarray_call(folder):
    """Issue 18: 87-byte batches calling numpy.ndarray((200000, 3072), 'u1')."""
    return _cifar_root(folder, pickle.dumps({b"data": _Call(np.ndarray, ((200000, 3072), "u1"))},
                                            protocol=3))


def cifar_state_bigger_than_data(folder):
    """An array whose pickled state declares (200000, 3072) but carries 6 bytes of data."""
    state = (1, (200000, 3072), np.dtype("u1"), False, b"\0" * 6)

    class Hostile:
        def __reduce__(self):
            return (_reconstruct(), (np.ndarray, (0,), b"b"), state)
    return _cifar_root(folder, _batch(Hostile(), [0, 1]))


def _reconstruct():
    core = getattr(np, "_core", None) or np.core
    return core.multiarray._reconstruct


def cifar_bytes_reused(folder):
    """One 1 MiB bytes object, memoized once, BUILT into 200 byte-swapped arrays (each a copy)."""
    blob = b"\0" * MIB
    dtype = np.dtype(">i8")

    class Hostile:
        def __reduce__(self):
            return (_reconstruct(), (np.ndarray, (0,), b"b"), (1, (MIB // 8,), dtype, False, blob))
    return _cifar_root(folder, pickle.dumps({b"data": good_pixels(), b"labels": [0, 1],
                                             b"extra": [Hostile() for _ in range(200)]}, protocol=3),
                       every=False)


def cifar_label_2_70(folder):
    return _cifar_root(folder, _batch(good_pixels(), [0, 2 ** 70]))


def cifar_label_float(folder):
    return _cifar_root(folder, _batch(good_pixels(), [0, 1.7]))


def cifar_label_2d(folder):
    return _cifar_root(folder, _batch(good_pixels(4), np.zeros((4, 4), np.int64)))


def cifar_gzip_2gib(folder):
    """A 2 MB gzip that inflates to 2 GiB, as a CIFAR batch (honest ISIZE trailer)."""
    root = _cifar_root(folder, b"")
    write_gzip_zeros(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), 2048)
    return root


def cifar_gzip_2gib_lying(folder):
    """The same 2 GiB stream with an ISIZE field that claims 1000 bytes."""
    root = _cifar_root(folder, b"")
    write_gzip_zeros(os.path.join(root, "cifar-10-batches-py", "data_batch_1"), 2048, declared=1000)
    return root


# ---- MNIST idx files ---------------------------------------------------------------------
def _idx(ndim, dims, body=b""):
    return bytes([0, 0, 8, ndim]) + struct.pack(f">{ndim}I", *dims) + body


def _mnist_root(folder, images, labels=None):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "train-images-idx3-ubyte"), "wb") as f:
        f.write(images)
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as f:
        f.write(_idx(1, (2,), b"\0\1") if labels is None else labels)
    return folder


def mnist_dims_wrap(folder):
    """dims (2**22, 2**21, 2**21), whose product wraps int64 to 0."""
    return _mnist_root(folder, _idx(3, (2 ** 22, 2 ** 21, 2 ** 21)))


def mnist_gzip_2gib(folder):
    """A 2 MB gzip that inflates to 2 GiB, as an MNIST image file."""
    os.makedirs(folder, exist_ok=True)
    write_gzip_zeros(os.path.join(folder, "train-images-idx3-ubyte.gz"), 2048)
    with gzip.open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(_idx(1, (2,), b"\0\1"))
    return folder


def mnist_gzip_at_the_cap(folder):
    """A 2 MB gzip whose ISIZE declares exactly the most read_bytes accepts (MAX_GZIP_RATIO x its
    size + GZIP_ALLOWANCE), while the stream inflates to 2 GiB: the worst a gzip can cost, a buffer
    of the declared size filled before the lie shows."""
    from tinygrad_bn.data._files import GZIP_ALLOWANCE, MAX_GZIP_RATIO
    os.makedirs(folder, exist_ok=True)
    block, count, end, _ = zeros_deflate(2048)
    size = 10 + len(block) * count + len(end) + 8  # header, deflate stream, CRC and ISIZE
    write_gzip_zeros(os.path.join(folder, "train-images-idx3-ubyte.gz"), 2048,
                     declared=MAX_GZIP_RATIO * size + GZIP_ALLOWANCE)
    with gzip.open(os.path.join(folder, "train-labels-idx1-ubyte.gz"), "wb") as f:
        f.write(_idx(1, (2,), b"\0\1"))
    return folder


# ---- checkpoints -------------------------------------------------------------------------
def _npy(array):
    buf = io.BytesIO()
    np.lib.format.write_array(buf, array, allow_pickle=False)
    return buf.getvalue()


def _manifest(tree):
    text = json.dumps({"format": "tinygrad_bn.checkpoint", "version": 1, "tree": tree})
    return np.frombuffer(text.encode(), np.uint8)


def _write_npz(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name + ".npy", data if isinstance(data, bytes) else _npy(data))
    return path


def npz_deflated_3gib(folder):
    """A 3.1 MB .npz with a deflated entry that inflates to a 3 GiB array (written by hand)."""
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, "checkpoint.npz")
    n_mib = 3072
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False,
                                                  "shape": (n_mib * MIB - 128,)})
    header = header.getvalue()
    assert len(header) == 128
    # the entry's bytes: the 128-byte header, then zeros; deflate the header then the zero stream
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(header) + c.flush(zlib.Z_FULL_FLUSH)
    block, count, end, _ = zeros_deflate(1)
    crc = crc32_zeros(n_mib * MIB - 128, zlib.crc32(header))
    # the last MiB holds MIB - 128 zeros: deflate it on its own
    c2 = zlib.compressobj(9, zlib.DEFLATED, -15)
    tail = c2.compress(bytes(MIB - 128)) + c2.flush(zlib.Z_FULL_FLUSH) + b"\x03\x00"
    compressed = len(head) + (n_mib - 1) * len(block) + len(tail)
    manifest = _npy(_manifest({"t": "array", "key": "a0"}))
    with open(path, "wb") as f:
        entries = []
        for name, method, crc_, csize, usize, write in (
                ("a0.npy", 8, crc, compressed, n_mib * MIB,
                 lambda: [f.write(head)] + [f.write(block) for _ in range(n_mib - 1)] + [f.write(tail)]),
                ("__manifest__.npy", 0, zlib.crc32(manifest), len(manifest), len(manifest),
                 lambda: f.write(manifest))):
            offset = f.tell()
            f.write(struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0x21, crc_, csize,
                                usize, len(name), 0) + name.encode())
            write()
            entries.append((name, method, crc_, csize, usize, offset))
        start = f.tell()
        for name, method, crc_, csize, usize, offset in entries:
            f.write(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0x21, crc_,
                                csize, usize, len(name), 0, 0, 0, 0, 0, offset) + name.encode())
        size = f.tell() - start
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), size, start, 0))
    return path


def npz_header_50gb(folder):
    """A tiny .npz whose .npy header declares a 50 GB array (and holds a few bytes)."""
    os.makedirs(folder, exist_ok=True)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False,
                                                  "shape": (50 * 10 ** 9 // 8,)})
    return _write_npz(os.path.join(folder, "checkpoint.npz"),
                      {"__manifest__": _manifest({"t": "tensor", "key": "a0", "device": "cpu",
                                                  "requires_grad": False}),
                       "a0": header.getvalue() + b"\0" * 16})


def manifest_1e400(folder):
    os.makedirs(folder, exist_ok=True)
    text = ('{"format": "tinygrad_bn.checkpoint", "version": 1, "tree": {"t": "dict", "items": '
            '[[{"t": "str", "v": "epoch"}, {"t": "int", "v": 1e400}]]}}')
    return _write_npz(os.path.join(folder, "checkpoint.npz"),
                      {"__manifest__": np.frombuffer(text.encode(), np.uint8)})


def manifest_deep(folder):
    """A manifest nested 2,000 deep."""
    os.makedirs(folder, exist_ok=True)
    text = ('{"format": "tinygrad_bn.checkpoint", "version": 1, "tree": '
            + '{"t": "list", "items": [' * 2000 + '{"t": "none"}' + ']}' * 2000 + '}')
    return _write_npz(os.path.join(folder, "checkpoint.npz"),
                      {"__manifest__": np.frombuffer(text.encode(), np.uint8)})


def _tensor_of(folder, array):
    os.makedirs(folder, exist_ok=True)
    return _write_npz(os.path.join(folder, "checkpoint.npz"),
                      {"__manifest__": _manifest({"t": "tensor", "key": "a0", "device": "cpu",
                                                  "requires_grad": False}), "a0": array})


def manifest_str_tensor(folder):
    return _tensor_of(folder, np.array(["abc", "de"]))


def manifest_structured_tensor(folder):
    return _tensor_of(folder, np.zeros(3, [("a", "<f8"), ("b", "<i4")]))


# name: (loader, error class name, message fragments, builder)
CASES = {
    "cifar_ndarray_call": ("cifar10", "UnsafePickleError", ["data_batch_1", "numpy.ndarray"],
                           cifar_ndarray_call),
    "cifar_state_bigger_than_data": ("cifar10", "UnsafePickleError", ["data_batch_1", "declare"],
                                     cifar_state_bigger_than_data),
    "cifar_bytes_reused": ("cifar10", "UnsafePickleError", ["data_batch_1", "twice the file's size"],
                           cifar_bytes_reused),
    "cifar_label_2_70": ("cifar10", "DatasetFileError", ["data_batch_1", "b'labels'[1]", str(2 ** 70)],
                         cifar_label_2_70),
    "cifar_label_float": ("cifar10", "DatasetFileError", ["data_batch_1", "b'labels'[1]", "1.7"],
                          cifar_label_float),
    "cifar_label_2d": ("cifar10", "DatasetFileError", ["data_batch_1", "b'labels'", "(4, 4)"],
                       cifar_label_2d),
    "cifar_gzip_2gib": ("cifar10", "DatasetFileError", ["data_batch_1", "ISIZE", "2147483648"],
                        cifar_gzip_2gib),
    "cifar_gzip_2gib_lying": ("cifar10", "DatasetFileError", ["data_batch_1", "inflates beyond", "1000"],
                              cifar_gzip_2gib_lying),
    "mnist_dims_wrap": ("mnist", "DatasetFileError", ["train-images-idx3-ubyte", "dims",
                                                      str((2 ** 22, 2 ** 21, 2 ** 21))], mnist_dims_wrap),
    "mnist_gzip_2gib": ("mnist", "DatasetFileError", ["train-images-idx3-ubyte.gz", "ISIZE"],
                        mnist_gzip_2gib),
    "mnist_gzip_at_the_cap": ("mnist", "DatasetFileError", ["train-images-idx3-ubyte.gz", "inflates beyond"],
                              mnist_gzip_at_the_cap),
    "npz_deflated_3gib": ("checkpoint", "CheckpointError", ["checkpoint.npz", "'a0.npy'", "compressed"],
                          npz_deflated_3gib),
    "npz_header_50gb": ("checkpoint", "CheckpointError", ["checkpoint.npz", "'a0.npy'", "field shape",
                                                          "50000000000"], npz_header_50gb),
    "manifest_1e400": ("checkpoint", "CheckpointError", ["checkpoint.npz", "field tree.items[0][1]",
                                                         "inf"], manifest_1e400),
    "manifest_deep": ("checkpoint", "CheckpointError", ["checkpoint.npz", "nested"], manifest_deep),
    "manifest_str_tensor": ("checkpoint", "CheckpointError", ["checkpoint.npz", "field tree",
                                                              "dtype <U3"], manifest_str_tensor),
    "manifest_structured_tensor": ("checkpoint", "CheckpointError", ["checkpoint.npz", "'a0.npy'",
                                                                     "field dtype"],
                                   manifest_structured_tensor),
}


def build(out, names=None):
    """Write the cases (all, or `names`) under out/<name>/; returns {name: path to load}."""
    return {name: CASES[name][3](os.path.join(out, name)) for name in (names or CASES)}


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tests.data.hostile.build OUTDIR")
    for name, path in build(sys.argv[1]).items():
        print(f"{name}: {path}")
