"""Work on a collection's derived data, in transactions of its store: sealing, codec refits, compaction, index builds.

``optimize`` (one at a time per collection, across processes: ``flock`` on ``optimize.lock``)::

    seal growing rows
    refit the codec if the rows drifted (once 10% of the rows changed; tuning.fidelity)
    compact, if >= 10% of rows are deleted      (holds the write lock: writers wait)
    build or extend the index over every sealed row  (off the lock: searches and writes go on)

Everything here is derived from the vector log and the catalog: a crash at any point leaves the
previous state serving, and files the catalog does not name, which the next ``optimize`` removes.
"""

from __future__ import annotations

import logging
import shutil
from typing import Any

import numpy as np

from vecpack.codecs import make_codec
from vecpack.errors import InvalidInput
from vecpack.index import Index
from vecpack.index.tenant_clusters import TenantClusters
from vecpack.storage import manifest
from vecpack.storage.store import Store, storage_errors
from vecpack.tuning import MIN_TUNE_ROWS, check_settings

log = logging.getLogger("vecpack")

#: optimize() compacts when at least this fraction of the rows are deleted
COMPACT_FRACTION = 0.1
#: optimize() refits the codec when its fidelity (recall@10 of its own scores on a sample of the live rows,
#: ``tuning.fidelity``) fell this much below its fidelity at fit time, and a refitted codec gains as much: the
#: measurement's noise on ~2,000 hits is about 0.01
DRIFT_LOSS = 0.05
#: ... measured once the rows written or deleted since the last measurement reach this share of the live rows
DRIFT_CHECK_SHARE = 0.1


def optimize(store: Store, compact: bool | None, *, index: bool = True) -> None:
    """Seal, refit a drifted codec, compact (``compact``: True = always, False = never, None = when at least
    COMPACT_FRACTION of the rows are deleted), then bring the index up to date (unless ``index`` is False)."""
    with store.optimize_lock, store.exclusive("optimize.lock"), storage_errors(store.path):
        with store.write_lock:
            remove_stale_files(store)
            seal(store)
            store.maintenance_error = None
            _refit_if_drifted(store)
            with store.lock:
                deleted, n_rows = store.segments.n_rows - store.segments.n_live, store.segments.n_rows
            if compact or (compact is None and deleted and deleted >= COMPACT_FRACTION * n_rows):
                with store.write():
                    store.segments.compact(store.db, store.pending)
                remove_stale_files(store)
                store.checkpoint()
        if index:
            _update_index(store)


def seal(store: Store) -> None:
    """Encode the growing rows (training the codec first if needed), in one write transaction."""
    with store.write():
        store.segments.seal(store.db, store.pending)


def seal_if_due(store: Store) -> None:
    """Seal once seal_rows rows are growing. Runs after a write's commit, so a failure here (a full disk) is not
    the write's: it is logged and kept for ``stats()``, the rows stay growing (searched exactly), and the next
    write or ``optimize()`` tries again."""
    segments = store.segments
    if segments.n_rows - segments.sealed < store.settings.seal_rows:
        return
    try:
        seal(store)
    except Exception as exc:  # any failure of maintenance: reported where it cannot be missed
        store.maintenance_error = f"seal failed: {type(exc).__name__}: {exc}"
        store.maintenance_failures += 1
        log.warning("collection %r: %s (the write itself was committed; the rows stay unsealed)", store.name,
                    store.maintenance_error)
    else:
        store.maintenance_error = None


def remove_stale_files(store: Store) -> None:
    """Delete files the catalog no longer names, inside a write transaction: no other process is then inside
    one, writing files it is about to commit."""
    with store.write():
        store.segments.remove_stale_files(store.manifest())


def retune(store: Store, overrides: dict[str, Any]) -> dict[str, Any]:
    """Choose the codec again on the current rows (settings: the stored ones, ``overrides`` on top; a new memory
    or byte budget replaces the old one), re-encoding every sealed row if the choice changed; the tuner's report."""
    with store.optimize_lock, store.exclusive("optimize.lock"), storage_errors(store.path):
        with store.reading():
            stored = store.manifest().tuning or {}
            if overrides.get("memory_budget") is not None or overrides.get("bytes_per_vector") is not None:
                stored = {"target_recall": stored.get("target_recall", 0.95)}
            settings = check_settings({**stored, **{k: v for k, v in overrides.items() if v is not None}})
            n_rows = store.segments.n_rows
            live_rows = np.flatnonzero(store.segments.live[:n_rows])
            if live_rows.size < MIN_TUNE_ROWS:
                raise InvalidInput(f"retune needs at least {MIN_TUNE_ROWS} live rows, the collection has "
                                   f"{live_rows.size}")
        # off the lock: rows below n_rows never change, and only optimize() (whose lock we hold) renumbers
        codec, report, fid = store.segments.choose_codec(live_rows, n_rows, settings)
        with store.write():
            current = store.segments.codec
            if codec.spec == current.spec and current.trained:
                manifest.update(store.db, tuning=settings, tuning_report=report)
            else:
                manifest.update(store.db, tuning=settings)
                store.segments.recode(store.db, store.pending, codec, manifest.get(store.db, "sealed_rows"), fid,
                                      report=report)
        remove_stale_files(store)
    return report


def _refit_if_drifted(store: Store) -> None:
    """Fit the codec again and re-encode every sealed row when the rows have drifted from those it was fitted on:
    on a fresh sample of live rows its fidelity fell more than DRIFT_LOSS below the fidelity it had at fit time
    (or that is unknown), and a codec fitted on that sample does DRIFT_LOSS better. Measured once rows written or
    deleted since the last measurement reach DRIFT_CHECK_SHARE of the live rows. With the write lock held; the
    next index build covers the new codes."""
    segments = store.segments
    with store.reading():
        m = store.manifest()
        codec, sealed, known = segments.codec, segments.sealed, m.codec_fidelity
        live_rows = np.flatnonzero(segments.live[:sealed])
    if not codec.trained or codec.exact or live_rows.size < max(MIN_TUNE_ROWS, codec.min_train_rows):
        return
    if known is not None and m.churn - m.drift_checked_churn < DRIFT_CHECK_SHARE * live_rows.size:
        return  # too few rows changed since the last look to have moved the data
    x, queries = segments.training_sample(live_rows, sealed)
    now = segments.fidelity(codec, x)
    fresh, fresh_fidelity = None, 0.0
    if known is None or now < known - DRIFT_LOSS:
        fresh = make_codec(codec.spec, segments.dim, segments.codec_metric).fit(x, queries)
        fresh_fidelity = segments.fidelity(fresh, x)
    with store.write():
        if fresh is not None and fresh_fidelity >= now + DRIFT_LOSS:
            log.info("collection %r: refitting codec %s (fidelity %.3f, refitted %.3f)", store.name, codec.spec,
                     now, fresh_fidelity)
            segments.recode(store.db, store.pending, fresh, sealed, fresh_fidelity)
        else:  # unknown: fitted before fidelity was recorded, and from now on this is its baseline
            manifest.update(store.db, drift_checked_churn=m.churn, codec_fidelity=known if known is not None else now)


def _update_index(store: Store) -> None:
    """Build or extend the index to cover every sealed row, off the lock, then switch to it atomically."""
    with store.reading():
        job = store.segments.index_job()
    if job is not None:
        _commit_index(store, *job.run(store.settings.multi_tenant), replaces=job.old_dir)


def _commit_index(store: Store, index: Index, clusters: TenantClusters | None, replaces: str | None) -> None:
    """Write the index to a new folder and point the catalog at it (unless another writer moved on)."""
    new_state = store.segments.save_index(index, clusters)
    with store.write():
        state = manifest.get(store.db, "index_state")
        if (state["dir"] if state else None) != replaces:
            shutil.rmtree(store.path / new_state["dir"])
            return
        manifest.update(store.db, index_state=new_state)
    if replaces is not None:
        shutil.rmtree(store.path / replaces, ignore_errors=True)
