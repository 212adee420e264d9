"""Tenants: hard-isolated namespaces inside one multi-tenant collection.

A multi-tenant collection (``create_collection(..., multi_tenant=True)``) stores
each record under the key ``"<tenant code>\\x1f<id>"`` in the catalog, so ids are
unique per tenant and no lookup by id can reach another tenant's record (ids may
not contain ``\\x1f``). Every call names its tenant; a call without one is refused.

For search, ``TenantRows`` keeps which tenant owns each row (int32 per row) and,
per tenant, its rows in ascending order: a small tenant's query scans exactly its
own rows (cost proportional to the tenant, as with a per-tenant index), a large
tenant's query runs through the shared index restricted to its rows
(``planner``). Both are derived from the catalog and extended as rows arrive;
compaction (new row numbers) rebuilds them. Deactivating a tenant drops its row
list from memory and refuses its calls until it is activated again.
"""

from __future__ import annotations

import numpy as np

from vecpack.storage.catalog import Catalog

SEP = "\x1f"


def key(code: int, id: str) -> str:
    """The catalog key of ``id`` in tenant ``code``."""
    return f"{code}{SEP}{id}"


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
        rows, codes = catalog.tenant_of_rows(n0, n_rows)
        owner[rows - n0] = codes
        self._owner = np.concatenate([self._owner, owner])
        for code in np.unique(codes).tolist():
            if code in self._rows:
                self._rows[code] = np.concatenate([self._rows[code], rows[codes == code].astype(np.int32)])

    def rows(self, code: int) -> np.ndarray:
        """Rows (int32, ascending, deleted ones included) written by tenant ``code``."""
        found = self._rows.get(code)
        if found is None:
            found = self._rows[code] = np.flatnonzero(self._owner == code).astype(np.int32)
        return found

    def owned(self, code: int, rows: np.ndarray) -> np.ndarray:
        """Those of ``rows`` (covered by the last ``sync``) that tenant ``code`` wrote, in their order."""
        return rows[self._owner[rows] == code]

    def drop(self, code: int) -> None:
        """Forget the row list of tenant ``code`` (deactivation); rebuilt on next use."""
        self._rows.pop(code, None)

    @property
    def nbytes(self) -> int:
        return self._owner.nbytes + sum(r.nbytes for r in self._rows.values())
