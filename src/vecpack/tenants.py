"""Tenants: hard-isolated namespaces inside one multi-tenant collection.

A multi-tenant collection (``create_collection(..., multi_tenant=True)``) stores
each record under the key ``"<tenant_no>\\x1f<id>"`` in the catalog (``tenant_no``: the tenant's
number, fixed when it is created), so ids are
unique per tenant and no lookup by id can reach another tenant's record (ids may
not contain ``\\x1f``). Every call names its tenant; a call without one is refused.

For search, ``TenantRows`` keeps which tenant owns each row (int32 per row) and,
per tenant, its rows in ascending order: a small tenant's query scans exactly its
own rows (cost proportional to the tenant, as with a per-tenant index), a large
tenant's query runs through the shared index restricted to its rows
(``planner``). Both are derived from the catalog and extended as rows arrive;
compaction (new row numbers) rebuilds them. Deactivating a tenant drops its row
list from memory and refuses its calls until it is activated again. ``Tenants``
(``Collection.tenants``) resolves a call's tenant and manages them.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vecpack import validate
from vecpack.errors import Conflict, InvalidInput, NotFound
from vecpack.storage.catalog import Catalog
from vecpack.storage.store import Store

SEP = "\x1f"


def key(tenant_no: int, id: str) -> str:
    """The catalog key of ``id`` in tenant ``tenant_no``."""
    return f"{tenant_no}{SEP}{id}"


def public_id(stored: str) -> str:
    """The user's id of a catalog key (keys without a tenant prefix are returned as they are)."""
    return stored.split(SEP, 1)[1] if SEP in stored else stored


class TenantRows:
    """Owner tenant of every row, and each tenant's rows, kept up to date with the collection's rows."""

    def __init__(self) -> None:
        self._owner = np.zeros(0, np.int32)
        self._rows: dict[int, np.ndarray] = {}
        self._generation: object = None

    def sync(self, catalog: Catalog, n_rows: int, generation: object) -> None:
        """Cover rows 0 .. n_rows-1 of row generation ``generation`` (a new generation starts over)."""
        if generation != self._generation:
            self._owner, self._rows, self._generation = np.zeros(0, np.int32), {}, generation
        n0 = self._owner.size
        if n0 >= n_rows:
            return
        owner = np.full(n_rows - n0, -1, np.int32)
        rows, owners = catalog.tenant_of_rows(n0, n_rows)
        owner[rows - n0] = owners
        self._owner = np.concatenate([self._owner, owner])
        for tenant_no in np.unique(owners).tolist():
            if tenant_no in self._rows:
                self._rows[tenant_no] = np.concatenate([self._rows[tenant_no],
                                                        rows[owners == tenant_no].astype(np.int32)])

    def rows(self, tenant_no: int) -> np.ndarray:
        """Rows (int32, ascending, deleted ones included) written by tenant ``tenant_no``."""
        found = self._rows.get(tenant_no)
        if found is None:
            found = self._rows[tenant_no] = np.flatnonzero(self._owner == tenant_no).astype(np.int32)
        return found

    def owned(self, tenant_no: int, rows: np.ndarray) -> np.ndarray:
        """Those of ``rows`` (covered by the last ``sync``) that tenant ``tenant_no`` wrote, in their order."""
        return rows[self._owner[rows] == tenant_no]

    def drop(self, tenant_no: int) -> None:
        """Forget the row list of tenant ``tenant_no`` (deactivation); rebuilt on next use."""
        self._rows.pop(tenant_no, None)

    @property
    def nbytes(self) -> int:
        return self._owner.nbytes + sum(r.nbytes for r in self._rows.values())


class Tenants:
    """The tenants of one collection (``Collection.tenants``): resolve a call's tenant, and manage them."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.multi_tenant = store.settings.multi_tenant
        self.rows = TenantRows()
        self._known: dict[str, tuple[int, bool]] = {}  # name -> (tenant_no, active), cleared on every commit
        store.watchers.append(self._changed)

    def _changed(self, forget: list[int]) -> None:
        for tenant_no in forget:
            self.rows.drop(tenant_no)
        self._known.clear()

    def resolve(self, tenant: str | None, *, create: bool = False) -> int | None:
        """The number of a call's tenant (None in a collection without tenants). Store's lock held; ``create``
        (inside a write transaction) registers a new tenant instead of raising NotFound."""
        if not self.multi_tenant:
            if tenant is not None:
                self.require()
            return None
        if tenant is None:
            raise InvalidInput(f"collection {self._store.name!r} is multi-tenant: every call needs tenant=")
        name = validate.tenant_name(tenant)
        db = self._store.db
        found = self._known.get(name) if not create else None
        if found is None:
            found = db.tenant(name)
            if found is not None and not create:  # committed before this call: safe to remember
                self._known[name] = found
        if found is None:
            if not create:
                raise self._missing(name)
            return db.add_tenant(name)
        if not found[1]:
            raise Conflict(f"tenant {name!r} is inactive: call activate_tenant({name!r}) first")
        return found[0]

    def keys(self, ids: list[str], tenant_no: int | None) -> list[str]:
        """Catalog keys of a call's ids (tenant-prefixed in a multi-tenant collection)."""
        return ids if tenant_no is None else [key(tenant_no, i) for i in ids]

    def records(self, ids: list[str], tenant_no: int | None) -> list[tuple[str, int, str | None]]:
        """(id, row, metadata JSON) of each id of the tenant, in order; NotFound naming any unknown id."""
        keys = self.keys(ids, tenant_no)
        found = self._store.db.records_by_id(keys)
        missing = [i for i, k in zip(ids, keys, strict=True) if k not in found]
        if missing:
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise NotFound(f"unknown ids: {missing[:5]}{more}")
        return [(i, *found[k]) for i, k in zip(ids, keys, strict=True)]

    def create(self, name: str) -> None:
        """Register a tenant (``add`` / ``upsert`` also create theirs); Conflict if it exists."""
        name = self._checked(name)
        with self._store.write():
            if self._store.db.tenant(name) is not None:
                raise Conflict(f"tenant {name!r} already exists in collection {self._store.name!r}")
            self._store.db.add_tenant(name)

    def drop(self, name: str) -> int:
        """Delete a tenant and all its records in one transaction; how many records went."""
        name = self._checked(name)
        store = self._store
        with store.write():
            tenant_no = self._existing(name)
            rows = store.db.rows_with_prefix(key(tenant_no, ""))
            store.delete_rows(rows)
            store.db.remove_tenant(tenant_no)
            store.pending.forget.append(tenant_no)
        return len(rows)

    def list(self) -> list[dict[str, Any]]:
        """Every tenant: ``{"name": ..., "active": bool}``, by name."""
        self.require()
        with self._store.reading():
            return [{"name": n, "active": a} for n, (_, a) in sorted(self._store.db.tenants().items())]

    def set_active(self, name: str, active: bool) -> None:
        """Activate a tenant, or offload it: its in-memory row list and postings are dropped and its calls
        refused until it is activated again; its records stay on disk."""
        name = self._checked(name)
        with self._store.write():
            tenant_no = self._existing(name)
            self._store.db.set_tenant_active(tenant_no, active)
            if not active:
                self._store.pending.forget.append(tenant_no)

    def require(self) -> None:
        """InvalidInput unless the collection is multi-tenant."""
        if not self.multi_tenant:
            raise InvalidInput(f"collection {self._store.name!r} has no tenants (create it with multi_tenant=True)")

    def _checked(self, name: str) -> str:
        self.require()
        return validate.tenant_name(name)

    def _existing(self, name: str) -> int:
        """The number of tenant ``name``, active or not; NotFound if there is none. Inside a write transaction."""
        found = self._store.db.tenant(name)
        if found is None:
            raise self._missing(name)
        return found[0]

    def _missing(self, name: str) -> NotFound:
        return NotFound(f"tenant {name!r} does not exist in collection {self._store.name!r}")
