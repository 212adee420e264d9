"""Prometheus text metrics: requests by route and status, a latency histogram per route."""

from __future__ import annotations

import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Request counters and latency histograms, shared by the server's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: Counter[tuple[str, str, int]] = Counter()
        self._buckets: defaultdict[str, list[int]] = defaultdict(lambda: [0] * len(BUCKETS))
        self._sum: Counter[str] = Counter()
        self._count: Counter[str] = Counter()

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._requests[method, route, status] += 1
            buckets = self._buckets[route]
            for i, edge in enumerate(BUCKETS):
                if seconds <= edge:
                    buckets[i] += 1
            self._sum[route] += seconds
            self._count[route] += 1

    def render(self, collections: Iterable[tuple[str, int, int]]) -> str:
        """The exposition text; ``collections`` are (name, live records, maintenance failures) triples."""
        out = ["# HELP vecpack_requests_total HTTP requests by method, route and status.",
               "# TYPE vecpack_requests_total counter"]
        with self._lock:
            for (method, route, status), n in sorted(self._requests.items()):
                out.append(f'vecpack_requests_total{{method="{method}",route="{route}",status="{status}"}} {n}')
            out += ["# HELP vecpack_request_seconds Request latency by route.",
                    "# TYPE vecpack_request_seconds histogram"]
            for route, buckets in sorted(self._buckets.items()):
                for edge, n in zip(BUCKETS, buckets, strict=True):
                    out.append(f'vecpack_request_seconds_bucket{{route="{route}",le="{edge}"}} {n}')
                out.append(f'vecpack_request_seconds_bucket{{route="{route}",le="+Inf"}} {self._count[route]}')
                out.append(f'vecpack_request_seconds_sum{{route="{route}"}} {self._sum[route]:.6f}')
                out.append(f'vecpack_request_seconds_count{{route="{route}"}} {self._count[route]}')
        collections = list(collections)
        out += ["# HELP vecpack_collections Collections in the database.", "# TYPE vecpack_collections gauge",
                f"vecpack_collections {len(collections)}",
                "# HELP vecpack_collection_records Live records per collection.",
                "# TYPE vecpack_collection_records gauge"]
        out += [f'vecpack_collection_records{{collection="{name}"}} {n}' for name, n, _ in collections]
        out += ["# HELP vecpack_maintenance_failures_total Seals after committed writes that failed (the writes "
                "stand; stats() has the last error).", "# TYPE vecpack_maintenance_failures_total counter"]
        out += [f'vecpack_maintenance_failures_total{{collection="{name}"}} {f}' for name, _, f in collections]
        return "\n".join(out) + "\n"


class MetricsMiddleware:
    """ASGI middleware timing every HTTP request; labels it with its route template (not the raw path)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            self.metrics.observe(scope["method"], getattr(route, "path", "unmatched"), status,
                                 time.perf_counter() - start)
