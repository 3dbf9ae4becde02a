"""Prometheus metrics of one server (its own registry, so several apps can live in one process)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("segtool_requests_total", "HTTP requests by route and status",
                                ["route", "status"], registry=self.registry)  # fmt: skip
        self.latency = Histogram("segtool_request_seconds", "HTTP request latency by route", ["route"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.inference = Histogram("segtool_inference_seconds", "Time on the inference worker (decode, model, encode)",
                                   buckets=LATENCY_BUCKETS, registry=self.registry)  # fmt: skip
        self.in_progress = Gauge("segtool_inference_in_progress", "Model calls running now", registry=self.registry)
        self.queue = Gauge("segtool_queue_depth", "Requests waiting for the inference worker", registry=self.registry)
        self.rejected = Counter("segtool_rejected_total", "Requests refused with 503 (queue full)",
                                registry=self.registry)  # fmt: skip
        self.abandoned = Counter("segtool_abandoned_total", "Requests whose work was stopped (deadline, client "
                                 "gone, shutdown)", ["reason"], registry=self.registry)  # fmt: skip
