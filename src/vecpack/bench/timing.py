"""Thread control, best-of-N timing and a description of the machine a benchmark ran on."""

from __future__ import annotations

import datetime as _dt
import gc
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

import numba
import numpy as np


@contextmanager
def limit_threads(n: int, faiss: Any = None) -> Iterator[int]:
    """Run the body with ``n`` threads for numba, BLAS/OpenMP (threadpoolctl) and FAISS.

    Yields the numba thread count actually in effect (capped by ``NUMBA_NUM_THREADS``).
    """
    n = max(1, int(n))
    old_numba = numba.get_num_threads()
    numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
    old_faiss = None
    if faiss is not None:
        old_faiss = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits

        pools = threadpool_limits(limits=n)
    except ImportError:  # BLAS then keeps its own default
        pools = nullcontext()
    try:
        with pools:
            yield numba.get_num_threads()
    finally:
        numba.set_num_threads(old_numba)
        if faiss is not None and old_faiss is not None:
            faiss.omp_set_num_threads(old_faiss)


def best_time(fn: Callable[[], Any], *, repeats: int = 3, min_time_s: float = 0.3, max_repeats: int = 25) -> float:
    """Best wall time (s) of ``fn()`` after one warm-up call.

    Runs at least ``repeats`` times, and more (up to ``max_repeats``) until the
    timed runs add up to ``min_time_s``: on a shared machine the best of runs
    spread over a few hundred milliseconds is far more stable than the best of
    a quick burst. As in ``timeit``, the cyclic garbage collector is off during
    the timed calls (reference counting still frees what they allocate).
    """
    fn()  # warm-up: JIT compilation, page faults, allocator
    times: list[float] = []
    enabled = gc.isenabled()
    gc.collect()
    try:
        while len(times) < repeats or (len(times) < max_repeats and sum(times) < min_time_s):
            gc.disable()
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
            if enabled:
                gc.enable()
    finally:
        if enabled:
            gc.enable()
    return min(times)


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(result, seconds) of one call."""
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def load_average() -> list[float] | None:
    """1, 5 and 15 minute load averages (None where the OS has none): other work competing for the cores."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def cpu_busy(window_s: float = 0.5) -> float | None:
    """Fraction of all cores' time spent busy over ``window_s`` (Linux ``/proc/stat``; None elsewhere).

    Measured before the benchmark starts, it is the share of the machine taken by other processes.
    """

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:9]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    try:
        total0, idle0 = sample()
        time.sleep(window_s)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return round(1.0 - (idle1 - idle0) / (total1 - total0), 3)


THREAD_ENV = (
    "OMP_NUM_THREADS",
    "OMP_WAIT_POLICY",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "NUMBA_NUM_THREADS",
    "NUMBA_THREADING_LAYER",
)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(faiss: Any = None) -> dict[str, Any]:
    """CPU, core count, library versions, BLAS and threading layers, date (UTC)."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "numba_max_threads": numba.config.NUMBA_NUM_THREADS,
        "faiss": getattr(faiss, "__version__", None) if faiss is not None else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "load_average": load_average(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
    }
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:  # no parallel kernel has run yet
        info["numba_threading_layer"] = None
    try:
        from threadpoolctl import threadpool_info

        info["threadpools"] = [
            {k: p.get(k) for k in ("user_api", "internal_api", "version", "num_threads", "filepath")}
            for p in threadpool_info()
        ]
    except ImportError:
        info["threadpools"] = None
    return info
