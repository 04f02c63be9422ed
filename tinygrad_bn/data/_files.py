"""Reading dataset files: finding them, decompressing them, and the errors a bad file raises.

Nothing here downloads: a missing file is a FileNotFoundError that says where we looked.

A dataset file is untrusted input. Every byte a loader holds is bounded by the file itself: a
plain file is read as it is, and a gzipped one is inflated in a stream into a buffer sized by its
trailer's declared length, which may be at most MAX_GZIP_RATIO times the compressed size. The
header and the declared size are checked before any inflating, and the running total as it goes,
so a "gzip bomb" (a few MB that inflate to GBs) is refused after a few MB of work.
"""
import os
import struct
import zlib

GZIP_MAGIC = b"\x1f\x8b"
# The real files expand 1.8x (Fashion-MNIST images) to 4.8x (MNIST images); deflate can reach
# 1032x. A larger ratio than this is refused as a probable decompression bomb. It is also the bound
# on what reading a gzip costs: a buffer of the declared size, at most 8x the file (plus the
# allowance), is all that is allocated, however the stream then turns out.
MAX_GZIP_RATIO = 8
GZIP_ALLOWANCE = 1 << 20  # tiny files (a label file of a few samples) may expand more than 8x
_CHUNK = 1 << 16   # compressed bytes read at a time
_PIECE = 1 << 18   # inflated bytes produced at a time


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
    """The whole file, gunzipped when it starts with the gzip magic bytes (whatever its name).
    A gzipped file comes back as a bytearray of at most MAX_GZIP_RATIO x its own size."""
    with open(path, "rb") as f:
        head = f.read(2)
        f.seek(0)
        if head != GZIP_MAGIC:
            return f.read()
        return _gunzip(f, os.fstat(f.fileno()).st_size, path)


def _gunzip(f, compressed_size, path):
    """Inflate one gzip member from f into a buffer of its declared size, checking as it goes."""
    header = f.read(10)
    if len(header) < 10 or compressed_size < 18:
        raise DatasetFileError(f"{path}: corrupt or truncated gzip data (the gzip header and trailer "
                               f"need 18 bytes, the file has {compressed_size})")
    method, flags = header[2], header[3]
    if method != 8 or flags & 0xE0:
        raise DatasetFileError(f"{path}: corrupt or truncated gzip data (gzip header field "
                               f"{'compression method' if method != 8 else 'flags'}: method {method}, "
                               f"flags 0x{flags:02x}; expected deflate (8) and no reserved flags)")
    f.seek(compressed_size - 4)
    (declared,) = struct.unpack("<I", f.read(4))  # ISIZE: the uncompressed length mod 2**32
    limit = MAX_GZIP_RATIO * compressed_size + GZIP_ALLOWANCE
    if declared > limit:
        raise DatasetFileError(f"{path}: corrupt or truncated gzip data, or a decompression bomb: "
                               f"its trailer field ISIZE declares {declared} uncompressed bytes from "
                               f"{compressed_size} compressed, more than {MAX_GZIP_RATIO}x; refusing "
                               f"it (gunzip it yourself if it is genuine)")
    f.seek(0)
    out = bytearray(declared)
    view, filled = memoryview(out), 0
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)  # 16+: expect and check the gzip wrapper
    try:
        pending, at_end = b"", False
        while not inflater.eof:
            if not pending:
                pending = f.read(_CHUNK)
                at_end = not pending  # then decompress(b"") only flushes what zlib still holds
            # pieces of at most _PIECE bytes, so the buffer is the only large allocation; and at
            # most one byte beyond the declared size: enough to know the trailer lied
            piece = inflater.decompress(pending, min(declared - filled + 1, _PIECE))
            pending = inflater.unconsumed_tail
            if at_end and not piece and not inflater.eof:
                raise DatasetFileError(f"{path}: corrupt or truncated gzip data (the deflate "
                                       f"stream ends early, after {filled} bytes)")
            if filled + len(piece) > declared:
                raise DatasetFileError(f"{path}: gzip data inflates beyond the {declared} bytes its "
                                       f"trailer field ISIZE declares; corrupt or a decompression bomb")
            view[filled:filled + len(piece)] = piece
            filled += len(piece)
    except zlib.error as e:  # bad deflate data or bad CRC / length in the trailer
        raise DatasetFileError(f"{path}: corrupt or truncated gzip data ({e})") from None
    finally:
        view.release()
    if filled != declared:
        raise DatasetFileError(f"{path}: corrupt or truncated gzip data (inflated {filled} bytes, "
                               f"the trailer field ISIZE declares {declared})")
    if inflater.unused_data or f.read(1):
        raise DatasetFileError(f"{path}: data after the gzip stream (several gzip members?); "
                               f"gunzip the file and use the uncompressed one")
    return out
