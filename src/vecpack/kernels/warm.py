"""Compile the kernels in the background, so that a fresh install's first calls do not wait for numba.

numba compiles a kernel on its first call in a process and keeps the machine code in its on-disk cache
(``cache=True``), so only the first process after an install pays: seconds per kernel, minutes in all.
``start()`` (``vecpack.connect`` calls it) runs ``python -m vecpack.kernels.warm`` in a child process, which
runs small real workloads group by group (``EXERCISES``, in the order a new user meets them) and reports each
group as it finishes; from then on this process loads that group's kernels from the cache in milliseconds.
Until then the entry points that ask ``ready(group)`` answer with plain-numpy twins (``kernels.twins``).
A stamp keyed by the kernels' sources, numba, Python, the CPU and the cache folder records a finished
warm-up, so later processes start none. ``VECPACK_WARMUP=0`` turns all of this off: kernels compile on
first use, as numba does. While an index's group compiles, collections of up to FLAT_ROWS rows are
scanned flat (``search.search_rows``) and background maintenance builds their index once it is ready
(``storage.background.index_now``); a larger one, or one without background maintenance, compiles it.
A child that fails or hangs (killed after TIMEOUT_S; its stderr is in ``warm.log`` beside the stamp) turns
the warm-up off in its parent: kernels then compile on first use.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np


@dataclass
class _Status:
    """This process's view of the warm-up."""

    enabled: bool = False  # a warm-up was started (or found running elsewhere): ask ready()
    everything: bool = False  # every group is ready (the stamp exists, or our child said done)
    started: bool = False  # start() ran
    stamp: Path | None = None
    checked: float = 0.0  # when we last looked for the stamp
    groups: set[str] = field(default_factory=set)  # groups our child reported


_status = _Status()
_lock = threading.Lock()
#: seconds between looks for another process's stamp, while waiting on its warm-up
STAMP_POLL_S = 0.5
#: a warm-up still running after this long (blocked, or a hung workload) is killed (one takes ~2 min on 2 cores)
TIMEOUT_S = 1_800
#: while an index's kernels compile, collections of up to this many sealed rows are scanned flat instead
#: (numpy twins: about 0.1 s per query at 100k int8 rows of 384 dims, against seconds of compiling)
FLAT_ROWS = 100_000


def ready(group: str) -> bool:
    """Whether this process may call ``group``'s kernels without compiling them (always, with warm-up off)."""
    st = _status
    if not st.enabled or st.everything or group in st.groups:
        return True
    now = time.monotonic()
    if now - st.checked > STAMP_POLL_S and st.stamp is not None:  # another process may be warming this cache
        st.checked = now
        st.everything = st.stamp.exists()
    return st.everything


def ready_for(family: str) -> bool:
    """``ready`` for the group whose workload compiles a codec family's kernels (others compile on first use)."""
    return ready(FAMILY_GROUPS[family]) if family in FAMILY_GROUPS else True


def start() -> None:
    """Start the background warm-up once per process, unless it is off, done, or running in another process."""
    st = _status
    with _lock:
        if st.started:
            return
        st.started = True
        if os.environ.get("VECPACK_WARMUP", "1") == "0":
            return
        st.stamp = stamp_path()
        if st.stamp.exists():
            st.enabled = st.everything = True
            return
        package_root = str(Path(__file__).resolve().parents[2])  # the child imports this very vecpack
        env = os.environ | {"VECPACK_WARMUP": "0", "VECPACK_MAINTENANCE": "0",  # the workloads, nothing else
                            "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        try:
            st.stamp.parent.mkdir(parents=True, exist_ok=True)
            with open(st.stamp.parent / "warm.log", "w") as log:  # why a warm-up failed, if it does
                child = subprocess.Popen([sys.executable, "-m", "vecpack.kernels.warm", str(st.stamp)], env=env,
                                         stdout=subprocess.PIPE, stderr=log, text=True,
                                         start_new_session=True)  # it finishes the cache even if we exit
        except OSError:  # no cache folder or no process to spare: compile on first use
            return
        st.enabled = True
        threading.Thread(target=_follow, args=(child,), name="vecpack-warm", daemon=True).start()


def _follow(child: subprocess.Popen) -> None:
    """Mark the groups the child reports."""
    assert child.stdout is not None
    for line in child.stdout:
        word, _, group = line.strip().partition(" ")
        if word == "ready":
            _status.groups.add(group)
        elif word == "done":
            _status.everything = True
    child.wait()
    if child.returncode != 0 and not _status.everything:  # it failed: the rest compiles on first use
        _status.enabled = False


def stamp_path() -> Path:
    """Where a finished warm-up of these kernels, with this numba, Python, CPU and cache folder, leaves its
    stamp (``$VECPACK_CACHE/warm`` or ``~/.cache/vecpack/warm``)."""
    digest = hashlib.sha256()
    for source in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(source.read_bytes())
    # where numba keeps the cache: beside these sources (one per install) unless NUMBA_CACHE_DIR moves it
    for part in (numba.__version__, np.__version__, sys.version, platform.machine(), _cpu_name(),
                 str(Path(__file__).resolve().parent), os.environ.get("NUMBA_CACHE_DIR", "")):
        digest.update(part.encode())
    root = os.environ.get("VECPACK_CACHE")
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "vecpack"
    return base / "warm" / digest.hexdigest()[:24]


def _cpu_name() -> str:
    from llvmlite import binding

    return binding.get_host_cpu_name()


# -- the child ------------------------------------------------------------------------------------------------
def _exercise(codec: str, index: str = "flat", n: int = 96, multi_tenant: bool = False,
              dim: int = 24) -> Callable[[], None]:
    """A small workload of one collection kind: add, search (one query, a few, a batch; filtered; re-ranked),
    optimize, and the same searches over sealed (and indexed) rows. With n >= 1,000 rows (``MIN_TUNE_ROWS``)
    optimize also measures the codec's fidelity, as it does on a user's collection."""

    def run() -> None:
        import vecpack

        rng = np.random.default_rng(0)
        x = rng.normal(size=(n, dim)).astype(np.float32)
        meta = [{"g": i % 4} for i in range(n)]
        with vecpack.connect() as db:
            col = db.create_collection("w", dim=dim, codec=codec, index=index, multi_tenant=multi_tenant)
            tenant = "t" if multi_tenant else None
            col.add(list(range(n)), x, meta, tenant=tenant)
            for _ in range(2):  # growing rows, then sealed (and indexed) ones
                for m in (1, 4, 20, 40):
                    col.search(x[:m], 5, tenant=tenant)
                    col.search(x[:m], 5, rerank=10, tenant=tenant)
                    col.search(x[:m], 5, where={"g": 1}, tenant=tenant)
                col.optimize()

    return run


def _all(*workloads: Callable[[], None]) -> Callable[[], None]:
    """One workload that runs several."""

    def run() -> None:
        for workload in workloads:
            workload()

    return run


#: the group whose workload compiles a codec family's scans
FAMILY_GROUPS = {"float32": "scan", "int8": "int8", "float16": "float16", "binary": "binary", "pq": "pq"}
#: (group, workload) in the order a new user meets them; ``ready(group)`` is true once its workload ran
EXERCISES: list[tuple[str, Callable[[], None]]] = [
    ("scan", _exercise("float32")),
    ("int8", _exercise("int8")),
    ("float16", _exercise("float16")),
    ("graph", _exercise("int8", "graph", n=1_100)),
    ("ivf", _exercise("int8", "ivf", n=1_100)),
    ("tenants", _exercise("int8", "graph", n=1_100, multi_tenant=True)),
    # the binary kernels are compiled per code width (``binary.shape_token``): the widths of 384 and 256 dims
    # (all-MiniLM-L6-v2, WordLlama); other widths compile on first use
    ("binary", _all(_exercise("binary", n=1_100, dim=384), _exercise("binary", n=1_100, dim=256))),
    ("pq", _exercise("pq8", n=1_100)),  # PQ trains on >= 256 rows: fewer would never encode
]


def main(stamp: Path) -> None:
    """Run every workload, report each group on stdout, then leave the stamp (under a lock: one at a time)."""
    try:
        os.nice(5)  # the user's own work comes first
    except OSError:
        pass
    signal.alarm(TIMEOUT_S)  # a hung warm-up dies, and its parent compiles on first use
    with open(stamp.parent / "warm.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process's warm-up of the same cache: wait, then find it done
        if not stamp.exists():
            for group, workload in EXERCISES:
                try:
                    workload()
                except Exception:  # a failed workload leaves its kernels to compile on first use
                    continue
                _report(f"ready {group}")
            with tempfile.NamedTemporaryFile("w", dir=stamp.parent, delete=False) as f:
                f.write(time.strftime("%Y-%m-%dT%H:%M:%S"))
            os.replace(f.name, stamp)
    _report("done")


def _report(line: str) -> None:
    """Tell the parent; once it has exited (a closed pipe), go on warming the cache for the next process."""
    try:
        print(line, flush=True)
    except OSError:
        sys.stdout = open(os.devnull, "w")  # stdout for the rest of this process


if __name__ == "__main__":
    main(Path(sys.argv[1]))
