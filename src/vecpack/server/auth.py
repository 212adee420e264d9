"""API keys: stored hashed in ``<database folder>/.vecpack-keys.sqlite``, each with one scope.

A key is ``vpk_<prefix>_<secret>``: the 8-hex-digit prefix is its public name (listed, used to
revoke), the secret is 256 random bits. Only the prefix and the SHA-256 of the whole key are
stored (a slow hash adds nothing for random 256-bit secrets), so the key is shown once, at creation.

Scopes: ``admin`` (everything), or ``read`` / ``write`` (write includes read) on one collection or
``*`` (all), optionally pinned to one tenant. A tenant-pinned key acts only on its tenant's records
(every data call must name that tenant) and can never list or manage tenants, create, drop,
optimize or read the stats of a collection, or list the collections.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from vecpack import validate
from vecpack.errors import Forbidden, InvalidInput, NotFound

KEYS_FILE = ".vecpack-keys.sqlite"  # a dot name: Database.list_collections skips it
ROLES = ("admin", "write", "read")
ALL = "*"
_KEY = re.compile(r"vpk_([0-9a-f]{8})_[A-Za-z0-9_-]{43}")
_SCHEMA = """CREATE TABLE IF NOT EXISTS keys (prefix TEXT PRIMARY KEY, hash TEXT NOT NULL, role TEXT NOT NULL,
    collection TEXT NOT NULL, tenant TEXT, created REAL NOT NULL)"""


class Access(enum.Enum):
    """What a request touches, for the tenant rule."""

    DATA = "data"  # records: a tenant-pinned key must name its own tenant
    DESCRIBE = "describe"  # a collection's schema (dim, metric, codec): any key of the collection
    MANAGE = "manage"  # collections, tenants, indexes, stats: never a tenant-pinned key


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A stored key's public part: prefix, scope and creation time (seconds since the epoch)."""

    prefix: str
    role: str
    collection: str
    tenant: str | None
    created: float

    def covers(self, collection: str) -> bool:
        """True if the key's scope includes ``collection``."""
        return self.role == "admin" or self.collection in (ALL, collection)

    def require(self, need: str, collection: str | None, access: Access, tenant: str | None = None) -> None:
        """Raise Forbidden unless the key may do a ``need`` ("read" | "write" | "admin") request.

        ``collection`` None means a request about the database (list collections);
        ``tenant`` is the tenant a DATA request names.
        """
        if self.role == "admin":
            return
        if need == "admin":
            raise Forbidden(f"key {self.prefix} is not an admin key")
        if collection is not None and not self.covers(collection):
            raise Forbidden(f"key {self.prefix} has no access to collection {collection!r}")
        if need == "write" and self.role != "write":
            raise Forbidden(f"key {self.prefix} is read-only")
        if self.tenant is None or access is Access.DESCRIBE:
            return
        if access is Access.MANAGE:
            raise Forbidden(f"key {self.prefix} is pinned to tenant {self.tenant!r}: it can only read and write "
                            "that tenant's records")
        if tenant != self.tenant:
            raise Forbidden(f"key {self.prefix} is pinned to tenant {self.tenant!r}; the request names "
                            f"{'no tenant' if tenant is None else repr(tenant)}")


class KeyStore:
    """The API keys of one database folder. Safe to share between threads; other processes' changes
    (``vecpack keys revoke``) are seen by the next lookup."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        self.path = Path(folder) / KEYS_FILE
        self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30.0)
        self._lock = threading.Lock()
        with self._lock:
            self._conn.execute(_SCHEMA)

    def create(self, role: str, collection: str = ALL, tenant: str | None = None) -> str:
        """Store a new key and return it: the only time the secret is available."""
        if role not in ROLES:
            raise InvalidInput(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        if collection != ALL:
            collection = validate.collection_name(collection)
        if tenant is not None:
            tenant = validate.tenant_name(tenant)
        if role == "admin" and (collection != ALL or tenant is not None):
            raise InvalidInput("an admin key covers every collection and tenant: give no collection or tenant")
        prefix = secrets.token_hex(4)
        key = f"vpk_{prefix}_{secrets.token_urlsafe(32)}"
        with self._lock:
            self._conn.execute("INSERT INTO keys VALUES (?, ?, ?, ?, ?, ?)",
                               (prefix, _digest(key), role, collection, tenant, time.time()))
        return key

    def list(self) -> list[ApiKey]:
        """Every key's public part, oldest first."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT prefix, role, collection, tenant, created FROM keys ORDER BY created").fetchall()
        return [ApiKey(*row) for row in rows]

    def revoke(self, prefix: str) -> None:
        """Delete the key with this prefix; NotFound if there is none."""
        with self._lock:
            if self._conn.execute("DELETE FROM keys WHERE prefix = ?", (prefix,)).rowcount == 0:
                raise NotFound(f"no API key with prefix {prefix!r}")

    def verify(self, key: str) -> ApiKey | None:
        """The stored key matching ``key``, or None (unknown, revoked or malformed)."""
        match = _KEY.fullmatch(key)
        if match is None:
            return None
        with self._lock:
            row = self._conn.execute("SELECT hash, role, collection, tenant, created FROM keys WHERE prefix = ?",
                                     (match[1],)).fetchone()
        if row is None or not hmac.compare_digest(row[0], _digest(key)):
            return None
        return ApiKey(match[1], *row[1:])

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> KeyStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()
