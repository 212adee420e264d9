"""Fixed-width row files: a 64-byte header, then rows of ``row_bytes`` bytes.

Used for the float32 vector log and for the sealed codes. Rows are written
with ``pwrite`` + ``fdatasync`` past the committed end, then made visible by
the catalog's commit, so a crash mid-write leaves only invisible bytes that
the next write overwrites. Reads go through a read-only mmap, or, for a
*resident* file, through a copy of the committed rows in process memory.
"""

from __future__ import annotations

import mmap
import os
import struct
import threading
import zlib
from pathlib import Path

import numpy as np

from vecpack.errors import CorruptData

HEADER = struct.Struct("<8sII48x")  # magic, format version, row_bytes
HEADER_SIZE = HEADER.size  # 64: keeps float32 rows aligned
FORMAT_VERSION = 1
GROW_BYTES = 64 << 20


class RowFile:
    """Append rows at given row numbers and read them as a numpy view.

    A resident file keeps the rows it has been asked to view in anonymous memory, read once
    with pread and extended as later views ask for more; ``write`` updates the rows it already
    holds, so the copy always equals the file as this process wrote it. Memory-mapped
    pages are the kernel's to drop when they go cold, and a dropped page costs a disk read on the
    next query; resident rows are not dropped (measured on this project's benchmark host, which
    reclaims cold pages within minutes: the largest tenant of a 1M multi-tenant collection took
    132 ms mapped, 5.6 ms resident, docs/results/tenants_synthetic_1000000_384_1000.md).
    """

    def __init__(self, path: Path, magic: bytes, row_bytes: int, *, create: bool = False,
                 resident: bool = False) -> None:
        self.path = Path(path)
        self.row_bytes = row_bytes
        self.resident = resident
        self._rows = np.empty((0, row_bytes), dtype=np.uint8)  # resident copy: capacity >= loaded rows
        self._loaded = 0
        self._load_lock = threading.Lock()
        if create:
            with open(self.path, "xb") as f:
                f.write(HEADER.pack(magic, FORMAT_VERSION, row_bytes))
                f.flush()
                os.fsync(f.fileno())
        self._fd = os.open(self.path, os.O_RDWR)
        try:
            head = os.pread(self._fd, HEADER_SIZE, 0)
            if len(head) < HEADER_SIZE:
                raise CorruptData(f"{self.path}: truncated header ({len(head)} bytes)")
            got_magic, version, got_row_bytes = HEADER.unpack(head)
            if got_magic != magic or version != FORMAT_VERSION or got_row_bytes != row_bytes:
                raise CorruptData(
                    f"{self.path}: header says magic={got_magic!r} version={version} row_bytes={got_row_bytes}, "
                    f"expected {magic!r} version={FORMAT_VERSION} row_bytes={row_bytes}"
                )
        except BaseException:
            os.close(self._fd)
            raise
        self._map: mmap.mmap | None = None
        self._mapped = 0

    def rows_on_disk(self) -> int:
        """Whole rows present in the file (committed or not)."""
        return max(0, (os.fstat(self._fd).st_size - HEADER_SIZE) // self.row_bytes)

    def check(self, n_rows: int) -> None:
        """Raise CorruptData if the file holds fewer than ``n_rows`` rows."""
        have = self.rows_on_disk()
        if have < n_rows:
            raise CorruptData(f"{self.path}: truncated: catalog commits {n_rows} rows, file holds {have}")

    def write(self, row0: int, data: np.ndarray) -> int:
        """Write rows ``data`` (n, row_bytes as any dtype) at row ``row0`` and fdatasync; returns their crc32."""
        buf = np.ascontiguousarray(data).view(np.uint8).reshape(-1)
        if buf.size % self.row_bytes:
            raise ValueError(f"{self.path}: {buf.size} bytes is not a whole number of {self.row_bytes}-byte rows")
        offset = HEADER_SIZE + row0 * self.row_bytes
        end = offset + buf.size
        size = os.fstat(self._fd).st_size
        if end > size:  # grow in large steps: fewer remaps, and the file stays mostly contiguous
            os.ftruncate(self._fd, max(end, min(size * 2, size + GROW_BYTES), HEADER_SIZE + GROW_BYTES // 16))
        view = memoryview(buf)
        written = 0
        while written < buf.size:
            written += os.pwrite(self._fd, view[written:], offset + written)
        os.fdatasync(self._fd)
        with self._load_lock:  # rows already resident are rewritten there too (the copy never goes stale)
            overlap = min(self._loaded - row0, buf.size // self.row_bytes)
            if overlap > 0:
                self._rows[row0 : row0 + overlap] = buf[: overlap * self.row_bytes].reshape(overlap, self.row_bytes)
        return zlib.crc32(view)

    @property
    def resident_rows(self) -> int:
        """How many rows a resident file holds in memory so far (0 for a mapped one)."""
        return self._loaded if self.resident else 0

    def crc(self, row0: int, n: int) -> int:
        """crc32 of rows row0 .. row0+n-1 as stored in the file (not the resident copy)."""
        return zlib.crc32(memoryview(self.mapped(row0 + n, np.uint8)[row0:]))

    def view(self, n_rows: int, dtype: type = np.uint8) -> np.ndarray:
        """Read-only array (n_rows, row_bytes / itemsize) over the first n_rows rows (committed rows only)."""
        if self.resident:
            out = self._load(n_rows)[:n_rows].view(dtype)
            out.flags.writeable = False
            return out
        return self.mapped(n_rows, dtype)

    def mapped(self, n_rows: int, dtype: type = np.uint8) -> np.ndarray:
        """``view`` through the file's mmap, even for a resident file (its copy is not loaded)."""
        need = HEADER_SIZE + n_rows * self.row_bytes
        if self._map is None or need > self._mapped:
            size = os.fstat(self._fd).st_size
            if size < need:
                raise CorruptData(f"{self.path}: truncated: need {n_rows} rows, file holds fewer")
            # earlier views keep their own (old) mapping alive until they are dropped
            self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
            self._map.madvise(mmap.MADV_RANDOM)
            self._mapped = size
        itemsize = np.dtype(dtype).itemsize
        arr = np.frombuffer(self._map, dtype=dtype, count=n_rows * self.row_bytes // itemsize, offset=HEADER_SIZE)
        return arr.reshape(n_rows, self.row_bytes // itemsize)

    def _load(self, n_rows: int) -> np.ndarray:
        """The resident buffer, holding at least rows 0 .. n_rows-1 (read from the file as needed)."""
        with self._load_lock:
            if n_rows > self._loaded:
                if n_rows > self.rows_on_disk():
                    raise CorruptData(f"{self.path}: truncated: need {n_rows} rows, file holds fewer")
                rows = self._rows
                if n_rows > rows.shape[0]:  # grow by a quarter: appends stay amortised O(1) per row
                    rows = np.empty((max(n_rows, rows.shape[0] + rows.shape[0] // 4), self.row_bytes), np.uint8)
                    rows[: self._loaded] = self._rows[: self._loaded]
                part = rows[self._loaded : n_rows].reshape(-1)
                offset = HEADER_SIZE + self._loaded * self.row_bytes
                done = 0
                while done < part.size:
                    got = os.preadv(self._fd, [part[done:]], offset + done)
                    if got <= 0:
                        raise CorruptData(f"{self.path}: truncated at row {self._loaded + done // self.row_bytes}")
                    done += got
                self._rows, self._loaded = rows, n_rows
            return self._rows

    def gather(self, rows: np.ndarray, dtype: type = np.uint8) -> np.ndarray:
        """Copy of the given rows (r, row_bytes / itemsize), read with pread.

        Unlike faulting them in through the mmap, which maps whole neighbourhoods
        of pages into the process (the kernel's fault-around), this keeps the
        process's resident memory at the size of the copy.
        """
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        for i, r in enumerate(rows.tolist()):
            if os.preadv(self._fd, [out[i]], HEADER_SIZE + r * self.row_bytes) != self.row_bytes:
                raise CorruptData(f"{self.path}: row {r} is truncated")
        return out.view(dtype)

    def close(self) -> None:
        self._map = None
        self._rows, self._loaded = np.empty((0, self.row_bytes), dtype=np.uint8), 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
