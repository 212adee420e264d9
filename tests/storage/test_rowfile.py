"""RowFile on its own: write / view round trips (resident and mapped), crc32s, growth, the header checks,
gather, the resident copy following writes, close, and views that outlive a remap."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from vecpack.errors import CorruptData
from vecpack.storage.rowfile import FORMAT_VERSION, HEADER, HEADER_SIZE, RowFile

MAGIC = b"TESTROW1"
DIM = 6
ROW_BYTES = 4 * DIM  # one float32 row of DIM values


@pytest.fixture
def path(tmp_path):
    return tmp_path / "rows.f32"


@pytest.fixture
def opened():
    """Every RowFile a test opens, closed at the end."""
    files: list[RowFile] = []
    yield files
    for f in files:
        f.close()


@pytest.fixture
def open_rows(path, opened):
    """Open (or create) a RowFile on the test's file; closed after the test."""

    def make(row_bytes: int = ROW_BYTES, *, magic: bytes = MAGIC, **kwargs) -> RowFile:
        f = RowFile(path, magic, row_bytes, **kwargs)
        opened.append(f)
        return f

    return make


@pytest.fixture(params=[False, True], ids=["mapped", "resident"])
def resident(request) -> bool:
    return request.param


@pytest.fixture
def rows(rng) -> np.ndarray:
    return rng.normal(size=(40, DIM)).astype(np.float32)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


#: what a closed file's view / write may raise (the class is not documented: a closed descriptor or file)
CLOSED_ERRORS = (OSError, ValueError)

needs_proc = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts descriptors in /proc/self/fd")


def test_write_then_view_after_reopen_float32(open_rows, rows, resident):
    f = open_rows(create=True)
    assert f.write(0, rows[:25]) == zlib.crc32(rows[:25].tobytes())
    assert f.write(25, rows[25:]) == zlib.crc32(rows[25:].tobytes())
    assert np.array_equal(f.view(40, np.float32), rows)
    f.close()
    again = open_rows(resident=resident)
    got = again.view(40, np.float32)
    assert got.dtype == np.float32 and got.shape == (40, DIM)
    assert np.array_equal(got, rows)
    assert np.array_equal(again.view(7, np.float32), rows[:7])
    assert not got.flags.writeable


def test_write_then_view_uint8(open_rows, rng, resident):
    codes = rng.integers(0, 256, size=(33, 5), dtype=np.uint8)
    open_rows(5, create=True).write(0, codes)
    again = open_rows(5, resident=resident)
    got = again.view(33)
    assert got.dtype == np.uint8 and np.array_equal(got, codes)
    assert np.array_equal(again.mapped(33), codes)
    assert np.array_equal(again.view(12)[10:], codes[10:12])


def test_write_accepts_rows_as_any_dtype_and_returns_their_crc(open_rows, rows):
    f = open_rows(create=True)
    as_bytes = rows[:4].view(np.uint8)  # (4, ROW_BYTES) bytes
    assert f.write(10, as_bytes) == zlib.crc32(rows[:4].tobytes())
    assert f.write(14, rows[4:9].reshape(-1)) == zlib.crc32(rows[4:9].tobytes())  # flat works too
    assert np.array_equal(f.view(19, np.float32)[10:19], rows[:9])


def test_crc_recomputes_the_written_crc_from_the_file(open_rows, rows, resident):
    f = open_rows(create=True, resident=resident)
    crcs = [(0, 16, f.write(0, rows[:16])), (16, 24, f.write(16, rows[16:]))]
    f.close()
    again = open_rows(resident=resident)
    for row0, n, crc in crcs:
        assert again.crc(row0, n) == crc
    assert again.crc(0, 40) == zlib.crc32(rows.tobytes())
    assert again.crc(3, 5) == zlib.crc32(rows[3:8].tobytes())
    assert again.crc(5, 0) == zlib.crc32(b"")
    assert again.resident_rows == 0  # crc reads the file, not a resident copy


def test_crc_sees_the_file_not_the_resident_copy(open_rows, rows, path):
    f = open_rows(create=True, resident=True)
    crc = f.write(0, rows[:8])
    f.view(8)
    with open(path, "r+b") as raw:  # damage row 2 behind the open file's back
        raw.seek(HEADER_SIZE + 2 * ROW_BYTES)
        raw.write(b"\xff" * 4)
    assert f.crc(0, 8) != crc
    assert np.array_equal(f.view(8, np.float32), rows[:8])  # the resident copy is what was written


@pytest.mark.parametrize("n_bytes", [ROW_BYTES - 1, ROW_BYTES + 4, 3 * ROW_BYTES - 2])
def test_write_of_a_partial_row_is_refused(open_rows, n_bytes):
    f = open_rows(create=True)
    with pytest.raises(ValueError, match="whole number"):
        f.write(0, np.zeros(n_bytes, np.uint8))
    assert f.rows_on_disk() == 0  # nothing was written


def test_write_past_the_end_grows_the_file(open_rows, rows, path):
    f = open_rows(create=True)
    assert f.rows_on_disk() == 0
    f.write(0, rows[:2])
    first = f.rows_on_disk()
    assert first >= 2
    far = first + 1_000  # past everything the file held
    f.write(far, rows[2:5])
    assert f.rows_on_disk() >= far + 3
    assert os.path.getsize(path) >= HEADER_SIZE + (far + 3) * ROW_BYTES
    got = f.view(far + 3, np.float32)
    assert np.array_equal(got[:2], rows[:2]) and np.array_equal(got[far:], rows[2:5])
    assert not got[2:far].any()  # the hole reads as zeros


def test_check_raises_past_the_rows_on_disk(open_rows, rows):
    f = open_rows(create=True)
    f.check(0)
    with pytest.raises(CorruptData, match="truncated"):
        f.check(1)
    f.write(0, rows[:3])
    have = f.rows_on_disk()
    f.check(have)
    with pytest.raises(CorruptData, match=f"truncated.*{have + 1}.*{have}"):
        f.check(have + 1)


def test_view_past_the_rows_on_disk_is_corrupt(open_rows, rows, resident):
    f = open_rows(create=True, resident=resident)
    f.write(0, rows[:3])
    with pytest.raises(CorruptData, match="truncated"):
        f.view(f.rows_on_disk() + 1)


# -- the header ----------------------------------------------------------------------------------------------
def write_header(path, magic=MAGIC, version=FORMAT_VERSION, row_bytes=ROW_BYTES, rows=b"") -> None:
    path.write_bytes(HEADER.pack(magic, version, row_bytes) + rows)


def test_header_is_64_bytes_and_holds_what_was_given(open_rows, path):
    open_rows(create=True)
    head = path.read_bytes()
    assert HEADER_SIZE == 64 and len(head) == HEADER_SIZE
    assert HEADER.unpack(head) == (MAGIC, FORMAT_VERSION, ROW_BYTES)


@pytest.mark.parametrize(
    ("header", "found"),
    [
        ({"magic": b"OTHERMAG"}, "magic=b'OTHERMAG'"),
        ({"version": FORMAT_VERSION + 1}, f"version={FORMAT_VERSION + 1}"),
        ({"row_bytes": ROW_BYTES + 4}, f"row_bytes={ROW_BYTES + 4}"),
    ],
)
def test_a_wrong_header_is_corrupt_and_names_what_it_found(path, header, found):
    write_header(path, **header, rows=bytes(4 * ROW_BYTES))
    with pytest.raises(CorruptData, match="header says") as caught:
        RowFile(path, MAGIC, ROW_BYTES)
    assert found in str(caught.value) and str(path) in str(caught.value)


def test_opening_with_another_row_width_is_corrupt(open_rows, path):
    open_rows(create=True).write(0, np.zeros((8, ROW_BYTES), np.uint8))
    with pytest.raises(CorruptData, match=f"row_bytes={ROW_BYTES}, expected .* row_bytes={ROW_BYTES * 2}"):
        RowFile(path, MAGIC, ROW_BYTES * 2)


@pytest.mark.parametrize("size", [0, 1, HEADER_SIZE - 1])
def test_a_file_shorter_than_the_header_is_corrupt(path, size):
    path.write_bytes(HEADER.pack(MAGIC, FORMAT_VERSION, ROW_BYTES)[:size])
    with pytest.raises(CorruptData, match=f"truncated header \\({size} bytes\\)"):
        RowFile(path, MAGIC, ROW_BYTES)


@needs_proc
def test_a_refused_header_closes_its_descriptor(path):
    write_header(path, magic=b"OTHERMAG")
    before = open_fds()
    for _ in range(3):
        with pytest.raises(CorruptData):
            RowFile(path, MAGIC, ROW_BYTES)
    assert open_fds() == before


def test_create_refuses_an_existing_file(open_rows, rows, path):
    open_rows(create=True).write(0, rows[:3])
    size = os.path.getsize(path)
    with pytest.raises(FileExistsError):
        RowFile(path, MAGIC, ROW_BYTES, create=True)
    assert os.path.getsize(path) == size
    assert np.array_equal(open_rows().view(3, np.float32), rows[:3])


# -- gather ------------------------------------------------------------------------------------------------
def test_gather_returns_exactly_the_rows_asked(open_rows, rows, resident):
    open_rows(create=True).write(0, rows)
    f = open_rows(resident=resident)
    asked = np.array([39, 0, 7, 7, 12, 0, 38])
    got = f.gather(asked, np.float32)
    assert got.shape == (len(asked), DIM) and np.array_equal(got, rows[asked])
    got[:] = 0  # a copy: the file is untouched
    assert np.array_equal(f.gather(np.array([7]), np.float32), rows[[7]])
    raw = f.gather(np.array([3, 1]))
    assert raw.dtype == np.uint8 and np.array_equal(raw, rows[[3, 1]].view(np.uint8))
    assert f.gather(np.array([], dtype=np.int64)).shape == (0, ROW_BYTES)
    assert f.resident_rows == 0  # gather reads with pread, not through the resident copy


def test_gather_past_the_end_is_corrupt(open_rows, rows):
    f = open_rows(create=True)
    f.write(0, rows[:5])
    end = f.rows_on_disk()
    assert np.array_equal(f.gather(np.array([end - 1])), np.zeros((1, ROW_BYTES), np.uint8))  # last whole row
    with pytest.raises(CorruptData, match=f"row {end} is truncated"):
        f.gather(np.array([0, end]))
    with pytest.raises(CorruptData, match=f"row {end + 10} is truncated"):
        f.gather(np.array([end + 10]))


# -- resident copy -----------------------------------------------------------------------------------------
def test_resident_copy_follows_later_writes(open_rows, rows):
    open_rows(create=True).write(0, rows[:20])
    f = open_rows(resident=True)
    assert f.resident_rows == 0
    assert np.array_equal(f.view(10, np.float32), rows[:10])
    assert f.resident_rows == 10

    f.write(2, rows[30:33])  # rows it holds
    assert np.array_equal(f.view(10, np.float32)[2:5], rows[30:33])
    f.write(8, rows[33:38])  # rows 8, 9 held, 10 .. 12 not loaded yet
    expected = np.concatenate([rows[:2], rows[30:33], rows[5:8], rows[33:38], rows[13:20]])
    assert np.array_equal(f.view(20, np.float32), expected)
    assert f.resident_rows == 20
    assert np.array_equal(f.mapped(20, np.float32), expected)  # and the file agrees

    f.view(5)
    assert f.resident_rows == 20  # a shorter view loads nothing and drops nothing
    f.write(19, rows[38:40])  # the last held row, and one past the held rows (loaded on the next longer view)
    assert f.resident_rows == 20
    assert np.array_equal(f.view(20, np.float32)[19], rows[38])
    assert np.array_equal(f.view(21, np.float32)[19:], rows[38:40])
    assert f.resident_rows == 21


def test_mapped_file_reports_no_resident_rows(open_rows, rows):
    f = open_rows(create=True)
    f.write(0, rows)
    f.view(40)
    assert f.resident_rows == 0


def test_mapped_on_a_resident_file_loads_nothing(open_rows, rows):
    open_rows(create=True).write(0, rows)
    f = open_rows(resident=True)
    got = f.mapped(40, np.float32)
    assert np.array_equal(got, rows) and not got.flags.writeable
    assert f.resident_rows == 0
    f.view(4)
    assert f.resident_rows == 4
    f.mapped(40)
    assert f.resident_rows == 4


# -- close and remapping -----------------------------------------------------------------------------------
@needs_proc
def test_close_releases_the_descriptor(rows, path, resident):
    before = open_fds()
    f = RowFile(path, MAGIC, ROW_BYTES, create=True, resident=resident)
    assert open_fds() == before + 1
    f.write(0, rows[:4])
    f.view(4)
    f.close()
    assert open_fds() == before
    assert f.resident_rows == 0
    with pytest.raises(CLOSED_ERRORS):
        f.view(4)
    with pytest.raises(CLOSED_ERRORS):
        f.write(4, rows[4:5])
    f.close()  # a second close is harmless
    assert open_fds() == before


def test_views_taken_before_the_file_grew_stay_valid(open_rows, rows, resident):
    f = open_rows(create=True, resident=resident)
    f.write(0, rows[:10])
    early = f.view(10, np.float32)
    early_mapped = f.mapped(10, np.float32)
    far = f.rows_on_disk() + 500  # beyond the current mapping: the file grows and the next view remaps
    f.write(far, rows[10:])
    late = f.view(far + 30, np.float32)
    assert np.array_equal(late[:10], rows[:10]) and np.array_equal(late[far:], rows[10:])
    assert np.array_equal(early, rows[:10])
    assert np.array_equal(early_mapped, rows[:10])
    assert np.array_equal(f.view(10, np.float32), rows[:10])
