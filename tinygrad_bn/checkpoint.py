"""save / load: checkpoints of nested dicts, lists and tuples of Tensors, arrays and plain values,
in one .npz file that never contains (and is never read as) a pickle.

File format (version 1): an ordinary NumPy .npz archive (np.savez, uncompressed) holding

    "__manifest__"   uint8 array: the UTF-8 bytes of a JSON document
    "a0", "a1", ...  one entry per Tensor / array / NumPy scalar, as a plain .npy array

The manifest is {"format": "tinygrad_bn.checkpoint", "version": 1, "tree": node}, where a node
is one JSON object tagged by "t":

    {"t": "tensor", "key": "a3", "device": "fakegpu", "requires_grad": false}
    {"t": "array",  "key": "a4"}                 NumPy array (always back on the host)
    {"t": "scalar", "key": "a5"}                 NumPy scalar such as np.float32(2.5)
    {"t": "int" | "float" | "str" | "bool", "v": ...}, {"t": "none"}
    {"t": "list" | "tuple", "items": [node, ...]}
    {"t": "dict", "items": [[key node, value node], ...]}   (keys keep their type: 0 stays int)

Dtypes live in the .npy headers. Loading uses np.load(allow_pickle=False), so a file that
smuggles pickled objects (an object array, a torch .pt zip, a raw pickle) is refused, never run.

Writes are atomic: the archive goes to a temporary file in the destination's directory, is
flushed and fsync'ed, then os.replace'd over the destination, and the directory is fsync'ed. A
process killed mid-save leaves the previous checkpoint intact (plus, at worst, a stray temp file
named .<name>.*.tmp that load() never reads).
"""
import json
import math
import os
import tempfile
import zipfile

import numpy as np

from tinygrad_bn import backend
from tinygrad_bn.dtypes import SUPPORTED
from tinygrad_bn.tensor import Tensor

FORMAT = "tinygrad_bn.checkpoint"
VERSION = 1
MANIFEST = "__manifest__"
ZIP_MAGIC = b"PK\x03\x04"
PICKLE_PROTOCOL_OPCODE = b"\x80"
MAX_DEPTH = 200  # nesting of lists/tuples/dicts that save() writes and load() reads


class CheckpointError(ValueError):
    """A checkpoint file that is not one, is damaged, is too new, or carries pickled objects."""


# ---- save ----------------------------------------------------------------------------------------
def save(obj, path):
    """Write obj (nested dict/list/tuple of Tensors, arrays, numbers, str, bool, None) to path."""
    arrays = {}
    tree = _encode(obj, arrays, "obj")
    manifest = json.dumps({"format": FORMAT, "version": VERSION, "tree": tree}, allow_nan=True)
    arrays[MANIFEST] = np.frombuffer(manifest.encode("utf-8"), np.uint8)
    _atomic_write(path, lambda f: np.savez(f, **arrays))


def _encode(obj, arrays, where, depth=0):
    """The manifest node for obj; its arrays go into `arrays` under fresh keys."""
    if depth > MAX_DEPTH:
        raise ValueError(f"save: {where} is nested more than {MAX_DEPTH} levels deep; load() would "
                         f"refuse it")
    if obj is None:
        return {"t": "none"}
    if isinstance(obj, np.generic):  # before int/float: np.float64 subclasses Python's float
        _check_plain_dtype(obj.dtype, where)
        return {"t": "scalar", "key": _store(arrays, np.asarray(obj))}
    if isinstance(obj, bool):
        return {"t": "bool", "v": obj}
    if isinstance(obj, int):
        return {"t": "int", "v": int(obj)}
    if isinstance(obj, float):
        return {"t": "float", "v": obj}  # inf/nan: Python's json writes and reads Infinity/NaN
    if isinstance(obj, str):
        return {"t": "str", "v": obj}
    if isinstance(obj, Tensor):
        key = _store(arrays, backend.to_numpy(obj.data))
        return {"t": "tensor", "key": key, "device": str(obj.device),
                "requires_grad": bool(obj.requires_grad)}
    if isinstance(obj, np.ndarray):
        _check_plain_dtype(obj.dtype, where)
        return {"t": "array", "key": _store(arrays, obj)}
    if backend.is_array(obj):  # a bare device array: saved like a tensor's data
        return {"t": "tensor", "key": _store(arrays, backend.to_numpy(obj)),
                "device": str(backend.device_of(obj)), "requires_grad": False, "raw": True}
    if isinstance(obj, (list, tuple)):
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {"t": kind, "items": [_encode(v, arrays, f"{where}[{i}]", depth + 1) for i, v in enumerate(obj)]}
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool, tuple, type(None))):
                raise TypeError(f"save: dict key {k!r} at {where} has type {type(k).__name__}; keys "
                                f"must be str, int, float, bool, None or tuples of those")
            items.append([_encode(k, arrays, f"{where} key", depth + 1),
                          _encode(v, arrays, f"{where}[{k!r}]", depth + 1)])
        return {"t": "dict", "items": items}
    raise TypeError(f"save: cannot save {type(obj).__name__} at {where}; a checkpoint holds dicts, "
                    f"lists, tuples, Tensors, NumPy arrays and scalars, int, float, str, bool, None")


def _store(arrays, array):
    key = f"a{len(arrays)}"
    arrays[key] = array  # np.savez copies into the file; 0-d arrays stay 0-d
    return key


def _check_plain_dtype(dtype, where):
    if dtype.hasobject or dtype.kind not in "biufcSU":
        raise TypeError(f"save: array at {where} has dtype {dtype}; only numeric, bool and string "
                        f"arrays can be saved (object arrays would need pickle)")


def _atomic_write(path, write):
    """Write via write(file) to a temp file beside path, fsync, rename over path, fsync the dir."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    # mkstemp makes a private (0600) file: keep the old checkpoint's mode, or the usual 0644
    mode = os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, mode)
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_directory(directory)


def _fsync_directory(directory):
    """Make the rename itself durable (POSIX; Windows cannot open a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# ---- load ----------------------------------------------------------------------------------------
def load(path, map_location=None):
    """Read a checkpoint written by save(). Tensors return to their saved device, or all to
    map_location (a device string) when given; arrays and numbers come back as they were."""
    path = os.fspath(path)
    _refuse_non_npz(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise CheckpointError(f"load: {path} contains pickled objects (an object array?); "
                                  f"refusing to unpickle them") from None
        raise CheckpointError(f"load: {path} is not a readable .npz checkpoint: {e}") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"load: {path} is damaged or truncated: {e}") from None
    if MANIFEST not in arrays:
        raise CheckpointError(f"load: {path} is an .npz file but not a tinygrad_bn checkpoint "
                              f"(no {MANIFEST} entry)")
    manifest = _read_manifest(arrays.pop(MANIFEST), path)
    device = None if map_location is None else backend.as_device(map_location)
    try:
        return _decode(manifest["tree"], arrays, device, path)
    except (KeyError, TypeError, ValueError, AttributeError, ArithmeticError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"load: {path} has a corrupt manifest: {type(e).__name__}: {e}") from None


def _refuse_non_npz(path):
    """Look at the bytes before NumPy does: a pickle or a torch .pt zip gets a clear refusal."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head.startswith(PICKLE_PROTOCOL_OPCODE):
        raise CheckpointError(f"load: {path} is a pickle, not a tinygrad_bn checkpoint; refusing to "
                              f"unpickle it (pickles can run arbitrary code)")
    if head != ZIP_MAGIC:
        raise CheckpointError(f"load: {path} is not a tinygrad_bn checkpoint (expected an .npz "
                              f"archive starting with {ZIP_MAGIC!r}, found {head!r})")
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"load: {path} is damaged or truncated: {e}") from None
    if any(name.endswith(".pkl") or "/data.pkl" in name for name in names):
        raise CheckpointError(f"load: {path} looks like a PyTorch .pt file (it contains "
                              f"{[n for n in names if n.endswith('.pkl')][0]}); refusing to unpickle it")
    foreign = [n for n in names if not n.endswith(".npy")]
    if foreign:
        raise CheckpointError(f"load: {path} is a zip archive with non-array entries {foreign[:3]}; "
                              f"not a tinygrad_bn checkpoint")
    _check_entries(path)


def _check_entries(path):
    """Bound what loading allocates by the file itself, before NumPy reads any entry: every entry
    is stored (save() never compresses; a deflated entry could inflate to any size), entries fit
    in the file, and each .npy header declares a plain dtype and a shape whose bytes are exactly
    the entry's. Each failure names the entry and the field."""
    file_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for info in infos:
            if info.compress_type != zipfile.ZIP_STORED:
                raise CheckpointError(f"load: {path}: entry {info.filename!r} is compressed (zip "
                                      f"method {info.compress_type}); save() writes stored entries "
                                      f"only, and a compressed one could inflate to any size, so it "
                                      f"is refused")
        if sum(info.file_size for info in infos) > file_size:
            raise CheckpointError(f"load: {path}: its zip entries declare "
                                  f"{sum(info.file_size for info in infos)} bytes in all, more than "
                                  f"the file's {file_size}; damaged or hostile")
        for info in infos:
            entry = f"load: {path}: entry {info.filename!r}"
            with archive.open(info) as f:
                try:
                    version = np.lib.format.read_magic(f)
                    header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                              else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = header(f)
                except ValueError as e:
                    if "pickle" in str(e).lower() or "object" in str(e).lower():
                        raise CheckpointError(f"load: {path} contains pickled objects (an object "
                                              f"array?); refusing to unpickle them") from None
                    raise CheckpointError(f"{entry} has an unreadable .npy header: {e}") from None
                header_size = f.tell()
            if dtype.hasobject:
                raise CheckpointError(f"load: {path} contains pickled objects (an object array in "
                                      f"entry {info.filename!r}); refusing to unpickle them")
            if dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in "biufcSU":
                raise CheckpointError(f"{entry} field dtype is {dtype}; a checkpoint holds plain "
                                      f"numeric, bool and string arrays only")
            declared = math.prod(shape) * dtype.itemsize  # Python ints: no wrap-around
            if header_size + declared != info.file_size:
                raise CheckpointError(f"{entry} field shape {shape} of {dtype} declares {declared} "
                                      f"bytes, but the entry holds {info.file_size - header_size}; "
                                      f"damaged or hostile")


def _read_manifest(array, path):
    try:
        manifest = json.loads(array.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"load: {path} has a corrupt manifest: {e}") from None
    except RecursionError:
        raise CheckpointError(f"load: {path} has a corrupt manifest: nested deeper than the JSON "
                              f"parser allows (a checkpoint nests at most {MAX_DEPTH} levels)") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise CheckpointError(f"load: {path} manifest does not describe a {FORMAT} file")
    version = manifest.get("version")
    if not isinstance(version, int) or version > VERSION or version < 1:
        raise CheckpointError(f"load: {path} has checkpoint format version {version!r}, but this "
                              f"tinygrad_bn reads versions 1..{VERSION}; upgrade tinygrad_bn to read it")
    return manifest


def _decode(node, arrays, device, path, where="tree", depth=0):
    """The object for one manifest node; `where` names the field for messages."""
    def bad(message):
        return CheckpointError(f"load: {path} has a corrupt manifest: field {where} {message}")
    if depth > MAX_DEPTH:
        raise bad(f"is nested more than {MAX_DEPTH} levels deep")
    kind = node.get("t") if isinstance(node, dict) else None
    if kind == "none":
        return None
    if kind in ("bool", "int", "float", "str"):
        value = node.get("v")
        ok = {"bool": type(value) is bool, "int": type(value) is int,
              "float": type(value) in (int, float), "str": type(value) is str}[kind]
        if not ok:
            raise bad(f"is a '{kind}' node whose value is {str(value)[:40]} ({type(value).__name__})")
        return float(value) if kind == "float" else value
    if kind in ("list", "tuple", "dict"):
        items = node.get("items")
        if not isinstance(items, list):
            raise bad(f"is a {kind} node without a list of items")
        if kind == "dict":
            if not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise bad("is a dict node whose items are not [key, value] pairs")
            out = {}
            for i, (k, v) in enumerate(items):
                key = _decode(k, arrays, device, path, f"{where}.items[{i}][0]", depth + 1)
                try:
                    hash(key)
                except TypeError:
                    raise bad(f"has a dict key of type {type(key).__name__}") from None
                out[key] = _decode(v, arrays, device, path, f"{where}.items[{i}][1]", depth + 1)
            return out
        decoded = [_decode(v, arrays, device, path, f"{where}.items[{i}]", depth + 1)
                   for i, v in enumerate(items)]
        return decoded if kind == "list" else tuple(decoded)
    if kind in ("tensor", "array", "scalar"):
        if node.get("key") not in arrays:
            raise CheckpointError(f"load: {path} manifest refers to a missing array {node.get('key')!r}")
        array = arrays[node["key"]]
        if kind == "array":
            return array
        if kind == "scalar":
            if array.ndim != 0:
                raise bad(f"is a scalar whose array {node['key']!r} has shape {array.shape}")
            return array[()]
        if array.dtype not in SUPPORTED:
            raise bad(f"is a tensor whose array {node['key']!r} has dtype {array.dtype}; tensors "
                      f"hold {', '.join(str(d) for d in SUPPORTED)}")
        try:
            target = device if device is not None else backend.as_device(node["device"])
        except (KeyError, TypeError, ValueError) as e:
            raise bad(f"has a bad device {str(node.get('device'))[:40]!r}: {e}") from None
        if target.type == "cuda" and not backend.cuda_is_available():
            raise CheckpointError(f"load: {path} has tensors saved on {node['device']}, but CUDA is "
                                  f"not available here; pass map_location='cpu'")
        data = backend.to_device(array, target)
        if node.get("raw"):
            return data
        t = Tensor._make(data)
        return t.requires_grad_(True) if node.get("requires_grad") else t
    raise CheckpointError(f"load: {path} manifest has an unknown node {str(node)[:80]} at field {where}")
