"""data/_files.py's read_bytes: gzip is inflated in a stream into a buffer of the trailer's
declared size, after the header and that size are checked; every lie is a DatasetFileError."""
import gzip
import struct
import zlib

import pytest

from tinygrad_bn.data._files import MAX_GZIP_RATIO, DatasetFileError, read_bytes


def _gz(data):
    return gzip.compress(data, mtime=0)


def test_plain_and_gzipped_files_read_back(tmp_path):
    data = bytes(range(256)) * 40
    (tmp_path / "plain").write_bytes(data)
    (tmp_path / "packed").write_bytes(_gz(data))
    assert read_bytes(tmp_path / "plain") == data
    assert bytes(read_bytes(tmp_path / "packed")) == data


def test_a_trailer_that_understates_the_size_stops_at_the_declared_size(tmp_path):
    raw = bytearray(_gz(bytes(100_000)))
    raw[-4:] = struct.pack("<I", 1000)
    (tmp_path / "f.gz").write_bytes(raw)
    with pytest.raises(DatasetFileError, match="inflates beyond the 1000 bytes its trailer field ISIZE"):
        read_bytes(tmp_path / "f.gz")


def test_a_trailer_that_overstates_the_size_is_refused(tmp_path):
    raw = bytearray(_gz(bytes(1000)))
    raw[-4:] = struct.pack("<I", 2000)
    (tmp_path / "f.gz").write_bytes(raw)
    with pytest.raises(DatasetFileError, match="corrupt or truncated gzip data"):
        read_bytes(tmp_path / "f.gz")


def test_a_declared_size_beyond_the_ratio_is_refused_before_inflating(tmp_path):
    raw = bytearray(_gz(bytes(100)))
    raw[-4:] = struct.pack("<I", 2 ** 31)
    (tmp_path / "f.gz").write_bytes(raw)
    with pytest.raises(DatasetFileError, match=rf"ISIZE declares 2147483648 .*more than {MAX_GZIP_RATIO}x"):
        read_bytes(tmp_path / "f.gz")


@pytest.mark.parametrize("offset, value, field", [(2, 7, "compression method"), (3, 0x80, "flags")])
def test_a_bad_header_is_refused_first(tmp_path, offset, value, field):
    raw = bytearray(_gz(b"abc"))
    raw[offset] = value
    (tmp_path / "f.gz").write_bytes(raw)
    with pytest.raises(DatasetFileError, match=f"gzip header field {field}"):
        read_bytes(tmp_path / "f.gz")


def test_a_second_member_and_a_bad_crc_are_refused(tmp_path):
    (tmp_path / "two.gz").write_bytes(_gz(b"abc") + _gz(b"def"))
    with pytest.raises(DatasetFileError, match="data after the gzip stream"):
        read_bytes(tmp_path / "two.gz")
    raw = bytearray(_gz(b"abcdef" * 10))
    raw[-8:-4] = struct.pack("<I", zlib.crc32(b"other"))
    (tmp_path / "crc.gz").write_bytes(raw)
    with pytest.raises(DatasetFileError, match="corrupt or truncated gzip data"):
        read_bytes(tmp_path / "crc.gz")
