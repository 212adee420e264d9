"""README.md runs as written: every code block in order, in a fresh folder; shell lines through bash (the
`vecpack serve` line in the background, on a free port), python blocks with exec. Two placeholders are
filled in: the port 8000 (a free one) and `vpk_...` (the last key `vecpack keys create` printed). `make` and
`pip install` lines are what `make test` itself ran: they are checked to name a Makefile target and an extra."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

from conftest import wait_healthy

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.S | re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_readme_block_runs_as_written(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    port, keys, server, ran = free_port(), [], None, []
    try:
        text = README.read_text()
        for block in BLOCK.finditer(text):
            lang, code = block.groups()
            code = code.replace("8000", str(port))
            if lang == "python":
                code = code.replace("vpk_...", keys[-1]) if keys else code
                namespace: dict = {}
                first_line = text.count("\n", 0, block.start(2))  # tracebacks and warnings name README lines
                exec(compile("\n" * first_line + code, "README.md", "exec"), namespace)
                check_python(namespace)
                ran.append("python block")
                continue
            assert lang == "bash", lang
            for line in code.splitlines():
                line = line.replace("vpk_...", keys[-1]) if keys else line
                words = line.split()
                if words[:1] == ["make"]:
                    assert re.search(rf"^{words[1]}:", (ROOT / "Makefile").read_text(), re.M), line
                elif words[:2] == ["pip", "install"]:
                    extra = re.fullmatch(r"'\.\[(\w+)\]'", words[3]).group(1)
                    assert extra in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
                        "optional-dependencies"], line
                elif words[:2] == ["vecpack", "serve"]:
                    server = subprocess.Popen(["bash", "-c", line], env=env, start_new_session=True)
                    wait_healthy(f"http://127.0.0.1:{port}", lambda s=server: s.poll() is None)
                else:
                    out = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=300)
                    assert out.returncode == 0, (line, out.stdout, out.stderr)
                    if words[:3] == ["vecpack", "keys", "create"]:
                        keys.append(out.stdout.strip())
                    check_shell(words, out.stdout)
                ran.append(words[0])
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
    assert ran.count("python block") == 3 and "vecpack" in ran and "make" in ran  # no block was skipped


def check_python(namespace: dict) -> None:
    """What each python block shows, by the names it leaves."""
    hits = namespace.get("hits")
    if "col" in namespace and "mt" not in namespace:  # the ten lines
        assert Path("my.db", "docs", "catalog.sqlite").is_file()
        assert len(hits) == 1 and hits[0].id == "a"
    elif "mt" in namespace:  # filters and tenants
        assert hits and all(h.metadata["year"] >= 2015 and h.metadata["lang"] in ("en", "de") for h in hits)
        assert namespace["col"].explain(where={"year": 2020})["matches"] == 10
    else:  # the client, with the tenant-pinned key
        assert len(hits) == 10 and all(h.metadata["year"] >= 2050 for h in hits)


def check_shell(words: list[str], stdout: str) -> None:
    if words[:2] == ["vecpack", "info"]:
        assert "notes" in stdout and "100" in stdout
    if words[:2] == ["vecpack", "search"]:
        assert stdout.count("│") > 10  # a table of hits
