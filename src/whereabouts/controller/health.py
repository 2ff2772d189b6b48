"""Health of a long-running process, and the HTTP endpoint serving it with the metrics.

- /metrics: every metric (controller.metrics), `whereabouts_ready` among them (1 while /readyz says 200)
- /healthz: 200 while the process's loops are alive (each loop reports in; a stalled one fails it)
- /readyz: 200 once the process is up (leader or standby) and every controller can read what it needs;
  503 before, and while one cannot (the API server down, a CRD not installed), saying which

A controller that cannot read what it needs says so once in the log (`Health.failing`), retries with backoff
(`Backoff`), releases nothing meanwhile (a pass that cannot read everything it decides from is not applied),
and says so once more when it works again (`Health.working`).
"""

from __future__ import annotations

import random
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from whereabouts.controller.metrics import CONTENT_TYPE, Registry
from whereabouts.errors import WhereaboutsError
from whereabouts.kube.client import APIError

ALLOWANCE = 120.0  # seconds a loop may go without a beat before /healthz fails (unless it said otherwise)
PULSE = 10.0  # seconds between the beats of a loop waiting in its own backoff (well within any allowance)


class Backoff:
    """The waits between retries of one loop: doubling from `first` to `cap` seconds, each drawn between half
    and all of that (replicas and loops failing together do not retry in step); `reset` after a success.
    `alive`: called every PULSE seconds while waiting (the loop's beat: a loop waiting in its own backoff, up
    to 5 minutes for the reconciler, is not stalled)."""

    def __init__(self, first: float = 1.0, cap: float = 30.0, *, alive: Callable[[], None] | None = None) -> None:
        self.first, self.cap, self.next = first, cap, first
        self.alive = alive

    def wait(self, stop: threading.Event) -> bool:
        """Wait the next delay, or until `stop`; True if stopped."""
        delay = random.uniform(self.next / 2, self.next)
        self.next = min(self.cap, self.next * 2)
        if self.alive is None:
            return stop.wait(delay)
        until = time.monotonic() + delay
        while (left := until - time.monotonic()) > 0:
            self.alive()
            if stop.wait(min(left, PULSE)):
                return True
        return False

    def reset(self) -> None:
        self.next = self.first


def dependency(exc: Exception) -> str:
    """What a failure says is missing: the API server, a resource (a CRD not installed), or the access; ""
    when it says none."""
    if not isinstance(exc, APIError):
        return ""
    if exc.status == 404:
        return f"the resource {resource_of(exc.path)}"
    if exc.status in (401, 403):
        return "access to the Kubernetes API"
    return "the Kubernetes API"


def resource_of(path: str) -> str:
    """'<plural>.<group>' (or '<plural>' of the core API) of an API path."""
    parts = path.partition("?")[0].strip("/").split("/")
    for i, part in enumerate(parts):
        if part in ("api", "apis") and len(parts) > i + 2:
            group, rest = (parts[i + 1], parts[i + 3 :]) if part == "apis" else ("", parts[i + 2 :])
            if len(rest) >= 3 and rest[0] == "namespaces":
                rest = rest[2:]
            plural = rest[0] if rest else "?"
            return f"{plural}.{group}" if group else plural
    return path


class Health:
    """Liveness by heartbeat: each loop calls `beat(name)` as it goes round, and as it makes progress inside a
    long pass (per item written) or waits in its own backoff; a loop silent for longer than its allowance
    (one call that never returns) makes /healthz fail, so the kubelet restarts a wedged process."""

    def __init__(self) -> None:
        self.beats: dict[str, tuple[float, float]] = {}  # name -> (last beat, allowance in seconds)
        self.ready = threading.Event()
        self.problems: dict[tuple[str, str], str] = {}  # (component, what it cannot reach) -> the last error
        self.lock = threading.Lock()

    def failing(self, component: str, exc: Exception, log: Callable[[str], None]) -> None:
        """`component` cannot work for `exc`: in /readyz until it works again, in the log once."""
        key = (component, dependency(exc))
        message = exc.msg if isinstance(exc, WhereaboutsError) else f"{type(exc).__name__}: {exc}"
        with self.lock:
            new = key not in self.problems
            self.problems[key] = message
        if new:
            log(f"{component}: {_trouble(key[1])} ({message}); retrying with backoff, releasing nothing meanwhile")

    def working(self, component: str, log: Callable[[str], None]) -> None:
        """`component` read everything it needed: what it could not reach before is back."""
        with self.lock:
            back = [key for key in self.problems if key[0] == component]
            for key in back:
                del self.problems[key]
        for _, what in back:
            log(f"{component}: {what} available again; resumed" if what else f"{component}: resumed")

    def readiness(self) -> tuple[bool, str]:
        if not self.ready.is_set():
            return False, "not started yet\n"
        with self.lock:
            problems = sorted(self.problems.items())
        if problems:
            return False, "".join(f"{component}: {_trouble(what)}: {error}\n" for (component, what), error in problems)
        return True, "ok\n"

    def beat(self, name: str, allowance: float | None = None) -> None:
        """`name` is alive now. `allowance`: the seconds it may go silent; None keeps what the loop last said
        (a beat from inside a pass does not shorten its loop's own), else ALLOWANCE."""
        if allowance is None:
            allowance = self.beats.get(name, (0.0, ALLOWANCE))[1]
        self.beats[name] = (time.monotonic(), allowance)

    def stalled(self) -> list[str]:
        now = time.monotonic()
        return [name for name, (last, allowance) in list(self.beats.items()) if now - last > allowance]


def _trouble(what: str) -> str:
    return f"{what} unavailable" if what else "failing"


class _ServerV6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


def serve(address: str, port: int, registry: Registry, health: Health) -> ThreadingHTTPServer:
    """Start the metrics and health endpoint on a daemon thread; returns the server (its port may be 0).
    `address` may be IPv6 (a pod's IP on an IPv6 node)."""
    if "whereabouts_ready" not in registry.metrics:  # a process serving two endpoints counts once
        ready = registry.gauge("ready", "1 while the process is up and can read what it needs (/readyz), else 0")
        registry.on_render(lambda: ready.set(1 if health.readiness()[0] else 0))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, registry.render(), CONTENT_TYPE)
            elif self.path == "/healthz":
                stalled = health.stalled()
                self._answer(503 if stalled else 200, f"stalled: {', '.join(stalled)}\n" if stalled else "ok\n")
            elif self.path == "/readyz":
                ready, text = health.readiness()
                self._answer(200 if ready else 503, text)
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

    server = (_ServerV6 if ":" in address else ThreadingHTTPServer)((address, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server
