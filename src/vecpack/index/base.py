"""The index contract, and how an index's arrays live on disk.

An index covers the sealed rows 0 .. ``rows``-1 of a collection and returns
candidate rows scored over compressed codes; the collection merges them with
a flat scan of rows sealed after the index was built and an exact scan of the
growing rows, then re-ranks (see ``vecpack.search``). Rows are never renumbered
under an index, except by ``compact`` during compaction.

On disk an index is a folder of ``.npy`` arrays (opened with mmap, so a
reopen reads no data) written to a temporary name and renamed into place.
"""

from __future__ import annotations

import os
import shutil
import zlib
from abc import ABC, abstractmethod
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from vecpack.codecs.base import Probe
from vecpack.errors import CorruptData, InvalidInput
from vecpack.storage.files import fsync_dir


class IndexKind(StrEnum):
    """A collection's index (``Collection.index_kind``): none (every code scanned), a graph, or IVF lists."""

    FLAT = "flat"
    GRAPH = "graph"
    IVF = "ivf"


class Index(ABC):
    """A search structure over rows 0 .. rows-1; ``params`` are its build parameters (JSON-able, with the
    codec metric "ip" or "l2" under "metric")."""

    kind: ClassVar[IndexKind]
    #: the search-time parameter this index reads: "ef" (a graph's beam width) or "nprobe" (IVF's lists scanned)
    search_param: ClassVar[str]

    def __init__(self, rows: int, params: dict[str, Any]) -> None:
        self.rows = rows
        self.params = params

    @classmethod
    @abstractmethod
    def build(cls, vectors: np.ndarray, codes: np.ndarray, live: np.ndarray, params: dict[str, Any]) -> Index:
        """Index the live rows of vectors float32 (n, d) (prepared: unit norm for cosine) / codes uint8 (n, c)."""

    @abstractmethod
    def extend(self, vectors: np.ndarray, codes: np.ndarray, live: np.ndarray) -> Index:
        """A new index that also covers rows self.rows .. len(vectors)-1 (the live ones); self is unchanged."""

    @abstractmethod
    def search(
        self, q: np.ndarray, probe: Probe, codes: np.ndarray, allowed: np.ndarray, k_out: int, *,
        ef: int | None = None, nprobe: int | None = None, filtered: bool = False,
        fallback: tuple[int, int] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Best k_out allowed candidates per query, best first: scores float32 / rows int64 (m, k_out), -1 = none.

        q : float32 (m, d) prepared queries; probe : the same queries described by the codec;
        codes : the collection's codes of rows 0 .. rows-1; allowed : uint8 by row, 0 = not to be returned
        (deleted, or not passing a filter).
        ef / nprobe : the search parameter of a graph / an IVF index (None = ``default_search_param(k_out)``);
            an index reads only its own ``search_param``.
        filtered : ``allowed`` passes few rows (a filter): search through them only, where the
            structure allows it (graph); an index whose scan checks ``allowed`` anyway ignores it.
        fallback : (min_allowed, walk_ef), post-filtering ``allowed``: a query whose search found fewer than
            min_allowed passing rows is searched again as ``filtered`` with walk_ef (graph; others ignore it).
        """

    @abstractmethod
    def compact(self, vectors: np.ndarray, codes: np.ndarray, live: np.ndarray, keep: np.ndarray) -> Index:
        """The index after compaction: rows keep[i] (ascending) become row i, every other row is gone.

        keep may hold rows the index does not cover (>= rows); the result covers the kept rows
        below ``rows`` only, and ``extend`` adds the others later.
        """

    @abstractmethod
    def check(self) -> None:
        """Cheap structural checks after loading (ids in range, consistent shapes); CorruptData if not."""

    @abstractmethod
    def default_search_param(self, k_out: int) -> int:
        """The ``search_param`` used when the caller gives none (aims at recall@10 >= 0.95 after re-rank)."""

    @abstractmethod
    def arrays(self) -> dict[str, np.ndarray]:
        """Arrays to persist; ``from_arrays`` rebuilds the index from them."""

    @classmethod
    @abstractmethod
    def from_arrays(cls, rows: int, params: dict[str, Any], arrays: dict[str, np.ndarray]) -> Index: ...

    @property
    def nbytes(self) -> int:
        """Bytes of the index's own arrays (resident while serving)."""
        return sum(a.nbytes for a in self.arrays().values())


def with_defaults(kind: str, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """params over defaults, with the checks every index shares: known names, metric, seed."""
    unknown = set(params) - set(defaults)
    if unknown:
        raise InvalidInput(f"unknown {kind} index parameters {sorted(unknown)}; known: {sorted(defaults)}")
    out = {**defaults, **params}
    if out["metric"] not in ("ip", "l2"):  # the codec metric the index scores with
        raise InvalidInput(f"index metric must be 'ip' or 'l2', got {out['metric']!r}")
    seed = out["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInput(f"index seed must be a non-negative int, got {seed!r}")
    return out


def save_arrays(folder: Path, arrays: dict[str, np.ndarray]) -> int:
    """Write arrays as ``folder/<name>.npy`` atomically (temp folder, fsync, rename); returns their crc32."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    for name, a in arrays.items():
        with open(tmp / f"{name}.npy", "wb") as f:
            np.save(f, np.ascontiguousarray(a))
            f.flush()
            os.fsync(f.fileno())
    fsync_dir(tmp)
    os.replace(tmp, folder)
    fsync_dir(folder.parent)
    return arrays_crc(arrays)


def load_arrays(folder: Path, names: list[str], *, memory_map: bool = True) -> dict[str, np.ndarray]:
    """Arrays written by ``save_arrays``, read into memory or memory-mapped read-only; CorruptData if one is
    missing or unreadable."""
    out = {}
    for name in names:
        path = folder / f"{name}.npy"
        try:
            out[name] = np.load(path, mmap_mode="r" if memory_map else None)
        except (OSError, ValueError) as exc:
            raise CorruptData(f"{path}: cannot read index array ({exc})") from exc
    return out


def arrays_crc(arrays: dict[str, np.ndarray]) -> int:
    """crc32 of the arrays' bytes, in name order (stored in the catalog; ``verify()`` recomputes it)."""
    crc = 0
    for name in sorted(arrays):
        crc = zlib.crc32(np.ascontiguousarray(arrays[name]).view(np.uint8).reshape(-1), crc)
    return crc

