"""The catalog's ``meta`` table as one typed record: every key a collection keeps, with its default.

Settings are written once, when the collection is created; counters and file names change
with every commit that touches them (``Catalog.set_meta`` inside the write transaction).
Reading them through ``Manifest`` keeps the keys and their defaults in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any

from vecpack.storage.catalog import Catalog


@dataclass(frozen=True, slots=True)
class Manifest:
    """One collection's settings, counters and current files, as committed."""

    # settings, fixed at creation
    name: str
    dim: int
    metric: str  # "cosine", "ip" or "l2"
    seal_rows: int  # growing rows that trigger a seal
    index: str = "flat"  # "flat", "graph" or "ivf"
    index_params: dict[str, Any] = field(default_factory=dict)
    multi_tenant: bool = False
    tuning: dict[str, Any] | None = None  # codec="auto": its settings (``tuning.check_settings``)
    field_indexes: list[str] = field(default_factory=list)  # metadata fields kept as columns
    # the codec: its spec ("auto" until the tuner chose one), file and checksum once trained
    codec: str = "float32"
    codec_file: str = "codec.npz"
    codec_crc: int | None = None
    codec_fidelity: float | None = None  # ``tuning.fidelity`` when it was fitted (or last checked)
    tuning_report: dict[str, Any] | None = None
    # rows: every row ever written below n_rows, coded below sealed_rows, in generation g's files
    n_rows: int = 0
    sealed_rows: int = 0
    generation: int = 0
    vectors_file: str = "vectors.f32"
    codes_file: str = "codes.bin"
    index_state: dict[str, Any] | None = None  # the index folder: dir, rows, crc, params, arrays
    # counted by every write transaction: how other handles tell a new commit from their own
    commit_seq: int = 0
    churn: int = 0  # rows written or deleted since creation
    drift_checked_churn: int = 0  # churn when drift was last measured

    @classmethod
    def read(cls, catalog: Catalog) -> Manifest:
        """The manifest as ``catalog``'s connection sees it (keys it does not know, e.g. ``schema``, ignored)."""
        meta = catalog.all_meta()
        return cls(**{k: meta[k] for k in KEYS if k in meta})

    @property
    def files(self) -> tuple[str, str]:
        """(vector log, codes) of the current generation."""
        return self.vectors_file, self.codes_file

    def current_files(self) -> set[str]:
        """Names in the folder this manifest refers to (anything else derived is stale)."""
        state = self.index_state
        return {self.vectors_file, self.codes_file, self.codec_file, *([state["dir"]] if state else [])}


KEYS = frozenset(f.name for f in fields(Manifest))
_DEFAULTS: dict[str, Callable[[], Any]] = {
    f.name: f.default_factory if f.default_factory is not MISSING else (lambda d=f.default: d)
    for f in fields(Manifest) if f.default is not MISSING or f.default_factory is not MISSING
}


def get(catalog: Catalog, key: str) -> Any:
    """One key of the manifest (or its default): for the hot paths, which need one of them."""
    if key not in _DEFAULTS:
        raise ValueError(f"not a manifest key with a default: {key!r}")
    return catalog.get_meta(key, _DEFAULTS[key]())


def update(catalog: Catalog, **values: Any) -> None:
    """Set manifest keys inside the caller's write transaction; ValueError naming a key the manifest lacks."""
    unknown = set(values) - KEYS
    if unknown:
        raise ValueError(f"not manifest keys: {sorted(unknown)}")
    catalog.set_meta(**values)
