"""Prometheus metrics in the text exposition format, and the HTTP endpoint serving them with health checks.

    /metrics   every metric below
    /healthz   200 while the process's loops are alive (each loop reports in; a stalled one fails it)
    /readyz    200 once the first sync is done (leader or standby), 503 before

Metric names (all prefixed `whereabouts_`) are documented in docs/controllers.md.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Labels = tuple[tuple[str, str], ...]
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class Metric:
    def __init__(self, name: str, help_text: str, kind: str) -> None:
        self.name, self.help, self.kind = name, help_text, kind
        self.values: dict[Labels, float] = {}
        self.lock = threading.Lock()

    def _key(self, labels: dict[str, str]) -> Labels:
        return tuple(sorted(labels.items()))

    def inc(self, amount: float = 1, **labels: str) -> None:
        with self.lock:
            key = self._key(labels)
            self.values[key] = self.values.get(key, 0) + amount

    def set(self, value: float, **labels: str) -> None:
        with self.lock:
            self.values[self._key(labels)] = value

    def value(self, **labels: str) -> float:
        return self.values.get(self._key(labels), 0)

    def forget(self, keep: Iterable[dict[str, str]]) -> None:
        """Drop the label sets not in `keep` (a pool that was deleted stops being reported)."""
        wanted = {self._key(labels) for labels in keep}
        with self.lock:
            self.values = {k: v for k, v in self.values.items() if k in wanted}

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        with self.lock:
            lines += [f"{self.name}{_labels(key)} {_number(value)}" for key, value in sorted(self.values.items())]
        return lines


class Histogram(Metric):
    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...] = DURATION_BUCKETS) -> None:
        super().__init__(name, help_text, "histogram")
        self.buckets = buckets
        self.observations: dict[Labels, list[float]] = {}

    def observe(self, value: float, **labels: str) -> None:
        with self.lock:
            self.observations.setdefault(self._key(labels), []).append(value)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        with self.lock:
            for key, seen in sorted(self.observations.items()):
                for bound in self.buckets:
                    count = sum(1 for v in seen if v <= bound)
                    lines.append(f"{self.name}_bucket{_labels((*key, ('le', _number(bound))))} {count}")
                lines.append(f"{self.name}_bucket{_labels((*key, ('le', '+Inf')))} {len(seen)}")
                lines.append(f"{self.name}_sum{_labels(key)} {_number(sum(seen))}")
                lines.append(f"{self.name}_count{_labels(key)} {len(seen)}")
        return lines


class Registry:
    def __init__(self) -> None:
        self.metrics: dict[str, Metric] = {}

    def counter(self, name: str, help_text: str) -> Metric:
        return self._add(Metric(f"whereabouts_{name}", help_text, "counter"))

    def gauge(self, name: str, help_text: str) -> Metric:
        return self._add(Metric(f"whereabouts_{name}", help_text, "gauge"))

    def histogram(self, name: str, help_text: str) -> Histogram:
        metric = self._add(Histogram(f"whereabouts_{name}", help_text))
        assert isinstance(metric, Histogram)
        return metric

    def _add(self, metric: Metric) -> Metric:
        return self.metrics.setdefault(metric.name, metric)

    def render(self) -> str:
        return "\n".join(line for metric in self.metrics.values() for line in metric.render()) + "\n"


class Health:
    """Liveness by heartbeat: each loop calls `beat(name)`; a loop silent for longer than its allowance
    makes /healthz fail, so the kubelet restarts a wedged process."""

    def __init__(self) -> None:
        self.beats: dict[str, tuple[float, float]] = {}  # name -> (last beat, allowance in seconds)
        self.ready = threading.Event()

    def beat(self, name: str, allowance: float = 120.0) -> None:
        self.beats[name] = (time.monotonic(), allowance)

    def stalled(self) -> list[str]:
        now = time.monotonic()
        return [name for name, (last, allowance) in self.beats.items() if now - last > allowance]


def serve(address: str, port: int, registry: Registry, health: Health) -> ThreadingHTTPServer:
    """Start the metrics and health endpoint on a daemon thread; returns the server (its port may be 0)."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, registry.render(), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                stalled = health.stalled()
                self._answer(503 if stalled else 200, f"stalled: {', '.join(stalled)}\n" if stalled else "ok\n")
            elif self.path == "/readyz":
                ready = health.ready.is_set()
                self._answer(200 if ready else 503, "ok\n" if ready else "not synced yet\n")
            else:
                self._answer(404, "not found\n")

        def _answer(self, status: int, body: str, content_type: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes and probes are not actions worth a log line

    server = ThreadingHTTPServer((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def _labels(key: Labels) -> str:
    if not key:
        return ""
    inner = ",".join(f'{name}="{_escape(value)}"' for name, value in key)
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
