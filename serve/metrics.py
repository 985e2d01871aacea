"""Prometheus metrics of one server, in their own registry (several servers can share a process).

Request metrics are recorded by the data plane, so every protocol on the port counts alike;
`code` is the canonical status name the transport answers with (OK, NOT_FOUND, ...).

    metrics = ServeMetrics()
    metrics.serve_http(0)   # -> the bound port; GET /metrics
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)
_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0,
)  # fmt: skip
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServeMetrics:
    """Requests, latency, batch sizes, queue depth and loaded versions."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "clfserve_requests",
            "Classification requests by model, version and status code",
            ["model", "version", "code"],
            registry=self.registry,
        )
        self.images = Counter(
            "clfserve_images", "Inputs classified", ["model", "version"], registry=self.registry
        )
        self.latency = Histogram(
            "clfserve_request_seconds",
            "Classification request latency inside the server",
            ["model"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "clfserve_batch_size",
            "Images per model call",
            ["model", "version"],
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "clfserve_queue_depth",
            "Requests waiting for a batch",
            ["model", "version"],
            registry=self.registry,
        )
        self.loaded_versions = Gauge(
            "clfserve_loaded_versions",
            "Versions loaded and available",
            ["model"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "clfserve_auth_failures",
            "Calls refused for their bearer token, by reason (missing, malformed, wrong)",
            ["reason"],
            registry=self.registry,
        )
        self._auth = {r: self.auth_failures.labels(r) for r in ("missing", "malformed", "wrong")}
        self._http: tuple[WSGIServer, threading.Thread] | None = None
        self._children: dict[tuple[str, int | None, str], tuple[Any, Any, Any]] = {}

    def observe_request(
        self, model: str, version: int | None, code: str, seconds: float, images: int
    ) -> None:
        key = (model, version, code)
        children = self._children.get(key)
        if children is None:  # labels() takes a lock and builds tuples: once per key
            label = str(version) if version is not None else ""
            children = (
                self.requests.labels(model, label, code),
                self.latency.labels(model),
                self.images.labels(model, label) if code == "OK" else None,
            )
            self._children[key] = children
        requests, latency, classified = children
        requests.inc()
        latency.observe(seconds)
        if classified is not None:
            classified.inc(images)

    def auth_failed(self, reason: str) -> None:
        """Count one call refused for its token (`reason`: missing, malformed or wrong)."""
        self._auth[reason].inc()

    def batch_observer(self, model: str, version: int) -> Callable[[int, int], None]:
        """A callback for one version's batcher: (images in the batch, requests still queued)."""
        batch_size = self.batch_size.labels(model, str(version))
        depth = self.queue_depth.labels(model, str(version))

        def observe(images: int, queued: int) -> None:
            batch_size.observe(images)
            depth.set(queued)

        return observe

    def serve_http(self, port: int, host: str = "0.0.0.0") -> int:
        """Serve /metrics on `port` (0 picks a free port) in a daemon thread; returns the port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http = (server, thread)
        bound = int(server.server_port)
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            server, thread = self._http
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
            self._http = None
