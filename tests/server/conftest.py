"""A real uvicorn server on loopback (a thread of the test process), its admin key and a client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
uvicorn = pytest.importorskip("uvicorn")

import vecpack  # noqa: E402
from vecpack.server import KeyStore, Limits, create_app  # noqa: E402

START_TIMEOUT_S = 60.0  # a loaded 2-core machine can take 20 s to import and start a server


@contextmanager
def running(path: Path, *, limits: Limits | None = None, auth: bool = True) -> Iterator[str]:
    """Serve ``path`` on a free loopback port until the block ends; yields the base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    server = uvicorn.Server(uvicorn.Config(create_app(path, limits=limits or Limits(), auth=auth), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        wait_healthy(url, lambda: thread.is_alive())
        yield url
    finally:
        server.should_exit = True
        thread.join(START_TIMEOUT_S)
        sock.close()
        assert not thread.is_alive(), "the server did not stop"


def wait_healthy(url: str, alive: Callable[[], bool]) -> None:
    """Poll GET /health until it answers 200; fail after START_TIMEOUT_S or if the server died."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        assert alive(), "the server exited while starting"
        try:
            if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{url} did not become healthy within {START_TIMEOUT_S} s")


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "served"


@pytest.fixture
def admin_key(db_path) -> str:
    with KeyStore(db_path) as keys:
        return keys.create("admin")


@pytest.fixture
def server(db_path, admin_key) -> Iterator[str]:
    """The URL of a server with auth on (default limits) over ``db_path``."""
    with running(db_path) as url:
        yield url


@pytest.fixture
def client(server, admin_key) -> Iterator[vecpack.Client]:
    with vecpack.Client(server, api_key=admin_key) as c:
        yield c
