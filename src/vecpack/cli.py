"""The ``vecpack`` command line (Typer + Rich): a thin adapter over the library."""

from __future__ import annotations

import sys
from pathlib import Path

try:
    import typer
    from rich.console import Console
except ImportError:  # the CLI is an extra: pip install 'vecpack[cli]'
    typer = None

if typer is not None:
    app = typer.Typer(help="vecpack: a compression-first embedded vector database.", no_args_is_help=True)
    console = Console()

    @app.command()
    def demo() -> None:
        """Compare every codec with float32 on real text (SciFact embeddings, or pydoc topics embedded offline)."""
        from vecpack.demo import run_demo

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
        from vecpack.benchmark import run_benchmark

        run_benchmark(dataset, out, codecs=[c for c in codecs.split(",") if c] or None, n_queries=queries,
                      peers=peers)

    @app.command()
    def info(path: Path = typer.Argument(..., help="database folder")) -> None:
        """List the collections of a database with their sizes."""
        import vecpack

        with vecpack.connect(path) as db:
            for name in db.list_collections():
                console.print(db.get_collection(name).stats())


def main() -> None:
    """Console-script entry point; maps vecpack errors to exit code 2 with a one-line message."""
    if typer is None:
        sys.exit("the vecpack command needs the CLI extra: pip install 'vecpack[cli]'")
    from vecpack.errors import VecpackError

    try:
        app()
    except VecpackError as exc:
        console.print(f"[red]error:[/red] {exc}")
        sys.exit(2)


if __name__ == "__main__":
    main()
