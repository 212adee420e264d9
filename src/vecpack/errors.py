"""One exception hierarchy for every vecpack failure.

Each class also inherits the natural builtin, so ``except ValueError`` keeps
working for callers who do not know vecpack's types.
"""

from __future__ import annotations


class VecpackError(Exception):
    """Base class of every error vecpack raises on purpose."""


class InvalidInput(VecpackError, ValueError):
    """An argument is malformed: wrong shape, NaN, bad id, non-JSON metadata, ..."""


class DimensionMismatch(InvalidInput):
    """A vector's length differs from the collection's dimension."""


class UnknownSpec(InvalidInput):
    """A codec spec or metric name that vecpack does not know."""


class NotFound(VecpackError, KeyError):
    """A collection or record id that does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class Conflict(VecpackError):
    """The request collides with existing state (duplicate id, existing collection)."""


class CorruptData(VecpackError, OSError):
    """A file on disk is truncated, has a bad checksum or an unknown format."""


class ClosedError(VecpackError, RuntimeError):
    """The database or collection was closed."""


class FilterWarning(UserWarning):
    """A filter matched no record, likely by mistake: a field no record has, or values of another type."""


class PayloadTooLarge(InvalidInput):
    """A request exceeds a server limit on its size (HTTP 413)."""


class Unauthorized(VecpackError, PermissionError):
    """No API key, or an unknown or revoked one (HTTP 401)."""


class Forbidden(VecpackError, PermissionError):
    """The API key's scope does not allow the request (HTTP 403)."""


class StorageError(VecpackError, OSError):
    """The disk refused a write or a read (full, I/O error): nothing of the failed call was written."""


class ConnectionFailed(VecpackError, ConnectionError):
    """The server could not be reached, or dropped the connection before answering (client only)."""
