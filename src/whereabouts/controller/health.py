"""Health of a long-running process, and the HTTP endpoint serving it with the metrics:

/metrics   every metric (controller.metrics)
/healthz   200 while the process's loops are alive (each loop reports in; a stalled one fails it)
/readyz    200 once the process is up (leader or standby), 503 before
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from whereabouts.controller.metrics import CONTENT_TYPE, Registry


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
                self._answer(200, registry.render(), CONTENT_TYPE)
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
