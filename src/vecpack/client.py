"""A Python client for ``vecpack serve`` with the embedded API: switch by changing one line::

    db = vecpack.connect("my.db")
    db = vecpack.Client("http://127.0.0.1:8000", api_key="vpk_...")   # the same calls, over HTTP
    db.get_collection("docs").search(q, k=10, where={"year": 2020})   # -> [Hit, ...]

Arguments are checked here with the embedded checks (``vecpack.validate``), so a bad call raises the
same exception with the same message without a round trip; server errors map back to the same classes
(``InvalidInput``, ``NotFound``, ``Conflict``, ``StorageError``, ...) plus ``Unauthorized`` / ``Forbidden``;
a failed connection raises ``ConnectionFailed``. Reads (get, search, count, explain, describe, list, stats,
verify, tuning-report) are sent again once when the connection was reset or closed before the answer; writes
are not, since the server may have applied them. Batches of at least ``BINARY_MIN_FLOATS`` values, and any
whose JSON body would exceed the server's JSON limit (``GET /limits``), travel as a binary float32 body
(``vecpack.server.app``). Needs the server extra (httpx).
"""

from __future__ import annotations

import json
import os
from typing import Any
from urllib.parse import quote

import httpx
import numpy as np

from vecpack import validate
from vecpack.collection import DEFAULT_SEAL_ROWS
from vecpack.errors import (
    ClosedError,
    Conflict,
    ConnectionFailed,
    CorruptData,
    DimensionMismatch,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StorageError,
    Unauthorized,
    UnknownSpec,
    VecpackError,
)
from vecpack.query.execute import Hit, Record

#: vector batches with at least this many float32 values are sent as a binary body
BINARY_MIN_FLOATS = 4096
#: the JSON limit assumed of a server that does not publish its limits (``vecpack.server.Limits`` default)
DEFAULT_MAX_JSON_BYTES = 4 << 20
_ERRORS: dict[str, type[VecpackError]] = {
    cls.__name__: cls for cls in (InvalidInput, DimensionMismatch, UnknownSpec, PayloadTooLarge, NotFound, Conflict,
                                  CorruptData, ClosedError, Unauthorized, Forbidden, StorageError)
}
_BY_STATUS: dict[int, type[VecpackError]] = {401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict,
                                              413: PayloadTooLarge, 422: InvalidInput, 507: StorageError}
#: what a connection the server (or a proxy) reset or closed before answering raises: a read is sent again once
_DROPPED = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


class Client:
    """A remote database: the methods of ``vecpack.Database`` over HTTP.

    Parameters
    ----------
    url : the server, e.g. "http://127.0.0.1:8000".
    api_key : sent as ``Authorization: Bearer``; default ``$VECPACK_API_KEY``.
    timeout : seconds per request (optimize on a large collection can take minutes).
    transport : an ``httpx`` transport to send requests through (custom TLS or proxies, or a mock in tests).
    """

    def __init__(self, url: str = "http://127.0.0.1:8000", api_key: str | None = None, *,
                 timeout: float = 300.0, transport: httpx.BaseTransport | None = None) -> None:
        api_key = api_key if api_key is not None else os.environ.get("VECPACK_API_KEY")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, transport=transport)
        self._limits: dict[str, int] | None = None

    def request(self, method: str, path: str, body: Any = None, *, content: bytes | None = None,
                binary: bool = False, idempotent: bool | None = None) -> Any:
        """One call: JSON ``body`` (or ``content``: JSON text, or a binary body when ``binary``) in, the decoded
        JSON out; errors raised as vecpack's. ``idempotent`` (default: GET requests) calls are sent again once
        if the connection drops before the answer."""
        if content is None:
            content = _json_bytes(body) if body is not None else None
        kind = "application/octet-stream" if binary else "application/json"
        headers = {"Content-Type": kind} if content is not None else None
        retry = method == "GET" if idempotent is None else idempotent
        for attempt in (1, 2):
            try:
                response = self._http.request(method, path, content=content, headers=headers)
                break
            except _DROPPED as exc:
                if retry and attempt == 1:
                    continue
                raise _failed(f"{method} {self.url}{path}", exc, retry) from exc
            except httpx.TransportError as exc:
                raise _failed(f"{method} {self.url}{path}", exc, retry) from exc
        if response.is_error:
            raise _error(response)
        return response.json()

    def limits(self) -> dict[str, int]:
        """The server's request limits (``vecpack.server.Limits``), asked once per client."""
        if self._limits is None:
            try:
                self._limits = self.request("GET", "/limits")
            except NotFound:  # a server from before GET /limits
                self._limits = {"max_json_bytes": DEFAULT_MAX_JSON_BYTES}
        return self._limits

    def create_collection(
        self, name: str, dim: int, metric: str = "cosine", codec: str = "int8", *,
        seal_rows: int = DEFAULT_SEAL_ROWS, index: str = "flat", index_params: dict[str, Any] | None = None,
        memory_budget: int | str | None = None, bytes_per_vector: int | str | None = None,
        target_recall: float = 0.95, sample_queries: Any = None, multi_tenant: bool = False, exist_ok: bool = False,
    ) -> RemoteCollection:
        """``Database.create_collection`` on the server (needs admin or write on the collection)."""
        if sample_queries is not None:
            sample_queries = validate.vectors(sample_queries, validate.dimension(dim)).tolist()
        body = {"name": name, "dim": dim, "metric": metric, "codec": codec, "seal_rows": seal_rows, "index": index,
                "index_params": index_params, "memory_budget": memory_budget, "bytes_per_vector": bytes_per_vector,
                "target_recall": target_recall, "sample_queries": sample_queries, "multi_tenant": multi_tenant,
                "exist_ok": exist_ok}
        return RemoteCollection(self, self.request("POST", "/collections", body))

    def get_collection(self, name: str) -> RemoteCollection:
        """The collection ``name``; raises NotFound if it does not exist."""
        return RemoteCollection(self, self.request("GET", f"/collections/{validate.collection_name(name)}"))

    def list_collections(self) -> list[str]:
        """Names of the collections the key covers, sorted."""
        return self.request("GET", "/collections")["collections"]

    def drop_collection(self, name: str) -> None:
        """Delete a collection and its files; raises NotFound if it does not exist."""
        self.request("DELETE", f"/collections/{validate.collection_name(name)}")

    def health(self) -> dict[str, Any]:
        return self.request("GET", "/health")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"


class RemoteCollection:
    """A collection on a server, with the methods (and return types) of ``vecpack.Collection``."""

    def __init__(self, client: Client, info: dict[str, Any]) -> None:
        self._client = client
        self.name: str = info["name"]
        self.dim: int = info["dim"]
        self.metric: str = info["metric"]
        self.index_kind: str = info["index"]
        self.multi_tenant: bool = info["multi_tenant"]
        self._path = f"/collections/{self.name}"

    def _call(self, method: str, action: str, body: Any = None, *, content: bytes | None = None,
              binary: bool = False, idempotent: bool | None = None) -> Any:
        return self._client.request(method, f"{self._path}/{action}" if action else self._path, body,
                                    content=content, binary=binary, idempotent=idempotent)

    def _send(self, action: str, field: str, x: np.ndarray, shape: list[int], body: dict[str, Any], *,
              idempotent: bool = False) -> Any:
        """POST ``body`` plus the float32 array ``x`` as ``field``: JSON for small batches, else binary (the
        binary body costs the server its size; JSON many times its size, so the server caps it)."""
        if x.size < BINARY_MIN_FLOATS:
            text = _json_bytes({**body, field: x.reshape(shape).tolist()})
            if len(text) <= self._client.limits()["max_json_bytes"]:
                return self._call("POST", action, content=text, idempotent=idempotent)
        header = _json_bytes({**body, "shape": shape})
        header += b" " * (-(4 + len(header)) % 4)  # the floats start 4-byte aligned: read in place
        content = len(header).to_bytes(4, "little") + header + x.astype("<f4").tobytes()
        return self._call("POST", action, content=content, binary=True, idempotent=idempotent)

    # -- writes
    def add(self, ids: Any, vectors: Any, metadata: Any = None, *, tenant: str | None = None) -> None:
        """Insert new records (``Collection.add``); Conflict (adding nothing) if any id exists."""
        self._write("add", ids, vectors, metadata, tenant)

    def upsert(self, ids: Any, vectors: Any, metadata: Any = None, *, tenant: str | None = None) -> None:
        """Insert records, replacing the vector and metadata of ids that already exist."""
        self._write("upsert", ids, vectors, metadata, tenant)

    def _write(self, action: str, ids: Any, vectors: Any, metadata: Any, tenant: str | None) -> None:
        ids = validate.ids(ids)
        x = validate.vectors(vectors, self.dim, len(ids), metric=self.metric)
        validate.metadata(metadata, len(ids))
        self._send(action, "vectors", x, list(x.shape), {"ids": ids, "metadata": metadata, "tenant": tenant})

    def delete(self, ids: Any = None, *, where: dict[str, Any] | None = None, tenant: str | None = None,
               delete_all: bool = False) -> int:
        """Delete records by id and/or filter, or every record (of the tenant) with ``delete_all``; returns how
        many were deleted (NotFound for an unknown id)."""
        ids = validate.ids(ids) if ids is not None else None
        body: dict[str, Any] = {"ids": ids, "where": where, "tenant": tenant}
        if delete_all:  # only when set: servers from before delete_all refuse the unknown field
            body["delete_all"] = True
        return self._call("POST", "delete", body)["deleted"]

    def optimize(self, *, compact: bool | None = None) -> None:
        """Seal growing rows, bring the index up to date, compact (``Collection.optimize``)."""
        self._call("POST", "optimize", {"compact": compact})

    def retune(self, *, memory_budget: int | str | None = None, bytes_per_vector: int | str | None = None,
               target_recall: float | None = None) -> dict[str, Any]:
        """Choose the codec again (``Collection.retune``); returns the report."""
        return self._call("POST", "retune", {"memory_budget": memory_budget, "bytes_per_vector": bytes_per_vector,
                                             "target_recall": target_recall})

    # -- reads
    def search(
        self, q: Any, k: int = 10, *, where: dict[str, Any] | list[dict[str, Any] | None] | None = None,
        rerank: int | None = None, ef: int | None = None, nprobe: int | None = None, tenant: str | None = None,
        plan: str | None = None,
    ) -> list[Hit] | list[list[Hit]]:
        """Nearest records, best first: a list of Hit for a (dim,) query, one list per query for (m, dim)."""
        q, single = validate.queries(q, self.dim, metric=self.metric)
        body = {"k": k, "where": where, "rerank": rerank, "ef": ef, "nprobe": nprobe, "tenant": tenant, "plan": plan}
        hits = self._send("search", "q", q, [self.dim] if single else list(q.shape), body, idempotent=True)["hits"]
        if single:
            return [Hit(**h) for h in hits]
        return [[Hit(**h) for h in row] for row in hits]

    def get(
        self, ids: Any = None, *, where: dict[str, Any] | None = None, limit: int | None = None, offset: int = 0,
        tenant: str | None = None,
    ) -> list[Record]:
        """Records by id (in order; NotFound if any is unknown) and/or filter (insertion order), paged."""
        ids = validate.ids(ids, unique=False) if ids is not None else None
        body = {"ids": ids, "where": where, "limit": limit, "offset": offset, "tenant": tenant}
        return [Record(r["id"], np.array(r["vector"], dtype=np.float32), r["metadata"])
                for r in self._call("POST", "get", body, idempotent=True)["records"]]

    def count(self, where: dict[str, Any] | None = None, *, tenant: str | None = None) -> int:
        """Live records (of the tenant), or those passing ``where``."""
        return self._call("POST", "count", {"where": where, "tenant": tenant}, idempotent=True)["count"]

    def explain(
        self, k: int = 10, *, where: dict[str, Any] | None = None, ef: int | None = None, nprobe: int | None = None,
        tenant: str | None = None, plan: str | None = None,
    ) -> dict[str, Any]:
        """How ``search`` would run: the plan, matching rows, selectivity, why."""
        body = {"k": k, "where": where, "ef": ef, "nprobe": nprobe, "tenant": tenant, "plan": plan}
        return self._call("POST", "explain", body, idempotent=True)

    def stats(self) -> dict[str, Any]:
        """Counts and sizes (``Collection.stats``)."""
        return self._call("GET", "stats")

    def tuning_report(self) -> dict[str, Any] | None:
        return self._call("GET", "tuning-report")

    def verify(self) -> None:
        """Check every checksum on the server; raises CorruptData on a mismatch."""
        self._call("POST", "verify", idempotent=True)

    def __len__(self) -> int:
        """Live records over every tenant (from ``stats``: not for tenant-pinned keys)."""
        return self.stats()["n"]

    def __contains__(self, id: object) -> bool:
        """True if a record with this id exists (not for multi-tenant collections: use get)."""
        try:
            self.get([validate.ids([id])[0]])
        except NotFound:
            return False
        return True

    # -- field indexes
    def create_field_index(self, field: str) -> None:
        """Index a metadata field so filters on it cost milliseconds."""
        self._call("POST", "field-indexes", {"field": field})

    def drop_field_index(self, field: str) -> None:
        """Remove a field index; NotFound if there is none on ``field``."""
        self._call("DELETE", f"field-indexes/{quote(field, safe='')}")

    def field_indexes(self) -> list[str]:
        return self._call("GET", "field-indexes")["fields"]

    # -- tenants
    def create_tenant(self, name: str) -> None:
        """Register a tenant; Conflict if it exists."""
        self._call("POST", "tenants", {"name": name})

    def drop_tenant(self, name: str) -> int:
        """Delete a tenant and all its records; returns how many records went."""
        return self._call("DELETE", f"tenants/{validate.tenant_name(name)}")["deleted"]

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant: ``{"name": ..., "active": bool}``, by name."""
        return self._call("GET", "tenants")["tenants"]

    def activate_tenant(self, name: str) -> None:
        self._call("POST", f"tenants/{validate.tenant_name(name)}/activate")

    def deactivate_tenant(self, name: str) -> None:
        """Offload a tenant (``Collection.deactivate_tenant``)."""
        self._call("POST", f"tenants/{validate.tenant_name(name)}/deactivate")

    def __repr__(self) -> str:
        return f"RemoteCollection({self.name!r}, dim={self.dim}, metric={self.metric!r}, url={self._client.url!r})"


def _json_bytes(body: Any) -> bytes:
    """``body`` as compact UTF-8 JSON, as httpx would send it."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _failed(call: str, exc: httpx.TransportError, idempotent: bool) -> ConnectionFailed:
    """The ConnectionFailed for ``call`` ("METHOD url") that got no answer, saying whether it may have taken effect."""
    what = f"{call}: {type(exc).__name__}: {exc or 'no detail'}"
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
        return ConnectionFailed(f"cannot reach the server ({what})")
    if isinstance(exc, _DROPPED) and idempotent:
        return ConnectionFailed(f"the connection dropped twice before the server answered ({what})")
    if not idempotent:
        return ConnectionFailed(f"no answer from the server ({what}); it may or may not have applied the call")
    return ConnectionFailed(f"no answer from the server ({what})")


def _error(response: httpx.Response) -> VecpackError:
    """The vecpack exception for an error response (by the body's class name, else by status)."""
    try:
        body = response.json()
        name, detail = body["error"], body["detail"]
    except (ValueError, KeyError, TypeError):
        name, detail = None, response.text or response.reason_phrase
    cls = _ERRORS.get(name) or _BY_STATUS.get(response.status_code, VecpackError)
    if cls is VecpackError:
        detail = f"HTTP {response.status_code} {name or ''}: {detail}"
    return cls(detail)
