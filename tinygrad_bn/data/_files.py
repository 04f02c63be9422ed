"""Reading dataset files: finding them, decompressing them, and the errors a bad file raises.

Nothing here downloads: a missing file is a FileNotFoundError that says where we looked.
"""
import gzip
import os
import zlib

GZIP_MAGIC = b"\x1f\x8b"


class DatasetFileError(ValueError):
    """A dataset file exists but is truncated, corrupt, or not in the expected format."""


def find_file(dataset, names, folders):
    """The first existing path folder/name over folders x names, else FileNotFoundError."""
    tried = [os.path.join(folder, name) for folder in folders for name in names]
    for path in tried:
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"{dataset}: none of these files exists: {', '.join(tried)}. "
                            f"tinygrad_bn never downloads data: put the files there yourself.")


def read_bytes(path):
    """The whole file, gunzipped when it starts with the gzip magic bytes (whatever its name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if not raw.startswith(GZIP_MAGIC):
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:  # truncated stream, bad CRC, bad header
        raise DatasetFileError(f"{path}: corrupt or truncated gzip data ({e})") from None
