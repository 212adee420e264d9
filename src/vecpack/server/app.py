"""The HTTP API: one FastAPI app serving the collections of one database folder.

Endpoints (JSON in and out; OpenAPI at ``/docs``). ``{name}`` is a collection:

- ``GET /health`` (no key), ``GET /metrics`` (Prometheus text; admin key)
- ``GET /collections``, ``POST /collections`` (create), ``GET /collections/{name}`` (dim, metric, index,
  multi_tenant), ``DELETE /collections/{name}``, ``GET /collections/{name}/stats``
- ``POST /collections/{name}/`` ``add | upsert | delete | get | search | count | explain | optimize |
  retune | verify``, ``GET /collections/{name}/tuning-report``
- ``GET | POST /collections/{name}/field-indexes``, ``DELETE /collections/{name}/field-indexes/{field}``
- ``GET | POST /collections/{name}/tenants``, ``DELETE /collections/{name}/tenants/{tenant}``,
  ``POST /collections/{name}/tenants/{tenant}/activate | deactivate``

Request bodies carry the keyword arguments of the ``Collection`` method of the same name (``tenant``
included); errors come back as ``{"error": <vecpack exception class>, "detail": <message>}`` with
status 422 (InvalidInput and subclasses), 404 (NotFound), 409 (Conflict), 413 (PayloadTooLarge),
401 (Unauthorized), 403 (Forbidden), 500 (CorruptData) or 503 (ClosedError).

Binary vectors (add, upsert, search): ``Content-Type: application/octet-stream`` and the body

    uint32 little-endian J | J bytes of UTF-8 JSON | float32 little-endian values, row-major

The JSON is the request's other fields plus ``"shape"``: ``[n, dim]`` for ``vectors`` (add, upsert),
``[dim]`` (one query, answered with a flat list of hits) or ``[m, dim]`` for ``q`` (search). Pad the
JSON with spaces so that 4 + J is a multiple of 4 and the values are read in place, without a copy.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send
from threadpoolctl import threadpool_limits

import vecpack
from vecpack import validate
from vecpack.collection import DEFAULT_SEAL_ROWS, Collection
from vecpack.errors import (
    ClosedError,
    Conflict,
    CorruptData,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
    VecpackError,
)
from vecpack.server.auth import Access, ApiKey, KeyStore
from vecpack.server.metrics import Metrics, MetricsMiddleware

BINARY = "application/octet-stream"
#: status of each vecpack error, most specific first
STATUS: tuple[tuple[type[VecpackError], int], ...] = (
    (PayloadTooLarge, 413), (InvalidInput, 422), (NotFound, 404), (Conflict, 409), (Unauthorized, 401),
    (Forbidden, 403), (CorruptData, 500), (ClosedError, 503),
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may ask for; larger requests get 413 (bytes) or 422 (counts) with the limit named."""

    max_body_bytes: int = 64 << 20
    max_batch: int = 100_000  # ids or vectors per add / upsert / delete / get
    max_queries: int = 1_000  # queries per search
    max_k: int = 1_000


@dataclass(slots=True)
class ServerState:
    """What every request reaches through ``app.state.vecpack``."""

    db: vecpack.Database
    keys: KeyStore | None  # None: auth disabled
    limits: Limits
    metrics: Metrics = field(default_factory=Metrics)


# -- request and response bodies ------------------------------------------------------------------------------------
class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


Ids = list[str | int]
Where = dict[str, Any]


class CreateCollectionBody(_Body):
    name: str
    dim: int
    metric: str = "cosine"
    codec: str = "int8"
    seal_rows: int = DEFAULT_SEAL_ROWS
    index: str = "flat"
    index_params: dict[str, Any] | None = None
    memory_budget: int | str | None = None
    bytes_per_vector: int | str | None = None
    target_recall: float = 0.95
    sample_queries: list[list[float]] | None = None
    multi_tenant: bool = False
    exist_ok: bool = False


class WriteBody(_Body):
    ids: Ids
    vectors: list[list[float]] | None = None  # None: in the binary block
    metadata: list[dict[str, Any] | None] | None = None
    tenant: str | None = None


class DeleteBody(_Body):
    ids: Ids | None = None
    where: Where | None = None
    tenant: str | None = None


class GetBody(_Body):
    ids: Ids | None = None
    where: Where | None = None
    limit: int | None = None
    offset: int = 0
    tenant: str | None = None


class SearchBody(_Body):
    q: list[float] | list[list[float]] | None = None  # None: in the binary block
    k: int = 10
    where: Where | list[Where | None] | None = None
    rerank: int | None = None
    ef: int | None = None
    nprobe: int | None = None
    tenant: str | None = None


class CountBody(_Body):
    where: Where | None = None
    tenant: str | None = None


class ExplainBody(_Body):
    k: int = 10
    where: Where | None = None
    ef: int | None = None
    nprobe: int | None = None
    tenant: str | None = None


class OptimizeBody(_Body):
    compact: bool | None = None


class RetuneBody(_Body):
    memory_budget: int | str | None = None
    bytes_per_vector: int | str | None = None
    target_recall: float | None = None


class FieldBody(_Body):
    field: str


class TenantBody(_Body):
    name: str


class CollectionInfo(BaseModel):
    name: str
    dim: int
    metric: str
    index: str
    multi_tenant: bool


class HitOut(BaseModel):
    id: str
    score: float
    metadata: dict[str, Any] | None


class RecordOut(BaseModel):
    id: str
    vector: list[float]
    metadata: dict[str, Any] | None


class SearchOut(BaseModel):
    hits: list[HitOut] | list[list[HitOut]]


class RecordsOut(BaseModel):
    records: list[RecordOut]


class TenantOut(BaseModel):
    name: str
    active: bool


BODIES: tuple[type[_Body], ...] = (CreateCollectionBody, WriteBody, DeleteBody, GetBody, SearchBody, CountBody,
                                   ExplainBody, OptimizeBody, RetuneBody, FieldBody, TenantBody)
B = TypeVar("B", bound=_Body)


# -- request parsing ------------------------------------------------------------------------------------------------
def _body(model: type[B], vectors: str | None = None) -> Any:
    """A dependency reading the request body into ``model``, or ``(model, vectors)`` where ``vectors`` names the
    model's vector field (add/upsert: "vectors", search: "q"): those endpoints also take the binary format,
    whose float block comes back as a float32 array (else the JSON list)."""

    async def parse(request: Request) -> B | tuple[B, Any]:
        raw = await request.body()
        if request.headers.get("content-type", "").split(";")[0].strip().lower() == BINARY:
            if vectors is None:
                raise InvalidInput(f"{request.url.path} takes JSON, not {BINARY}")
            return _binary(raw, model, vectors)
        body = model.model_validate_json(raw or b"{}")
        if vectors is None:
            return body
        x = getattr(body, vectors)
        if x is None:
            raise InvalidInput(f"{vectors} missing: send it in the JSON body or as a binary {BINARY} body")
        return body, x

    return Depends(parse)


def _binary(raw: bytes, model: type[B], vectors: str) -> tuple[B, np.ndarray]:
    """Split a binary body (module docstring) into the validated JSON part and the float32 array."""
    if len(raw) < 4:
        raise InvalidInput("binary body: missing the 4-byte JSON length")
    start = 4 + int.from_bytes(raw[:4], "little")
    if start > len(raw):
        raise InvalidInput(f"binary body: JSON length {start - 4} exceeds the body ({len(raw)} bytes)")
    try:
        header = json.loads(raw[4:start])
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"binary body: the JSON part is malformed: {exc}") from exc
    if not isinstance(header, dict):
        raise InvalidInput("binary body: the JSON part must be an object")
    shape = header.pop("shape", None)
    if (not isinstance(shape, list) or len(shape) not in (1, 2)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise InvalidInput(f"binary body: shape must be [dim] or [n, dim] of positive ints, got {shape!r}")
    if vectors in header:
        raise InvalidInput(f"binary body: {vectors} belongs in the float32 block, not in the JSON part")
    body = model.model_validate(header)
    size = math.prod(shape)
    if len(raw) - start != 4 * size:
        raise InvalidInput(f"binary body: shape {shape} needs {4 * size} bytes of float32, got {len(raw) - start}")
    x = np.frombuffer(raw, dtype="<f4", count=size, offset=start).reshape(shape)
    return body, (x if start % 4 == 0 else x.copy())


CreateIn = Annotated[CreateCollectionBody, _body(CreateCollectionBody)]
WriteIn = Annotated[tuple[WriteBody, Any], _body(WriteBody, "vectors")]
SearchIn = Annotated[tuple[SearchBody, Any], _body(SearchBody, "q")]
DeleteIn = Annotated[DeleteBody, _body(DeleteBody)]
GetIn = Annotated[GetBody, _body(GetBody)]
CountIn = Annotated[CountBody, _body(CountBody)]
ExplainIn = Annotated[ExplainBody, _body(ExplainBody)]
OptimizeIn = Annotated[OptimizeBody, _body(OptimizeBody)]
RetuneIn = Annotated[RetuneBody, _body(RetuneBody)]
FieldIn = Annotated[FieldBody, _body(FieldBody)]
TenantIn = Annotated[TenantBody, _body(TenantBody)]


# -- authentication and access --------------------------------------------------------------------------------------
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key: <key>`")


@dataclass(frozen=True, slots=True)
class Caller:
    """The server state and the request's API key (None when auth is disabled)."""

    state: ServerState
    key: ApiKey | None

    def require(self, need: str, name: str | None = None, access: Access = Access.MANAGE,
                tenant: str | None = None) -> None:
        """Forbidden unless the key allows the request (``ApiKey.require``)."""
        if self.key is not None:
            self.key.require(need, name, access, tenant)

    def collection(self, name: str, need: str, access: Access, tenant: str | None = None) -> Collection:
        """The collection ``name`` after checking the name (no path escapes the folder) and the key's scope."""
        name = validate.collection_name(name)
        self.require(need, name, access, tenant)
        return self.state.db.get_collection(name)

    def check_batch(self, n: int, what: str = "records") -> None:
        if n > self.state.limits.max_batch:
            raise InvalidInput(f"{n} {what} in one call exceeds the server's limit of {self.state.limits.max_batch}")

    def check_queries(self, m: int) -> None:
        if m > self.state.limits.max_queries:
            raise InvalidInput(f"{m} queries in one call exceed the server's limit of {self.state.limits.max_queries}")

    def check_k(self, k: int) -> None:
        if k > self.state.limits.max_k:
            raise InvalidInput(f"k={k} exceeds the server's limit of {self.state.limits.max_k}")


async def _caller(  # async: a key lookup is one indexed SQLite read, cheaper than a hop to the thread pool
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)],
    header: Annotated[str | None, Security(_header)],
) -> Caller:
    state: ServerState = request.app.state.vecpack
    if state.keys is None:
        return Caller(state, None)
    secret = bearer.credentials if bearer is not None else header
    if not secret:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    key = state.keys.verify(secret)
    if key is None:
        raise Unauthorized("unknown or revoked API key")
    return Caller(state, key)


Auth = Annotated[Caller, Depends(_caller)]


def _n_queries(q: np.ndarray | list[Any]) -> int:
    """Queries in a search's q: a (dim,) or (m, dim) array (binary) or JSON list."""
    if isinstance(q, np.ndarray):
        return q.shape[0] if q.ndim == 2 else 1
    return len(q) if q and isinstance(q[0], list) else 1


def _info(col: Collection) -> dict[str, Any]:
    return {"name": col.name, "dim": col.dim, "metric": col.metric, "index": col.index_kind,
            "multi_tenant": col.multi_tenant}


def _hits(hits: list[vecpack.Hit]) -> list[dict[str, Any]]:
    return [{"id": h.id, "score": h.score, "metadata": h.metadata} for h in hits]


def _request_doc(model: type[_Body], binary: bool = False) -> dict[str, Any]:
    """openapi_extra documenting a body parsed by ``_body`` (JSON, and binary where ``binary``)."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if binary:
        content[BINARY] = {"schema": {"type": "string", "format": "binary"}}
    doc = {"required": any(f.is_required() for f in model.model_fields.values()), "content": content}
    if binary:
        doc["description"] = "JSON, or the vectors as a binary body (see the API description)"
    return {"requestBody": doc}


# -- the app --------------------------------------------------------------------------------------------------------
def create_app(
    path: str | os.PathLike[str], *, limits: Limits = Limits(), auth: bool = True, memory_map: bool = False
) -> FastAPI:
    """A FastAPI app serving the database folder ``path`` (created if missing).

    ``auth`` True: every endpoint but ``/health`` needs an API key of ``<path>/.vecpack-keys.sqlite``
    (``vecpack keys create``). ``memory_map`` as in ``vecpack.connect``. The database is opened now and
    closed when the app shuts down.
    """
    state = ServerState(vecpack.connect(path, memory_map=memory_map), KeyStore(path) if auth else None, limits)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests run concurrently, each on one core: a multi-threaded BLAS call per request (the
        # growing segment's GEMM) only makes them fight over the cores. Measured embedded, 16 threads
        # on 2 cores: 193 searches/s and p99 1.1 s with OpenBLAS's threads, 728/s and p99 14 ms without.
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        state.db.close()
        if state.keys is not None:
            state.keys.close()

    app = FastAPI(title="vecpack", version=vecpack.__version__, description=__doc__, lifespan=lifespan)
    app.state.vecpack = state
    _routes(app)
    _error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.openapi = _with_body_schemas(app)  # type: ignore[method-assign]
    return app


def _with_body_schemas(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """app.openapi that also lists the request models (bodies are parsed by ``_body``, not by FastAPI)."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, defs = models_json_schema([(m, "validation") for m in BODIES],
                                         ref_template="#/components/schemas/{model}")
            schema.setdefault("components", {}).setdefault("schemas", {}).update(defs["$defs"])
        return app.openapi_schema

    return openapi


def _routes(app: FastAPI) -> None:
    @app.get("/health", tags=["server"])
    def health() -> dict[str, str]:
        """Liveness: no key needed."""
        return {"status": "ok"}

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse)
    def metrics(caller: Auth) -> str:
        """Prometheus text: requests by route and status, latency histograms, records per collection."""
        caller.require("admin")
        db = caller.state.db
        return caller.state.metrics.render((n, len(db.get_collection(n))) for n in db.list_collections())

    # -- collections
    @app.get("/collections", tags=["collections"])
    def list_collections(caller: Auth) -> dict[str, list[str]]:
        """The collections the key covers."""
        caller.require("read")
        names = caller.state.db.list_collections()
        return {"collections": [n for n in names if caller.key is None or caller.key.covers(n)]}

    @app.post("/collections", tags=["collections"], status_code=201, openapi_extra=_request_doc(CreateCollectionBody))
    def create_collection(caller: Auth, body: CreateIn) -> CollectionInfo:
        """``Database.create_collection``; needs admin or write on the collection (not tenant-pinned)."""
        name = validate.collection_name(body.name)
        caller.require("write", name)
        col = caller.state.db.create_collection(**body.model_dump())
        return CollectionInfo(**_info(col))

    @app.get("/collections/{name}", tags=["collections"])
    def describe(caller: Auth, name: str) -> CollectionInfo:
        """Name, dim, metric, index and multi_tenant: what a client needs; any key of the collection."""
        return CollectionInfo(**_info(caller.collection(name, "read", Access.DESCRIBE)))

    @app.delete("/collections/{name}", tags=["collections"])
    def drop_collection(caller: Auth, name: str) -> dict[str, str]:
        name = validate.collection_name(name)
        caller.require("write", name)
        caller.state.db.drop_collection(name)
        return {"dropped": name}

    @app.get("/collections/{name}/stats", tags=["collections"])
    def stats(caller: Auth, name: str) -> dict[str, Any]:
        """``Collection.stats``: counts over every tenant, so not for tenant-pinned keys."""
        return caller.collection(name, "read", Access.MANAGE).stats()

    # -- records
    @app.post("/collections/{name}/add", tags=["records"], openapi_extra=_request_doc(WriteBody, binary=True))
    def add(caller: Auth, name: str, body_x: WriteIn) -> dict[str, int]:
        body, x = body_x
        col = caller.collection(name, "write", Access.DATA, body.tenant)
        caller.check_batch(len(body.ids))
        col.add(body.ids, x, body.metadata, tenant=body.tenant)
        return {"added": len(body.ids)}

    @app.post("/collections/{name}/upsert", tags=["records"], openapi_extra=_request_doc(WriteBody, binary=True))
    def upsert(caller: Auth, name: str, body_x: WriteIn) -> dict[str, int]:
        body, x = body_x
        col = caller.collection(name, "write", Access.DATA, body.tenant)
        caller.check_batch(len(body.ids))
        col.upsert(body.ids, x, body.metadata, tenant=body.tenant)
        return {"upserted": len(body.ids)}

    @app.post("/collections/{name}/delete", tags=["records"], openapi_extra=_request_doc(DeleteBody))
    def delete(caller: Auth, name: str, body: DeleteIn) -> dict[str, int]:
        col = caller.collection(name, "write", Access.DATA, body.tenant)
        caller.check_batch(len(body.ids or ()))
        return {"deleted": col.delete(body.ids, where=body.where, tenant=body.tenant)}

    @app.post("/collections/{name}/get", tags=["records"], openapi_extra=_request_doc(GetBody))
    def get(caller: Auth, name: str, body: GetIn) -> RecordsOut:
        """``Collection.get``; at most ``Limits.max_batch`` records per call (page with limit / offset)."""
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        cap = caller.state.limits.max_batch
        caller.check_batch(len(body.ids or ()), "ids")
        caller.check_batch(body.limit or 0, "records (limit)")
        limit = body.limit if body.limit is not None else cap + 1
        records = col.get(body.ids, where=body.where, limit=limit, offset=body.offset,
                          tenant=body.tenant)
        if len(records) > cap:
            raise InvalidInput(f"more than {cap} records match, the server's limit per call: page with limit and "
                               "offset")
        return RecordsOut(records=[RecordOut(id=r.id, vector=r.vector.tolist(), metadata=r.metadata)
                                   for r in records])

    @app.post("/collections/{name}/search", tags=["records"], openapi_extra=_request_doc(SearchBody, binary=True))
    def search(caller: Auth, name: str, body_x: SearchIn) -> SearchOut:
        """``Collection.search``: q of shape (dim,) gives a list of hits, (m, dim) a list per query."""
        body, q = body_x
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        caller.check_k(body.k)
        caller.check_queries(_n_queries(q))
        found = col.search(q, body.k, where=body.where, rerank=body.rerank, ef=body.ef, nprobe=body.nprobe,
                           tenant=body.tenant)
        if found and isinstance(found[0], list):
            return SearchOut(hits=[_hits(row) for row in found])
        return SearchOut(hits=_hits(found))

    @app.post("/collections/{name}/count", tags=["records"], openapi_extra=_request_doc(CountBody))
    def count(caller: Auth, name: str, body: CountIn) -> dict[str, int]:
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        return {"count": col.count(body.where, tenant=body.tenant)}

    @app.post("/collections/{name}/explain", tags=["records"], openapi_extra=_request_doc(ExplainBody))
    def explain(caller: Auth, name: str, body: ExplainIn) -> dict[str, Any]:
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        caller.check_k(body.k)
        return col.explain(body.k, where=body.where, ef=body.ef, nprobe=body.nprobe, tenant=body.tenant)

    # -- maintenance
    @app.post("/collections/{name}/optimize", tags=["maintenance"], openapi_extra=_request_doc(OptimizeBody))
    def optimize(caller: Auth, name: str, body: OptimizeIn) -> dict[str, str]:
        caller.collection(name, "write", Access.MANAGE).optimize(compact=body.compact)
        return {"status": "ok"}

    @app.post("/collections/{name}/retune", tags=["maintenance"], openapi_extra=_request_doc(RetuneBody))
    def retune(caller: Auth, name: str, body: RetuneIn) -> dict[str, Any]:
        return caller.collection(name, "write", Access.MANAGE).retune(**body.model_dump())

    @app.get("/collections/{name}/tuning-report", tags=["maintenance"])
    def tuning_report(caller: Auth, name: str) -> dict[str, Any] | None:
        return caller.collection(name, "read", Access.MANAGE).tuning_report()

    @app.post("/collections/{name}/verify", tags=["maintenance"])
    def verify(caller: Auth, name: str) -> dict[str, str]:
        """Check every checksum; 500 CorruptData on a mismatch."""
        caller.collection(name, "read", Access.MANAGE).verify()
        return {"status": "ok"}

    @app.get("/collections/{name}/field-indexes", tags=["maintenance"])
    def field_indexes(caller: Auth, name: str) -> dict[str, list[str]]:
        return {"fields": caller.collection(name, "read", Access.DESCRIBE).field_indexes()}

    @app.post("/collections/{name}/field-indexes", tags=["maintenance"], status_code=201,
              openapi_extra=_request_doc(FieldBody))
    def create_field_index(caller: Auth, name: str, body: FieldIn) -> dict[str, list[str]]:
        col = caller.collection(name, "write", Access.MANAGE)
        col.create_field_index(body.field)
        return {"fields": col.field_indexes()}

    @app.delete("/collections/{name}/field-indexes/{field:path}", tags=["maintenance"])
    def drop_field_index(caller: Auth, name: str, field: str) -> dict[str, list[str]]:
        col = caller.collection(name, "write", Access.MANAGE)
        col.drop_field_index(field)
        return {"fields": col.field_indexes()}

    # -- tenants
    @app.get("/collections/{name}/tenants", tags=["tenants"])
    def list_tenants(caller: Auth, name: str) -> dict[str, list[TenantOut]]:
        return {"tenants": [TenantOut(**t) for t in caller.collection(name, "read", Access.MANAGE).list_tenants()]}

    @app.post("/collections/{name}/tenants", tags=["tenants"], status_code=201, openapi_extra=_request_doc(TenantBody))
    def create_tenant(caller: Auth, name: str, body: TenantIn) -> TenantOut:
        caller.collection(name, "write", Access.MANAGE).create_tenant(body.name)
        return TenantOut(name=body.name, active=True)

    @app.delete("/collections/{name}/tenants/{tenant}", tags=["tenants"])
    def drop_tenant(caller: Auth, name: str, tenant: str) -> dict[str, int]:
        return {"deleted": caller.collection(name, "write", Access.MANAGE).drop_tenant(tenant)}

    @app.post("/collections/{name}/tenants/{tenant}/activate", tags=["tenants"])
    def activate_tenant(caller: Auth, name: str, tenant: str) -> TenantOut:
        caller.collection(name, "write", Access.MANAGE).activate_tenant(tenant)
        return TenantOut(name=tenant, active=True)

    @app.post("/collections/{name}/tenants/{tenant}/deactivate", tags=["tenants"])
    def deactivate_tenant(caller: Auth, name: str, tenant: str) -> TenantOut:
        caller.collection(name, "write", Access.MANAGE).deactivate_tenant(tenant)
        return TenantOut(name=tenant, active=False)


# -- errors ---------------------------------------------------------------------------------------------------------
def error_response(status: int, error: str, detail: str) -> JSONResponse:
    """The body of every error: ``{"error": <class name>, "detail": <message>}``."""
    return JSONResponse({"error": error, "detail": detail}, status_code=status)


def _validation_detail(errors: Any) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in errors)


def _error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VecpackError)
    async def vecpack_error(request: Request, exc: VecpackError) -> JSONResponse:
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
        return error_response(status, type(exc).__name__, str(exc))

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, exc: ValidationError) -> JSONResponse:
        return error_response(422, "InvalidInput", _validation_detail(exc.errors()))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "InvalidInput", _validation_detail(exc.errors()))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        name = "NotFound" if exc.status_code == 404 else "".join(str(exc.detail).title().split())
        return error_response(exc.status_code, name, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return error_response(500, "InternalError", f"{type(exc).__name__}: {exc}")


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over ``max_bytes``, and PayloadTooLarge raised
    from ``receive`` as soon as the bytes read exceed it (chunked or lying clients)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = f"the server's limit is {self.max_bytes} bytes per request"
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            response = error_response(413, "PayloadTooLarge", f"body of {declared.decode()} bytes: {limit}")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Any:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:
                raise PayloadTooLarge(f"body exceeds {self.max_bytes} bytes: {limit}")
            return message

        await self.app(scope, limited, send)
