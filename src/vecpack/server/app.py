"""The HTTP API: one FastAPI app serving the collections of one database folder.

Endpoints (JSON in and out; OpenAPI at ``/docs``). ``{name}`` is a collection:

- ``GET /health`` (no key), ``GET /limits`` (any key: the request limits below), ``GET /metrics``
  (Prometheus text; admin key)
- ``GET /collections``, ``POST /collections`` (create), ``GET /collections/{name}`` (dim, metric, index,
  multi_tenant), ``DELETE /collections/{name}``, ``GET /collections/{name}/stats``
- ``POST /collections/{name}/`` ``add | upsert | delete | get | search | count | explain | optimize |
  retune | verify``, ``GET /collections/{name}/tuning-report``
- ``GET | POST /collections/{name}/field-indexes``, ``DELETE /collections/{name}/field-indexes/{field}``
- ``GET | POST /collections/{name}/tenants``, ``DELETE /collections/{name}/tenants/{tenant}``,
  ``POST /collections/{name}/tenants/{tenant}/activate | deactivate``

API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (empty headers count as absent). An
``Authorization`` header in any other form (``Basic ...``, the bare key) is refused with 401 even next to a
valid ``X-API-Key``, and so is a request whose two headers carry different keys.

Request bodies carry the keyword arguments of the ``Collection`` method of the same name (``tenant``
included); errors come back as ``{"error": <vecpack exception class>, "detail": <message>}`` with
status 422 (InvalidInput and subclasses), 404 (NotFound), 409 (Conflict), 413 (PayloadTooLarge),
401 (Unauthorized), 403 (Forbidden), 500 (CorruptData, or InternalError: a bug, logged with its traceback
by the server), 503 (ClosedError) or 507 (StorageError: the disk refused a write or a read). File paths
in error messages are relative to the database folder.

Limits (``Limits``, ``GET /limits``): a body is at most ``max_body_bytes`` (64 MiB); JSON -- a JSON body or
the JSON part of a binary body -- at most ``max_json_bytes`` (4 MiB) and ``max_json_depth`` (64) levels of
nesting, because parsing JSON takes up to ~25 bytes of memory per byte while a binary float32 block is used
where it lies: send large vector batches as binary bodies (``vecpack.Client`` does).

Binary vectors (add, upsert, search): ``Content-Type: application/octet-stream`` and the body

    uint32 little-endian J | J bytes of UTF-8 JSON | float32 little-endian values, row-major

The JSON is the request's other fields plus ``"shape"``: ``[n, dim]`` for ``vectors`` (add, upsert),
``[dim]`` (one query, answered with a flat list of hits) or ``[m, dim]`` for ``q`` (search). Pad the
JSON with spaces so that 4 + J is a multiple of 4 and the values are read in place, without a copy.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path as FilePath
from typing import Annotated, Any, Literal, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Path, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    FailFast,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic.json_schema import models_json_schema
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send
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
    StorageError,
    Unauthorized,
    VecpackError,
)
from vecpack.index import INDEX_KINDS
from vecpack.server.auth import Access, ApiKey, KeyStore
from vecpack.server.metrics import Metrics, MetricsMiddleware
from vecpack.tuning import MAX_BYTES

log = logging.getLogger("vecpack.server")

BINARY = "application/octet-stream"
#: status of each vecpack error, most specific first
STATUS: tuple[tuple[type[VecpackError], int], ...] = (
    (PayloadTooLarge, 413), (InvalidInput, 422), (NotFound, 404), (Conflict, 409), (Unauthorized, 401),
    (Forbidden, 403), (CorruptData, 500), (ClosedError, 503), (StorageError, 507),
)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one request may ask for; larger requests get 413 (bytes) or 422 (counts, nesting) with the limit named.

    ``max_json_bytes`` bounds every JSON text the server parses (a JSON body, or the JSON part of a binary
    body): parsing costs up to ~25 bytes of memory per byte of JSON (``[[],[],...]``), so with the default a
    request's JSON costs at most ~100 MB. ``max_json_depth`` bounds nesting, which parsers and filters recurse.
    """

    max_body_bytes: int = 64 << 20
    max_json_bytes: int = 4 << 20
    max_json_depth: int = 64
    max_batch: int = 100_000  # ids or vectors per add / upsert / delete / get
    max_queries: int = 1_000  # queries per search
    max_k: int = 1_000

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_json_bytes", "max_json_depth", "max_batch", "max_queries", "max_k"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInput(f"Limits.{name} must be a positive int, got {value!r}")


@dataclass(slots=True)
class ServerState:
    """What every request reaches through ``app.state.vecpack``."""

    db: vecpack.Database
    keys: KeyStore | None  # None: auth disabled
    limits: Limits
    redact: Callable[[str], str]  # error text with the database folder's path taken out
    metrics: Metrics = field(default_factory=Metrics)


# -- request and response bodies ------------------------------------------------------------------------------------
class _FailFast(FailFast):
    """Stop a list's validation at its first bad item: a hostile body of a million bad items would otherwise
    cost a million error objects (gigabytes). Hashable, so that it can sit inside a union."""

    __hash__ = object.__hash__


FAST = _FailFast()
#: the rule of ``validate.collection_name`` / ``tenant_name`` (1-64 of [A-Za-z0-9_.-], starting with a letter or
#: digit, no "..") for the OpenAPI schema; validation itself stays in ``validate``, with its messages
NAME_PATTERN = r"^[A-Za-z0-9](?:\.?[A-Za-z0-9_-])*\.?$"
NAME_SCHEMA: dict[str, Any] = {"type": "string", "pattern": NAME_PATTERN, "minLength": 1, "maxLength": 64}
#: ``filters.field_path``: dotted parts, none empty, none starting with "$", no '"' or control characters
FIELD_PATTERN = r'^[^$."\x00-\x1f][^."\x00-\x1f]*(?:\.[^$."\x00-\x1f][^."\x00-\x1f]*)*$'
ID_SCHEMA: dict[str, Any] = {"anyOf": [
    {"type": "string", "minLength": 1, "maxLength": validate.MAX_ID_LENGTH, "pattern": "^[^\\x1f]*$"},
    {"type": "integer"}]}


def _only_types(*types: type) -> WrapValidator:
    """Accept a list whose items are exactly of ``types`` as it is (JSON gives object keys as str, so a dict
    needs no more checks); anything else goes to pydantic's validation, which stops at the first bad item."""
    allowed = frozenset(types)

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if type(value) is list and set(map(type, value)) <= allowed:
            return value
        return handler(value)

    return WrapValidator(check)


def _float32(ndims: tuple[int, ...]) -> WrapValidator:
    """Numbers, or rows of numbers (``ndims``), straight to a float32 array: pydantic would first build a Python
    float per value (a 4 MiB body of zeros: +77 MB). Anything else goes to pydantic's validation and errors."""

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        if type(value) is list and value:
            rows = value if type(value[0]) is list else [value]
            types: set[type] = set()
            for row in rows:
                if type(row) is not list:
                    return handler(value)
                types.update(map(type, row))
            if types <= {int, float}:  # exact types: bool (an int subclass) is not a number here
                try:
                    with np.errstate(over="ignore"):  # beyond float32: inf, which validate refuses by name
                        x = np.asarray(value, dtype=np.float32)
                except (ValueError, OverflowError):  # ragged rows, or an int beyond float range
                    return handler(value)
                if x.ndim in ndims:
                    return x
        return handler(value)

    return WrapValidator(check)


def _integral(value: Any) -> Any:
    """A float without a fraction as its int: JSON Schema's "integer" includes 3.0, as JSON does not tell them apart."""
    return int(value) if type(value) is float and value.is_integer() else value


INTEGRAL = BeforeValidator(_integral)


def _bounds(low: int, high: int) -> Any:
    """The range ``validate`` enforces, shown in the schema only: the collection's checks keep their messages."""
    return Field(json_schema_extra={"minimum": low, "maximum": high})


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


CollectionName = Annotated[str, WithJsonSchema({**NAME_SCHEMA, "description": "collection name"})]
TenantName = Annotated[str, WithJsonSchema({**NAME_SCHEMA, "description": "tenant name"})]
FieldName = Annotated[str, WithJsonSchema({"type": "string", "pattern": FIELD_PATTERN, "minLength": 1,
                                           "maxLength": 256, "description": "metadata field, dotted for nested"})]
IdItem = Annotated[str | int, BeforeValidator(_integral)]  # the validator outside the union: errors say str / int
Ids = Annotated[list[IdItem], FAST, _only_types(str, int),
                WithJsonSchema({"type": "array", "items": ID_SCHEMA, "minItems": 1, "uniqueItems": True})]
IdsAny = Annotated[list[IdItem], FAST, _only_types(str, int),  # get: repeats allowed
                   WithJsonSchema({"type": "array", "items": ID_SCHEMA, "minItems": 1})]
Rows = Annotated[list[Annotated[list[float], FAST]], FAST, _float32((2,)),
                 WithJsonSchema({"type": "array", "minItems": 1, "items": {
                     "type": "array", "minItems": 1, "items": {"type": "number"}}})]
Queries = Annotated[Annotated[list[float], FAST] | Annotated[list[Annotated[list[float], FAST]], FAST],
                    _float32((1, 2)), WithJsonSchema({"anyOf": [
                        {"type": "array", "minItems": 1, "items": {"type": "number"}},
                        {"type": "array", "minItems": 1, "items": {
                            "type": "array", "minItems": 1, "items": {"type": "number"}}}]})]
Metadata = Annotated[list[dict[str, Any] | None], FAST, _only_types(dict, type(None))]
Where = dict[str, Any]
Knob = Annotated[int, INTEGRAL, _bounds(1, validate.MAX_K)]
PlanName = Literal["exact", "scan", "filtered", "postfilter", "clusters"]  # planner.FORCIBLE
# memory_budget, bytes_per_vector: 67108864 or "64MB"
Bytes = Annotated[Annotated[int, _bounds(1, MAX_BYTES)] | str, BeforeValidator(_integral)]


class CreateCollectionBody(_Body):
    name: CollectionName
    dim: Annotated[int, INTEGRAL, _bounds(1, 65536)]
    metric: Annotated[str, Field(json_schema_extra={"enum": list(validate.METRICS)})] = "cosine"
    codec: str = Field("int8", description="a codec spec (e.g. int8, pq16, pca192,lvq4x8) or auto; some need dim "
                                           "to be a multiple of a number in the spec")
    seal_rows: Annotated[int, INTEGRAL, _bounds(1, 1 << 30)] = DEFAULT_SEAL_ROWS
    index: Annotated[str, Field(json_schema_extra={"enum": list(INDEX_KINDS)})] = "flat"
    index_params: dict[str, Any] | None = None
    memory_budget: Bytes | None = Field(None, description="codec auto only: e.g. 64MB")
    bytes_per_vector: Bytes | None = Field(None, description="codec auto only")
    target_recall: Annotated[float, Field(json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})] = 0.95
    sample_queries: Rows | None = Field(None, description="rows of dim numbers")
    multi_tenant: bool = False
    exist_ok: bool = False


class WriteHeader(_Body):
    """add / upsert: the JSON part of a binary body (the vectors are its float32 block)."""

    ids: Ids
    metadata: Metadata | None = Field(None, description="one object (or null) per id")
    tenant: TenantName | None = None


class WriteBody(WriteHeader):
    vectors: Rows = Field(description="one row of dim numbers per id")


class DeleteBody(_Body):
    ids: Ids | None = None
    where: Where | None = None
    tenant: TenantName | None = None
    delete_all: bool = Field(False, description="needed to delete every record (of the tenant) at once")


class GetBody(_Body):
    ids: IdsAny | None = None
    where: Where | None = None
    limit: Annotated[int, INTEGRAL, _bounds(1, validate.MAX_BATCH)] | None = None
    offset: Annotated[int, INTEGRAL, _bounds(0, 1 << 62)] = 0
    tenant: TenantName | None = None


class SearchHeader(_Body):
    """search: the JSON part of a binary body (the queries are its float32 block)."""

    k: Annotated[int, INTEGRAL, _bounds(1, validate.MAX_K)] = 10
    where: Where | list[Where | None] | None = None
    rerank: Annotated[int, INTEGRAL, _bounds(0, validate.MAX_K)] | None = None
    ef: Knob | None = Field(None, description="graph index only")
    nprobe: Knob | None = Field(None, description="ivf index only")
    tenant: TenantName | None = None
    plan: PlanName | None = Field(None, description="run this plan instead of the planner's choice")


class SearchBody(SearchHeader):
    q: Queries = Field(description="one query of dim numbers, or a list of them")


class CountBody(_Body):
    where: Where | None = None
    tenant: TenantName | None = None


class ExplainBody(_Body):
    k: Annotated[int, INTEGRAL, _bounds(1, validate.MAX_K)] = 10
    where: Where | None = None
    ef: Knob | None = Field(None, description="graph index only")
    nprobe: Knob | None = Field(None, description="ivf index only")
    tenant: TenantName | None = None
    plan: PlanName | None = Field(None, description="run this plan instead of the planner's choice")


class OptimizeBody(_Body):
    compact: bool | None = None


class RetuneBody(_Body):
    memory_budget: Bytes | None = None
    bytes_per_vector: Bytes | None = None
    target_recall: Annotated[float, Field(json_schema_extra={"exclusiveMinimum": 0, "maximum": 1})] | None = None


class FieldBody(_Body):
    field: FieldName


class TenantBody(_Body):
    name: TenantName


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


class LimitsOut(BaseModel):
    """The server's ``Limits``."""

    max_body_bytes: int
    max_json_bytes: int
    max_json_depth: int
    max_batch: int
    max_queries: int
    max_k: int


class Error(BaseModel):
    """Every error response: the vecpack exception class (or InternalError) and its message."""

    model_config = ConfigDict(extra="forbid")
    error: str
    detail: str


#: the models the OpenAPI schema lists beside the routes' own (request bodies are parsed by ``_body``)
BODIES: tuple[type[BaseModel], ...] = (CreateCollectionBody, WriteBody, WriteHeader, DeleteBody, GetBody, SearchBody,
                                       SearchHeader, CountBody, ExplainBody, OptimizeBody, RetuneBody, FieldBody,
                                       TenantBody, Error)
B = TypeVar("B", bound=_Body)


# -- request parsing ------------------------------------------------------------------------------------------------
def _is_binary(headers: Headers) -> bool:
    """The body is binary (else JSON). ``BodyLimit`` and ``_body`` both decide through here: the first
    Content-Type header counts, so that a repeated header cannot get a JSON body the binary size limit."""
    return headers.get("content-type", "").split(";")[0].strip().lower() == BINARY


_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)  # to the end if unterminated: linear
_NESTING = np.zeros(256, dtype=np.int8)
_NESTING[[ord("["), ord("{")]] = 1
_NESTING[[ord("]"), ord("}")]] = -1


def json_depth(text: bytes) -> int:
    """How deeply arrays and objects nest in the JSON ``text`` (brackets inside strings do not count), found
    without parsing it: ``json.loads``, pydantic and the filter parser all recurse once per level."""
    steps = _NESTING[np.frombuffer(_JSON_STRING.sub(b"", text), dtype=np.uint8)]
    return int(np.cumsum(steps, dtype=np.int32).max(initial=0))


def _load_json(text: bytes, limits: Limits, what: str) -> Any:
    """``text`` parsed, after the size and nesting limits; InvalidInput naming what is wrong with it."""
    if len(text) > limits.max_json_bytes:
        raise PayloadTooLarge(f"{what} is {len(text)} bytes of JSON; the server's limit for JSON is "
                              f"{limits.max_json_bytes} bytes: send fewer records per call")
    depth = json_depth(text)
    if depth > limits.max_json_depth:
        raise InvalidInput(f"{what}: JSON nested {depth} levels deep; the server's limit is {limits.max_json_depth}")
    try:
        return json.loads(text)
    except ValueError as exc:  # UnicodeDecodeError included
        raise InvalidInput(f"{what} is malformed JSON: {exc}") from exc


def _validate(model: type[B], data: Any, what: str) -> B:
    """``data`` (parsed JSON) as ``model``. Unknown keys are refused here, a few named, since pydantic would
    report each of a million of them."""
    if not isinstance(data, dict):
        raise InvalidInput(f"{what} must be a JSON object, got {type(data).__name__}")
    extra = [key for key in data if key not in model.model_fields]
    if extra:
        named = "; ".join(f"{_clip(key)}: Extra inputs are not permitted" for key in extra[:3])
        raise InvalidInput(named + (f" (and {len(extra) - 3} more unknown fields)" if len(extra) > 3 else ""))
    return model.model_validate(data)


def _clip(text: str, n: int = 80) -> str:
    return text if len(text) <= n else text[:n] + "..."


def _body(model: type[B], header: type[_Body] | None = None, vectors: str | None = None) -> Any:
    """A dependency reading the request body into ``model``, or ``(model or header, vectors)`` where ``vectors``
    names the model's vector field (add/upsert: "vectors", search: "q"): those endpoints also take the binary
    format, whose JSON part is a ``header`` and whose float block comes back as a float32 array."""

    async def parse(request: Request) -> B | tuple[Any, Any]:
        raw = await request.body()
        limits: Limits = request.app.state.vecpack.limits
        if _is_binary(request.headers):
            if header is None or vectors is None:
                raise InvalidInput(f"{request.url.path} takes JSON, not {BINARY}")
            return _binary(raw, header, vectors, limits)
        data = _load_json(raw or b"{}", limits, "body")
        if vectors is not None and isinstance(data, dict) and data.get(vectors) is None:
            raise InvalidInput(f"{vectors} missing: send it in the JSON body or as a binary {BINARY} body")
        body = _validate(model, data, "body")
        return body if vectors is None else (body, getattr(body, vectors))

    return Depends(parse)


def _binary(raw: bytes, model: type[B], vectors: str, limits: Limits) -> tuple[B, np.ndarray]:
    """Split a binary body (module docstring) into the validated JSON part and the float32 array."""
    if len(raw) < 4:
        raise InvalidInput("binary body: missing the 4-byte JSON length")
    start = 4 + int.from_bytes(raw[:4], "little")
    if start > len(raw):
        raise InvalidInput(f"binary body: JSON length {start - 4} exceeds the body ({len(raw)} bytes)")
    header = _load_json(raw[4:start], limits, "binary body: the JSON part")
    if not isinstance(header, dict):
        raise InvalidInput("binary body: the JSON part must be an object")
    shape = header.pop("shape", None)
    if (not isinstance(shape, list) or len(shape) not in (1, 2)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in shape)):
        raise InvalidInput(f"binary body: shape must be [dim] or [n, dim] of positive ints, got {_clip(repr(shape))}")
    if vectors in header:
        raise InvalidInput(f"binary body: {vectors} belongs in the float32 block, not in the JSON part")
    body = _validate(model, header, "binary body: the JSON part")
    size = math.prod(shape)
    if len(raw) - start != 4 * size:
        raise InvalidInput(f"binary body: shape {shape} needs {4 * size} bytes of float32, got {len(raw) - start}")
    x = np.frombuffer(raw, dtype="<f4", count=size, offset=start).reshape(shape)
    return body, (x if start % 4 == 0 else x.copy())


CreateIn = Annotated[CreateCollectionBody, _body(CreateCollectionBody)]
WriteIn = Annotated[tuple[Any, Any], _body(WriteBody, WriteHeader, "vectors")]
SearchIn = Annotated[tuple[Any, Any], _body(SearchBody, SearchHeader, "q")]
DeleteIn = Annotated[DeleteBody, _body(DeleteBody)]
GetIn = Annotated[GetBody, _body(GetBody)]
CountIn = Annotated[CountBody, _body(CountBody)]
ExplainIn = Annotated[ExplainBody, _body(ExplainBody)]
OptimizeIn = Annotated[OptimizeBody, _body(OptimizeBody)]
RetuneIn = Annotated[RetuneBody, _body(RetuneBody)]
FieldIn = Annotated[FieldBody, _body(FieldBody)]
TenantIn = Annotated[TenantBody, _body(TenantBody)]

NamePath = Annotated[str, Path(description="collection name"),
                     WithJsonSchema({**NAME_SCHEMA, "description": "collection name"})]
TenantPath = Annotated[str, Path(description="tenant name"), WithJsonSchema({**NAME_SCHEMA, "description": "tenant"})]
FieldPath = Annotated[str, Path(description="metadata field"), WithJsonSchema(
    {"type": "string", "pattern": FIELD_PATTERN, "minLength": 1, "maxLength": 256})]


# -- authentication and access --------------------------------------------------------------------------------------
# Declared on every keyed route so that the OpenAPI schema shows both ways to send a key; the headers
# themselves are read by ``presented_key``, which also refuses what these two would let through.
_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="or `X-API-Key: <key>`")


def presented_key(headers: Headers) -> str:
    """The one API key a request carries; Unauthorized saying how to send it when there is none, when
    ``Authorization`` is not ``Bearer <key>``, or when the request carries two different keys."""
    keys = {v.strip() for v in headers.getlist("x-api-key") if v.strip()}
    for value in headers.getlist("authorization"):
        scheme, _, credentials = value.strip().partition(" ")
        if not scheme:
            continue
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthorized("malformed Authorization header: write 'Authorization: Bearer <key>' "
                               "(or send the key alone as 'X-API-Key: <key>')")
        keys.add(credentials.strip())
    if not keys:
        raise Unauthorized("missing API key: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if len(keys) > 1:
        raise Unauthorized("the request carries two different API keys (Authorization and X-API-Key): send one")
    return keys.pop()


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
    key = state.keys.verify(presented_key(request.headers))
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


def _request_doc(model: type[_Body], header: type[_Body] | None = None) -> dict[str, Any]:
    """openapi_extra documenting a body parsed by ``_body`` (JSON, and binary with a ``header`` model)."""
    content: dict[str, Any] = {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}
    if header is not None:
        content[BINARY] = {"schema": {"type": "string", "format": "binary", "description": (
            f"uint32 little-endian J, J bytes of JSON ({header.__name__} plus shape), float32 values")}}
    doc = {"required": any(f.is_required() for f in model.model_fields.values()), "content": content}
    if header is not None:
        doc["description"] = "JSON, or the vectors as a binary body (see the API description)"
    return {"requestBody": doc}


#: what each error status means, for the OpenAPI schema
ERRORS: dict[int, str] = {
    401: "Unauthorized: no API key, an unknown or revoked one, a malformed Authorization header, or two keys",
    403: "Forbidden: the key's scope does not allow the request",
    404: "NotFound: the collection, a record id, a tenant or a field index does not exist",
    409: "Conflict: the id, collection or tenant exists, or the tenant is inactive",
    413: "PayloadTooLarge: the body or its JSON exceeds the server's limits (GET /limits)",
    422: "InvalidInput (DimensionMismatch, UnknownSpec): the request is malformed; detail names the problem",
    500: "CorruptData (a file failed its checksum) or InternalError (a bug; the server logs the traceback)",
    503: "ClosedError: the database is closing",
    507: "StorageError: the disk refused a write or a read; nothing of the call was written",
}
_ANY = (413, 500)  # any route: a body over the limit, a bug
_KEYED = (*_ANY, 401, 403, 503, 507)  # routes that need a key and open the database
_NAMED = (*_KEYED, 404, 422)  # routes under /collections/{name}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses`` of a route that can answer each of ``codes`` with an ``Error`` body."""
    return {code: {"description": ERRORS[code], "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}} for code in sorted(set(codes))}


# -- the app --------------------------------------------------------------------------------------------------------
def create_app(
    path: str | os.PathLike[str], *, limits: Limits = Limits(), auth: bool = True, memory_map: bool = False
) -> FastAPI:
    """A FastAPI app serving the database folder ``path`` (created if missing).

    ``auth`` True: every endpoint but ``/health`` needs an API key of ``<path>/.vecpack-keys.sqlite``
    (``vecpack keys create``). ``memory_map`` as in ``vecpack.connect``. The database is opened now and
    closed when the app shuts down.
    """
    folder = FilePath(path).absolute()  # the core then names files by absolute paths, which redact() removes
    state = ServerState(vecpack.connect(folder, memory_map=memory_map), KeyStore(folder) if auth else None, limits,
                        _redactor(folder))

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
    for routes in (_server_routes, _collection_routes, _record_routes, _maintenance_routes, _tenant_routes):
        routes(app)
    _error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes, max_json_bytes=limits.max_json_bytes)
    app.add_middleware(CatchAll, redact=state.redact)
    app.add_middleware(MetricsMiddleware, metrics=state.metrics)
    app.openapi = _with_body_schemas(app, limits)  # type: ignore[method-assign]
    return app


def _redactor(folder: FilePath) -> Callable[[str], str]:
    """A function taking the database folder's path out of a message: ``<folder>/docs/vectors.f32`` becomes
    ``docs/vectors.f32`` and the folder itself ``.``, so that errors do not tell clients where the data lives."""
    forms = sorted({str(folder), os.path.realpath(folder)}, key=len, reverse=True)
    pattern = re.compile("|".join(f"{re.escape(f)}(?:{re.escape(os.sep)}+|(?![\\w.-]))" for f in forms))
    return lambda text: pattern.sub(lambda m: "." if not m.group().endswith(os.sep) else "", text)


def _with_body_schemas(app: FastAPI, limits: Limits) -> Callable[[], dict[str, Any]]:
    """app.openapi that also lists the request models (bodies are parsed by ``_body``, not by FastAPI) and the
    error model, with this server's limits in the bounds they set."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = build()
            _, defs = models_json_schema([(m, "validation") for m in BODIES],
                                         ref_template="#/components/schemas/{model}")
            for name in ("SearchHeader", "SearchBody", "ExplainBody"):
                defs["$defs"][name]["properties"]["k"]["maximum"] = limits.max_k
            defs["$defs"]["GetBody"]["properties"]["limit"]["anyOf"][0]["maximum"] = limits.max_batch
            schemas = schema.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(defs["$defs"])
            for unused in ("HTTPValidationError", "ValidationError"):  # 422s are Error bodies
                schemas.pop(unused, None)
        return app.openapi_schema

    return openapi


def _server_routes(app: FastAPI) -> None:
    """Health, limits and metrics."""
    @app.get("/health", tags=["server"], responses=_errors(*_ANY))
    def health() -> dict[str, str]:
        """Liveness: no key needed."""
        return {"status": "ok"}

    @app.get("/limits", tags=["server"], responses=_errors(*_ANY, 401))
    def limits(caller: Auth) -> LimitsOut:
        """The server's request limits (any valid key): clients pick the binary body by them."""
        lim = caller.state.limits
        return LimitsOut(max_body_bytes=lim.max_body_bytes, max_json_bytes=lim.max_json_bytes,
                         max_json_depth=lim.max_json_depth, max_batch=lim.max_batch, max_queries=lim.max_queries,
                         max_k=lim.max_k)

    @app.get("/metrics", tags=["server"], response_class=PlainTextResponse, responses=_errors(*_KEYED))
    def metrics(caller: Auth) -> str:
        """Prometheus text: requests by route and status, latency histograms, records per collection."""
        caller.require("admin")
        db = caller.state.db
        return caller.state.metrics.render((n, len(col), col.maintenance_failures)
                                           for n in db.list_collections() for col in [db.get_collection(n)])



def _collection_routes(app: FastAPI) -> None:
    """Create, list, describe and drop collections."""
    @app.get("/collections", tags=["collections"], responses=_errors(*_KEYED))
    def list_collections(caller: Auth) -> dict[str, list[str]]:
        """The collections the key covers."""
        caller.require("read")
        names = caller.state.db.list_collections()
        return {"collections": [n for n in names if caller.key is None or caller.key.covers(n)]}

    @app.post("/collections", tags=["collections"], status_code=201, openapi_extra=_request_doc(CreateCollectionBody),
              responses=_errors(*_KEYED, 409, 422))
    def create_collection(caller: Auth, body: CreateIn) -> CollectionInfo:
        """``Database.create_collection``; needs admin or write on the collection (not tenant-pinned)."""
        name = validate.collection_name(body.name)
        caller.require("write", name)
        col = caller.state.db.create_collection(**{f: getattr(body, f) for f in CreateCollectionBody.model_fields})
        return CollectionInfo(**_info(col))

    @app.get("/collections/{name}", tags=["collections"], responses=_errors(*_NAMED))
    def describe(caller: Auth, name: NamePath) -> CollectionInfo:
        """Name, dim, metric, index and multi_tenant: what a client needs; any key of the collection."""
        return CollectionInfo(**_info(caller.collection(name, "read", Access.DESCRIBE)))

    @app.delete("/collections/{name}", tags=["collections"], responses=_errors(*_NAMED))
    def drop_collection(caller: Auth, name: NamePath) -> dict[str, str]:
        name = validate.collection_name(name)
        caller.require("write", name)
        caller.state.db.drop_collection(name)
        return {"dropped": name}

    @app.get("/collections/{name}/stats", tags=["collections"], responses=_errors(*_NAMED))
    def stats(caller: Auth, name: NamePath) -> dict[str, Any]:
        """``Collection.stats``: counts over every tenant, so not for tenant-pinned keys."""
        return caller.collection(name, "read", Access.MANAGE).stats()



def _record_routes(app: FastAPI) -> None:
    """Write, read and search records."""
    @app.post("/collections/{name}/add", tags=["records"], openapi_extra=_request_doc(WriteBody, WriteHeader),
              responses=_errors(*_NAMED, 409))
    def add(caller: Auth, name: NamePath, body_x: WriteIn) -> dict[str, int]:
        body, x = body_x
        col = caller.collection(name, "write", Access.DATA, body.tenant)
        caller.check_batch(len(body.ids))
        col.add(body.ids, x, body.metadata, tenant=body.tenant)
        return {"added": len(body.ids)}

    @app.post("/collections/{name}/upsert", tags=["records"], openapi_extra=_request_doc(WriteBody, WriteHeader),
              responses=_errors(*_NAMED, 409))
    def upsert(caller: Auth, name: NamePath, body_x: WriteIn) -> dict[str, int]:
        body, x = body_x
        col = caller.collection(name, "write", Access.DATA, body.tenant)
        caller.check_batch(len(body.ids))
        col.upsert(body.ids, x, body.metadata, tenant=body.tenant)
        return {"upserted": len(body.ids)}

    @app.post("/collections/{name}/delete", tags=["records"], openapi_extra=_request_doc(DeleteBody),
              responses=_errors(*_NAMED, 409))
    def delete(caller: Auth, name: NamePath, body: DeleteIn) -> dict[str, int]:
        """``Collection.delete``: by ids, by where, both, or every record (of the tenant) with ``delete_all``."""
        col = caller.collection(name, "write", Access.DATA, body.tenant)
        caller.check_batch(len(body.ids or ()))
        return {"deleted": col.delete(body.ids, where=body.where, tenant=body.tenant, delete_all=body.delete_all)}

    @app.post("/collections/{name}/get", tags=["records"], openapi_extra=_request_doc(GetBody),
              responses=_errors(*_NAMED, 409))
    def get(caller: Auth, name: NamePath, body: GetIn) -> RecordsOut:
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

    @app.post("/collections/{name}/search", tags=["records"], openapi_extra=_request_doc(SearchBody, SearchHeader),
              responses=_errors(*_NAMED, 409))
    def search(caller: Auth, name: NamePath, body_q: SearchIn) -> SearchOut:
        """``Collection.search``: q of shape (dim,) gives a list of hits, (m, dim) a list per query."""
        body, q = body_q
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        caller.check_k(body.k)
        caller.check_queries(_n_queries(q))
        found = col.search(q, body.k, where=body.where, rerank=body.rerank, ef=body.ef, nprobe=body.nprobe,
                           tenant=body.tenant, plan=body.plan)
        if found and isinstance(found[0], list):
            return SearchOut(hits=[_hits(row) for row in found])
        return SearchOut(hits=_hits(found))

    @app.post("/collections/{name}/count", tags=["records"], openapi_extra=_request_doc(CountBody),
              responses=_errors(*_NAMED, 409))
    def count(caller: Auth, name: NamePath, body: CountIn) -> dict[str, int]:
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        return {"count": col.count(body.where, tenant=body.tenant)}

    @app.post("/collections/{name}/explain", tags=["records"], openapi_extra=_request_doc(ExplainBody),
              responses=_errors(*_NAMED, 409))
    def explain(caller: Auth, name: NamePath, body: ExplainIn) -> dict[str, Any]:
        col = caller.collection(name, "read", Access.DATA, body.tenant)
        caller.check_k(body.k)
        return col.explain(body.k, where=body.where, ef=body.ef, nprobe=body.nprobe, tenant=body.tenant,
                           plan=body.plan)



def _maintenance_routes(app: FastAPI) -> None:
    """Optimize, retune, verify; field indexes."""
    @app.post("/collections/{name}/optimize", tags=["maintenance"], openapi_extra=_request_doc(OptimizeBody),
              responses=_errors(*_NAMED))
    def optimize(caller: Auth, name: NamePath, body: OptimizeIn) -> dict[str, str]:
        caller.collection(name, "write", Access.MANAGE).optimize(compact=body.compact)
        return {"status": "ok"}

    @app.post("/collections/{name}/retune", tags=["maintenance"], openapi_extra=_request_doc(RetuneBody),
              responses=_errors(*_NAMED))
    def retune(caller: Auth, name: NamePath, body: RetuneIn) -> dict[str, Any]:
        return caller.collection(name, "write", Access.MANAGE).retune(**body.model_dump())

    @app.get("/collections/{name}/tuning-report", tags=["maintenance"], responses=_errors(*_NAMED))
    def tuning_report(caller: Auth, name: NamePath) -> dict[str, Any] | None:
        return caller.collection(name, "read", Access.MANAGE).tuning_report()

    @app.post("/collections/{name}/verify", tags=["maintenance"], responses=_errors(*_NAMED))
    def verify(caller: Auth, name: NamePath) -> dict[str, str]:
        """Check every checksum; 500 CorruptData on a mismatch."""
        caller.collection(name, "read", Access.MANAGE).verify()
        return {"status": "ok"}

    @app.get("/collections/{name}/field-indexes", tags=["maintenance"], responses=_errors(*_NAMED))
    def field_indexes(caller: Auth, name: NamePath) -> dict[str, list[str]]:
        return {"fields": caller.collection(name, "read", Access.DESCRIBE).field_indexes()}

    @app.post("/collections/{name}/field-indexes", tags=["maintenance"], status_code=201,
              openapi_extra=_request_doc(FieldBody), responses=_errors(*_NAMED))
    def create_field_index(caller: Auth, name: NamePath, body: FieldIn) -> dict[str, list[str]]:
        col = caller.collection(name, "write", Access.MANAGE)
        col.create_field_index(body.field)
        return {"fields": col.field_indexes()}

    @app.delete("/collections/{name}/field-indexes/{field:path}", tags=["maintenance"], responses=_errors(*_NAMED))
    def drop_field_index(caller: Auth, name: NamePath, field: FieldPath) -> dict[str, list[str]]:
        col = caller.collection(name, "write", Access.MANAGE)
        col.drop_field_index(field)
        return {"fields": col.field_indexes()}



def _tenant_routes(app: FastAPI) -> None:
    """Tenants of a multi-tenant collection."""
    @app.get("/collections/{name}/tenants", tags=["tenants"], responses=_errors(*_NAMED))
    def list_tenants(caller: Auth, name: NamePath) -> dict[str, list[TenantOut]]:
        return {"tenants": [TenantOut(**t) for t in caller.collection(name, "read", Access.MANAGE).list_tenants()]}

    @app.post("/collections/{name}/tenants", tags=["tenants"], status_code=201, openapi_extra=_request_doc(TenantBody),
              responses=_errors(*_NAMED, 409))
    def create_tenant(caller: Auth, name: NamePath, body: TenantIn) -> TenantOut:
        caller.collection(name, "write", Access.MANAGE).create_tenant(body.name)
        return TenantOut(name=body.name, active=True)

    @app.delete("/collections/{name}/tenants/{tenant}", tags=["tenants"], responses=_errors(*_NAMED))
    def drop_tenant(caller: Auth, name: NamePath, tenant: TenantPath) -> dict[str, int]:
        return {"deleted": caller.collection(name, "write", Access.MANAGE).drop_tenant(tenant)}

    @app.post("/collections/{name}/tenants/{tenant}/activate", tags=["tenants"], responses=_errors(*_NAMED))
    def activate_tenant(caller: Auth, name: NamePath, tenant: TenantPath) -> TenantOut:
        caller.collection(name, "write", Access.MANAGE).activate_tenant(tenant)
        return TenantOut(name=tenant, active=True)

    @app.post("/collections/{name}/tenants/{tenant}/deactivate", tags=["tenants"], responses=_errors(*_NAMED))
    def deactivate_tenant(caller: Auth, name: NamePath, tenant: TenantPath) -> TenantOut:
        caller.collection(name, "write", Access.MANAGE).deactivate_tenant(tenant)
        return TenantOut(name=tenant, active=False)


# -- errors ---------------------------------------------------------------------------------------------------------
def error_response(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The body of every error: ``{"error": <class name>, "detail": <message>}``."""
    if status == 401:
        headers = {"WWW-Authenticate": "Bearer", **(headers or {})}
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _validation_detail(errors: list[Any], most: int = 10) -> str:
    shown = "; ".join(f"{_clip('.'.join(map(str, e['loc'])) or 'body')}: {e['msg']}" for e in errors[:most])
    return shown + (f" (and {len(errors) - most} more errors)" if len(errors) > most else "")


def _allowed(app: ASGIApp, scope: Scope) -> list[str]:
    """The methods some route serves at the scope's path (Starlette's 405 names only the first route's)."""
    methods: set[str] = set()
    for route in getattr(app, "routes", ()):
        match, _ = route.matches({**scope, "method": "\0"})  # no route serves "\0": a path match is PARTIAL
        if match is Match.PARTIAL:
            methods |= getattr(route, "methods", None) or set()
    return sorted(methods)


def _error_handlers(app: FastAPI) -> None:
    def redact(request: Request, text: str) -> str:
        return request.app.state.vecpack.redact(text)

    @app.exception_handler(VecpackError)
    async def vecpack_error(request: Request, exc: VecpackError) -> JSONResponse:
        status = next((code for cls, code in STATUS if isinstance(exc, cls)), 500)
        return error_response(status, type(exc).__name__, redact(request, str(exc)))

    @app.exception_handler(ValidationError)
    async def invalid_body(request: Request, exc: ValidationError) -> JSONResponse:
        errors = exc.errors(include_url=False, include_context=False, include_input=False)
        return error_response(422, "InvalidInput", _validation_detail(errors))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(422, "InvalidInput", _validation_detail(list(exc.errors())))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        name = "NotFound" if exc.status_code == 404 else "".join(str(exc.detail).title().split())
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(_allowed(request.app, request.scope))
        return error_response(exc.status_code, name, str(exc.detail), headers)


class CatchAll:
    """ASGI middleware: an exception no handler took becomes a JSON 500 ``InternalError`` (its traceback logged)
    on a connection that stays usable. Without it Starlette answers 500 and re-raises, and uvicorn then drops
    the keep-alive connection without ``Connection: close``: the client's next request on it fails."""

    def __init__(self, app: ASGIApp, redact: Callable[[str], str]) -> None:
        self.app = app
        self.redact = redact

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking)
        except ClientDisconnect:
            return  # nobody to answer
        except Exception as exc:
            if started:  # half a response is out: only closing the connection can end it
                raise
            log.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            response = error_response(500, "InternalError", self.redact(f"{type(exc).__name__}: {exc}"))
            await response(scope, receive, send)


class BodyLimit:
    """ASGI middleware: 413 for a declared Content-Length over the limit, and PayloadTooLarge raised from
    ``receive`` as soon as the bytes read exceed it (chunked or lying clients). The limit is ``max_bytes`` for
    binary bodies and ``max_json_bytes`` for any other (parsed as JSON)."""

    def __init__(self, app: ASGIApp, max_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.max_json_bytes = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        if _is_binary(headers):
            most, limit = self.max_bytes, f"the server's limit is {self.max_bytes} bytes per request"
        else:
            most = min(self.max_bytes, self.max_json_bytes)
            limit = (f"the server's limit for a JSON body is {most} bytes (parsing JSON takes many times its size "
                     f"in memory): send the vectors as a binary {BINARY} body (see /docs), or fewer records per call")
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > most):
            response = error_response(413, "PayloadTooLarge", f"body of {_clip(declared)} bytes: {limit}")
            await response(scope, receive, send)
            return
        seen = 0

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > most:
                raise PayloadTooLarge(f"body exceeds {most} bytes: {limit}")
            return message

        await self.app(scope, limited, send)

