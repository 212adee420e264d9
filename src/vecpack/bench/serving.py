"""``vecpack serve`` as a child process on a loopback port, for the benchmarks that measure through HTTP
(``vecpack.bench.loadtest`` behind ``bench/load.py``, ``bench/stress.py``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m vecpack.cli serve`` over ``folder`` on ``port``, logging to ``log``; ``auth`` False adds
    ``--no-auth``, ``env`` replaces the environment. A context manager: leaving it SIGKILLs the process."""

    def __init__(self, folder: Path, port: int, log: Path, *, auth: bool = True,
                 env: dict[str, str] | None = None) -> None:
        self.folder, self.port, self.log, self.auth, self.env = folder, port, log, auth, env
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float) -> float:
        """Start the process and wait until /health answers; returns the seconds that took. RuntimeError with
        the log's tail if it exits first or does not answer within ``timeout`` seconds."""
        t0 = time.perf_counter()
        command = [sys.executable, "-m", "vecpack.cli", "serve", "--path", str(self.folder), "--host", "127.0.0.1",
                   "--port", str(self.port), "--log-level", "warning", *([] if self.auth else ["--no-auth"])]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        while time.perf_counter() < t0 + timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1.0).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"the server did not answer /health within {timeout} s:\n{self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL the process and reap it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait()

    def stop(self, timeout: float) -> int:
        """Graceful shutdown (SIGTERM: uvicorn finishes requests and closes the database); the exit code,
        0 when it exited cleanly (uvicorn re-raises the signal after shutting down: -SIGTERM counts as 0).
        RuntimeError, after a SIGKILL, if it ignores SIGTERM for ``timeout`` seconds."""
        assert self.proc is not None, "the server was never started"
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
            return 0 if code == -signal.SIGTERM else code
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"the server ignored SIGTERM for {timeout} s:\n{self.log_tail()}") from None

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds the running process has used (Linux ``/proc``; None elsewhere)."""
        assert self.proc is not None, "the server was never started"
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return None
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()
