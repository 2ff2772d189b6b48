"""The node daemon's metrics: what it served, how fast, in what group-commit rounds, what its stores did, and
the calls it could not serve (docs/metrics.md lists them all).

The daemon alone records: a CNI process never imports this (nor prometheus_client). Every label is bounded
whatever the callers send: a verb is one of the CNI verbs or "other", a code is the CNI error code the answer
carries (the plugin's own error classes give it), a datastore is one of the three kinds, an error is the class
of the exception a store raised.

Fallbacks the daemon cannot see (it was not there, or did not answer) are bytes the executable appends to the
file `fallbacks` beside the socket (whereabouts.cni.main says which byte means what). `FallbackFile.take`
consumes them: it renames the file to a name of its own (callers then start a new one), reads it, removes it,
and only then are its bytes counted. So a byte is counted once, by whichever daemon removed it: a daemon that
dies after the rename leaves the renamed file, which the next one counts; one that dies after the removal
loses those few bytes rather than count them twice. (A caller that opened the file just before the rename and
writes just after the read loses its byte: a window of microseconds.) The file is consumed at start, at each
scrape and at least every minute, so it stays a few bytes long however long the node runs.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Hashable

from whereabouts.cni.main import FALLBACKS
from whereabouts.controller.metrics import Registry

TYPE_CHECKING = False
if TYPE_CHECKING:
    from whereabouts.config import StoreSettings
    from whereabouts.node.runtime import StorePool

VERBS = ("ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION")
# The executable's bytes (whereabouts.cni.main), then the daemon's own declines.
FALLBACK_BYTES = {ord("n"): "stopped", ord("u"): "unreachable", ord("d"): "died", ord("b"): "busy"}
DECLINES = ("size", "in_flight", "local_dir", "descriptors", "files")
REASONS = (*FALLBACK_BYTES.values(), *DECLINES, "unknown")
CALL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)  # batch.MAX_BATCH is 64
TAKEN = ".fallbacks.counting"  # the daemon's own name for the file it is counting
TAKE_EVERY = 60.0  # seconds: the file is consumed at least this often, scraped or not
READ_CHUNK = 1 << 20


def verb_of(command: object) -> str:
    return command if isinstance(command, str) and command in VERBS else "other"


def code_of(status: int, text: str) -> str:
    """The `code` label: "0" for a success, else the CNI error code the answer carries ("other": none)."""
    if status == 0:
        return "0"
    try:
        code = json.loads(text).get("code")
    except (ValueError, AttributeError):
        return "other"
    return str(code) if isinstance(code, int) and 0 < code < 1000 else "other"


class FallbackFile:
    """The `fallbacks` file beside the socket, consumed byte by byte into counts by reason."""

    def __init__(self, directory: str) -> None:
        self.shared = os.path.join(directory, FALLBACKS)
        self.taken = os.path.join(directory, TAKEN)
        self.lock = threading.Lock()  # concurrent scrapes take the file one at a time

    def take(self) -> dict[str, int]:
        """The bytes written since the last take, by reason; the file is gone afterwards."""
        with self.lock:
            counts = self._consume()  # left by a daemon that died before removing it: never counted
            try:
                os.rename(self.shared, self.taken)  # callers append to a new file from now on
            except OSError:
                return counts
            for reason, n in self._consume().items():
                counts[reason] = counts.get(reason, 0) + n
            return counts

    def _consume(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        try:
            fd = os.open(self.taken, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return counts
        try:
            while chunk := os.read(fd, READ_CHUNK):
                _count(chunk, counts)
            os.unlink(self.taken)  # counted only once removed: never twice, whoever reads it next
        except OSError:
            return {}
        finally:
            os.close(fd)
        return counts


def _count(chunk: bytes, counts: dict[str, int]) -> None:
    known = 0
    for byte, reason in FALLBACK_BYTES.items():
        if n := chunk.count(byte):
            counts[reason] = counts.get(reason, 0) + n
            known += n
    if known < len(chunk):
        counts["unknown"] = counts.get("unknown", 0) + len(chunk) - known


class NodeMetrics:
    def __init__(self, registry: Registry, *, fallbacks_dir: str | None, stores: StorePool | None = None) -> None:
        self.calls = registry.counter(
            "node_calls_total", "Calls the node daemon served, by verb and result code (0: success)", ("verb", "code")
        )
        self.duration = registry.histogram(
            "node_call_duration_seconds", "Time the node daemon took per call, by verb", ("verb",), CALL_BUCKETS
        )
        self.fallbacks = registry.counter(
            "node_fallbacks_total", "Calls the node daemon did not serve, by reason", ("reason",)
        )
        self.batches = registry.histogram(
            "node_batch_size", "Requests per group-commit round, by verb", ("verb",), BATCH_BUCKETS
        )
        self.store_errors = registry.counter(
            "node_store_errors_total", "Stores that failed or could not be opened", ("datastore", "error")
        )
        self.in_flight = registry.gauge("node_calls_in_flight", "Calls the node daemon is serving now")
        self.open_stores = registry.gauge("node_open_stores", "Datastore clients open: serving or kept for reuse")
        for reason in REASONS:
            self.fallbacks.inc(0, reason=reason)  # present from the start: a rate sees the first one
        self.file = FallbackFile(fallbacks_dir) if fallbacks_dir is not None else None  # (None: counted elsewhere)
        self.stores = stores
        self.last_take = 0.0
        registry.on_render(self.refresh)

    def served(self, command: object, status: int, text: str, seconds: float) -> None:
        verb = verb_of(command)
        self.calls.inc(verb=verb, code=code_of(status, text))
        self.duration.observe(seconds, verb=verb)

    def declined(self, reason: str) -> None:
        self.fallbacks.inc(reason=reason if reason in DECLINES else "unknown")

    def batch(self, key: Hashable, size: int) -> None:
        """The Batcher's observer: its keys are (verb, network config, node)."""
        verb = verb_of(key[0]) if isinstance(key, tuple) and key else "other"
        self.batches.observe(size, verb=verb)

    def store_failed(self, settings: StoreSettings, exc: BaseException) -> None:
        self.store_errors.inc(datastore=settings.kind, error=type(exc).__name__)

    def refresh(self) -> None:
        """What is read rather than counted: the open stores, and the executable's fallback bytes."""
        if self.stores is not None:
            self.open_stores.set(self.stores.open_count())
        self.last_take = time.monotonic()
        for reason, n in (self.file.take() if self.file is not None else {}).items():
            self.fallbacks.inc(n, reason=reason)

    def refresh_if_due(self) -> None:
        if time.monotonic() - self.last_take >= TAKE_EVERY:
            self.refresh()
