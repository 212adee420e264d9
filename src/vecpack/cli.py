"""The ``vecpack`` command line (Typer + Rich): a thin adapter over the library.

Data commands (``import``, ``export``, ``search``, ``info``) work on a database folder (``--path``) or
on a server (``--url``, ``--api-key`` or ``$VECPACK_API_KEY``) through the same calls: ``vecpack.connect``
or ``vecpack.Client``.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from contextlib import nullcontext
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

try:
    import typer
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Column, Table
except ImportError:  # the CLI is an extra: pip install 'vecpack[cli]'
    typer = None

#: one batch of records: ids, float32 (n, dim) vectors, metadata (or None)
Batch = tuple[list[Any], np.ndarray, list[Any] | None]

if typer is not None:
    app = typer.Typer(help="vecpack: a compression-first embedded vector database.", no_args_is_help=True)
    keys_app = typer.Typer(help="API keys of a database folder, for `vecpack serve`.", no_args_is_help=True)
    app.add_typer(keys_app, name="keys")
    console = Console()
    err_console = Console(stderr=True)

    PATH = typer.Option(None, "--path", help="database folder (embedded)")
    URL = typer.Option(None, "--url", help="a vecpack server instead, e.g. http://127.0.0.1:8000")
    API_KEY = typer.Option(None, "--api-key", envvar="VECPACK_API_KEY", help="API key for --url")
    COLLECTION = typer.Option(..., "--collection", "-c", help="collection name")
    TENANT = typer.Option(None, "--tenant", help="tenant (multi-tenant collections)")
    KEYS_PATH = typer.Option(..., "--path", help="database folder")

    @app.command()
    def demo() -> None:
        """Compare every codec with float32 on real text (SciFact embeddings, or pydoc topics embedded offline)."""
        from vecpack.bench.demo import run_demo

        run_demo(console.print)

    @app.command()
    def bench(
        dataset: str = typer.Option("scifact", help="scifact | msmarco-dl19 | mnist | synthetic:N:D"),
        out: Path = typer.Option(Path("docs/results"), help="folder for the JSON, markdown and PNG results"),
        codecs: str = typer.Option("", help="comma-separated codec specs (default: all)"),
        queries: int = typer.Option(1000, help="query batch size for QPS"),
        peers: bool = typer.Option(True, help="run FAISS in the same process for comparison"),
    ) -> None:
        """Benchmark every codec (memory, recall, nDCG, QPS) against exact float32 and FAISS."""
        from vecpack.bench.runner import run_benchmark

        run_benchmark(dataset, out, codecs=[c for c in codecs.split(",") if c] or None, n_queries=queries,
                      peers=peers)

    @app.command()
    def info(
        folder: Path | None = typer.Argument(None, hidden=True), path: Path | None = PATH, url: str | None = URL,
        api_key: str | None = API_KEY,
    ) -> None:
        """List the collections of a database (--path folder or --url server) with their sizes, and the rows
        not yet compressed (float32) or indexed, which `vecpack optimize` compresses and indexes."""
        if folder is not None and path is not None:
            _fail("give the database folder once, as --path DIR")
        table = Table(Column("collection", no_wrap=True), "records", "dim", "metric", "codec", "index", "memory",
                      "disk")
        todo = []
        with _open(path or folder, url, api_key) as db:
            for name in db.list_collections():
                s = db.get_collection(name).stats()
                table.add_row(name, str(s["n"]), str(s["dim"]), s["metric"], s["codec"], s["index"],
                              _size(s["memory_bytes"]), _size(s["disk_bytes"]))
                if s["growing_rows"] or s["unindexed_rows"]:
                    todo.append(f"{name}: {s['growing_rows']} rows not compressed yet, {s['unindexed_rows']} not "
                                f"indexed (vecpack optimize -c {name})")
        console.print(table)
        for line in todo:
            console.print(escape(line))

    @app.command()
    def optimize(
        collection: str = COLLECTION, path: Path | None = PATH, url: str | None = URL, api_key: str | None = API_KEY,
        compact: bool | None = typer.Option(None, "--compact/--no-compact",
                                            help="rewrite without deleted rows (default: when they are many)"),
    ) -> None:
        """Compress every row, bring the index up to date and compact deleted rows, now (Collection.optimize)."""
        with _open(path, url, api_key) as db:
            col = db.get_collection(collection)
            with err_console.status(f"optimizing {collection!r}"):
                col.optimize(compact=compact)
            s = col.stats()
        err_console.print(f"{collection!r}: {s['n']} records, {s['growing_rows']} uncompressed, "
                          f"{s['unindexed_rows']} unindexed, {_size(s['memory_bytes'])} in memory")

    @app.command()
    def serve(
        path: Path = typer.Option(..., "--path", help="database folder (created if missing)"),
        host: str = typer.Option("127.0.0.1", help="interface to listen on"),
        port: int = typer.Option(8000, help="TCP port"),
        auth: bool = typer.Option(True, "--auth/--no-auth", help="require API keys (`vecpack keys create`)"),
        max_body_mb: float = typer.Option(64.0, help="largest request body, MiB (413 above)"),
        max_batch: int = typer.Option(100_000, help="most records per add / upsert / delete / get"),
        max_queries: int = typer.Option(1_000, help="most queries per search"),
        max_k: int = typer.Option(1_000, help="largest k"),
        log_level: str = typer.Option("info", help="uvicorn log level"),
        memory_map: bool = typer.Option(False, "--memory-map", help="map codes and indexes from their files "
                                        "instead of reading them into memory (collections larger than RAM)"),
    ) -> None:
        """Serve a database folder over HTTP (OpenAPI docs at /docs)."""
        try:
            import uvicorn

            from vecpack.server import Limits, create_app
        except ImportError as exc:
            _fail(f"vecpack serve needs the server extra: pip install 'vecpack[server]' ({exc})")
        limits = Limits(max_body_bytes=int(max_body_mb * (1 << 20)), max_batch=max_batch, max_queries=max_queries,
                        max_k=max_k)
        server = create_app(path, limits=limits, auth=auth, memory_map=memory_map)
        keys = server.state.vecpack.keys
        if keys is not None and not keys.list():
            err_console.print(f"[yellow]no API keys yet: every request but /health gets 401; create one with "
                              f"`vecpack keys create --path {escape(str(path))} --role admin`[/yellow]")
        if keys is None and host not in ("127.0.0.1", "localhost", "::1"):
            err_console.print(f"[yellow]--no-auth on {escape(host)}: anyone who can reach the port can read and "
                              "write[/yellow]")
        uvicorn.run(server, host=host, port=port, log_level=log_level)

    # -- keys
    @keys_app.command("create")
    def keys_create(
        path: Path = KEYS_PATH,
        role: str = typer.Option("read", help="admin | write | read (write includes read)"),
        collection: str = typer.Option("*", "--collection", "-c", help="the collection the key covers, or *"),
        tenant: str | None = typer.Option(None, help="pin the key to one tenant's records"),
    ) -> None:
        """Create an API key and print it: it is stored hashed and never shown again."""
        from vecpack.server.auth import KeyStore

        with KeyStore(path) as keys:
            key = keys.create(role, collection, tenant)
        typer.echo(key)
        err_console.print("store this key now: only its hash is kept")

    @keys_app.command("list")
    def keys_list(path: Path = KEYS_PATH) -> None:
        """The keys' prefixes and scopes (never the secrets)."""
        from vecpack.server.auth import KeyStore

        table = Table("prefix", "role", "collection", "tenant", "created (UTC)")
        with KeyStore(path) as keys:
            for k in keys.list():
                created = datetime.fromtimestamp(k.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
                table.add_row(k.prefix, k.role, k.collection, k.tenant or "", created)
        console.print(table)

    @keys_app.command("revoke")
    def keys_revoke(prefix: str = typer.Argument(..., help="the key's prefix (`vecpack keys list`)"),
                    path: Path = KEYS_PATH) -> None:
        """Revoke a key: the server refuses it from its next request."""
        from vecpack.server.auth import KeyStore

        with KeyStore(path) as keys:
            keys.revoke(prefix)
        err_console.print(f"revoked {prefix}")

    # -- data
    @app.command("import")
    def import_(
        file: Path = typer.Argument(..., exists=True, dir_okay=False, help=".npy, .jsonl or .parquet"),
        collection: str = COLLECTION, path: Path | None = PATH, url: str | None = URL, api_key: str | None = API_KEY,
        tenant: str | None = TENANT,
        batch_size: int = typer.Option(1000, min=1, help="records per call"),
        upsert: bool = typer.Option(False, "--upsert", help="replace existing ids instead of failing on them"),
        metric: str = typer.Option("cosine", help="for a new collection"),
        codec: str = typer.Option("int8", help="for a new collection"),
        index: str = typer.Option("flat", help="for a new collection"),
        optimize: bool = typer.Option(True, "--optimize/--no-optimize",
                                      help="compress and index the rows at the end (as `vecpack optimize`)"),
    ) -> None:
        """Load records into a collection, creating it (multi-tenant if --tenant) when missing, and leave it
        compressed and indexed.

        .npy: a (n, dim) array, ids = row numbers. .jsonl: one {"id", "vector" or "text", "metadata"} per
        line; text is embedded with all-MiniLM-L6-v2 (embed extra). .parquet: the same columns (pyarrow).
        """
        total, batches = _read_batches(file, batch_size)
        with _open(path, url, api_key) as db, Progress(console=err_console) as progress:
            task = progress.add_task(f"importing {file.name}", total=total)
            col = None
            for ids, vectors, metadata in batches:
                if col is None:
                    col = db.create_collection(collection, dim=vectors.shape[1], metric=metric, codec=codec,
                                               index=index, multi_tenant=tenant is not None, exist_ok=True)
                (col.upsert if upsert else col.add)(ids, vectors, metadata, tenant=tenant)
                progress.advance(task, len(ids))
            if optimize and col is not None:
                with err_console.status(f"compressing and indexing {collection!r}"):
                    col.optimize()
        err_console.print(f"{'upserted' if upsert else 'added'} {total} records to {collection!r}")

    @app.command()
    def export(
        collection: str = COLLECTION, path: Path | None = PATH, url: str | None = URL, api_key: str | None = API_KEY,
        tenant: str | None = TENANT,
        out: Path | None = typer.Option(None, "--out", "-o", help="jsonl file (default: standard output)"),
        batch_size: int = typer.Option(1000, min=1, help="records per call"),
    ) -> None:
        """Write every record as JSON lines {"id", "vector", "metadata"}, in insertion order."""
        with _open(path, url, api_key) as db, Progress(console=err_console) as progress:
            col = db.get_collection(collection)
            task = progress.add_task(f"exporting {collection}", total=col.count(tenant=tenant))
            with open(out, "w") if out else nullcontext(sys.stdout) as f:
                offset = 0
                while records := col.get(limit=batch_size, offset=offset, tenant=tenant):
                    f.writelines(json.dumps({"id": r.id, "vector": r.vector.tolist(), "metadata": r.metadata}) + "\n"
                                 for r in records)
                    offset += len(records)
                    progress.advance(task, len(records))

    @app.command()
    def search(
        collection: str = COLLECTION, path: Path | None = PATH, url: str | None = URL, api_key: str | None = API_KEY,
        tenant: str | None = TENANT,
        vector: str | None = typer.Option(None, help="the query: comma-separated floats or a JSON list"),
        text: str | None = typer.Option(None, help="the query as text, embedded with all-MiniLM-L6-v2 (embed extra)"),
        k: int = typer.Option(10, "--k", "-k", help="results"),
        where: str | None = typer.Option(None, help='metadata filter as JSON, e.g. \'{"year": {"$gte": 2020}}\''),
        rerank: int | None = typer.Option(None, help="candidates re-scored with float32 (default: the codec's)"),
        ef: int | None = typer.Option(None, help="graph index beam width"),
        nprobe: int | None = typer.Option(None, help="IVF lists scanned"),
        as_json: bool = typer.Option(False, "--json", help="one JSON object per hit instead of a table"),
    ) -> None:
        """Nearest records to a vector or a text."""
        if (vector is None) == (text is None):
            _fail("give exactly one of --vector and --text")
        q = _embed([text])[0] if text is not None else _parse_json(vector if vector.startswith("[") else f"[{vector}]",
                                                                   "--vector")
        filt = _parse_json(where, "--where") if where is not None else None
        with _open(path, url, api_key) as db:
            hits = db.get_collection(collection).search(q, k, where=filt, rerank=rerank, ef=ef, nprobe=nprobe,
                                                        tenant=tenant)
        if as_json:
            for h in hits:
                typer.echo(json.dumps({"id": h.id, "score": h.score, "metadata": h.metadata}))
            return
        table = Table("rank", "id", "score", "metadata")
        for rank, h in enumerate(hits, 1):
            meta = escape(json.dumps(h.metadata)) if h.metadata else ""
            table.add_row(str(rank), escape(h.id), f"{h.score:.4f}", meta)
        console.print(table)


def _open(path: Path | None, url: str | None, api_key: str | None) -> Any:
    """The embedded database at ``path`` or the server at ``url`` (same methods; both context managers)."""
    if (path is None) == (url is None):
        _fail("give either --path DIR (a database folder) or --url URL (a server)")
    if url is None:
        import vecpack

        return vecpack.connect(path)
    try:
        from vecpack.client import Client
    except ImportError as exc:
        _fail(f"--url needs the server extra: pip install 'vecpack[server]' ({exc})")
    return Client(url, api_key)


def _fail(message: str) -> NoReturn:
    """Print a one-line error and exit with code 2 (as main does for vecpack errors)."""
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(2)


def _parse_json(text: str, option: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        _fail(f"{option} is not valid JSON: {exc}")


def _embed(texts: list[str]) -> np.ndarray:
    """all-MiniLM-L6-v2 embeddings (the embed extra); a clear error when it is not installed."""
    try:
        return _embedder().embed(texts)
    except ImportError as exc:
        _fail(f"text needs the embed extra: {exc}")


@functools.cache
def _embedder() -> Any:
    """The model, loaded once per process (seconds)."""
    from vecpack.embeddings import Embedder

    return Embedder()


def _read_batches(file: Path, size: int) -> tuple[int, Iterator[Batch]]:
    """(number of records, batches of records) of an import file, by its extension."""
    suffix = file.suffix.lower()
    if suffix == ".npy":
        x = np.load(file, mmap_mode="r")
        if x.ndim != 2:
            _fail(f"{file}: expected a 2-D (n, dim) array, got shape {x.shape}")
        return x.shape[0], ((list(range(a, min(a + size, len(x)))), np.asarray(x[a : a + size], np.float32), None)
                            for a in range(0, len(x), size))
    if suffix == ".jsonl":
        with open(file) as f:
            total = sum(1 for line in f if line.strip())
        return total, _jsonl_batches(file, size)
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            _fail(f"{file}: reading .parquet needs pyarrow (pip install 'vecpack[parquet]')")
        parquet = pq.ParquetFile(file)
        rows = (row for batch in parquet.iter_batches(batch_size=size) for row in batch.to_pylist())
        return parquet.metadata.num_rows, _row_batches(enumerate(rows, 1), size, f"{file}: row")
    _fail(f"{file}: unknown file type {suffix!r}; use .npy, .jsonl or .parquet")


def _jsonl_batches(file: Path, size: int) -> Iterator[Batch]:
    with open(file) as f:
        rows = ((n, _parse_json(line, f"{file}: line {n}")) for n, line in enumerate(f, 1) if line.strip())
        yield from _row_batches(rows, size, f"{file}: line")


def _row_batches(rows: Iterator[tuple[int, Any]], size: int, where: str) -> Iterator[Batch]:
    """Group numbered {"id", "vector" | "text", "metadata"} rows into batches; texts are embedded per batch."""
    batch: list[tuple[int, Any]] = []
    for item in rows:
        batch.append(item)
        if len(batch) == size:
            yield _to_batch(batch, where)
            batch = []
    if batch:
        yield _to_batch(batch, where)


def _to_batch(rows: list[tuple[int, Any]], where: str) -> Batch:
    for n, row in rows:
        if not isinstance(row, dict) or "id" not in row or (row.get("vector") is None) == (row.get("text") is None):
            _fail(f'{where} {n}: expected an object with "id" and one of "vector" or "text"')
    texts = [i for i, (_, row) in enumerate(rows) if row.get("vector") is None]
    embedded = dict(zip(texts, _embed([rows[i][1]["text"] for i in texts]), strict=True)) if texts else {}
    vectors = [embedded[i] if i in embedded else row["vector"] for i, (_, row) in enumerate(rows)]
    metadata = [row.get("metadata") for _, row in rows]
    for i, m in enumerate(metadata):
        if isinstance(m, str):  # parquet: a JSON string column
            metadata[i] = _parse_json(m, f"{where} {rows[i][0]}: metadata")
    try:
        x = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError):
        _fail(f"{where}s {rows[0][0]}..{rows[-1][0]}: vectors must be lists of numbers of one length")
    return [row["id"] for _, row in rows], x, metadata


def _size(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GiB"


def main() -> None:
    """Console-script entry point; maps vecpack errors to exit code 2 with a one-line message."""
    if typer is None:
        sys.exit("the vecpack command needs the CLI extra: pip install 'vecpack[cli]'")
    from vecpack.errors import VecpackError

    try:
        app()
    except VecpackError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        sys.exit(2)


if __name__ == "__main__":
    main()
