"""Group commit for the node daemon: concurrent ADDs (or DELs) of one network on one node share one decision
and one write per pool.

When a burst of pods starts on a node, the daemon receives many ADDs for the same network at once. Served
one by one, each reads the pool, writes its reservation and writes the pool object again: on the Kubernetes
store every pool write costs the API server a full validation of the object, and calls of one node take
turns per pool anyway. Here the first caller of a group becomes its leader and serves every request that
is waiting, in one `IPAMService.add_batch` (or `delete_batch`); requests that arrive meanwhile wait for the
next round, served by the next leader in arrival order. Nothing waits on purpose: a lone call is served at
once, as before.

Each request still gets its own answer (its addresses, or its own error: one request's exhausted range or
taken address does not fail the others), and a batch is all or nothing in the store, so a daemon that dies
mid-batch leaves what a crashed single call leaves, and every caller retries as it would.

An `observe(key, size)` given to the Batcher hears of each round as its leader starts serving it (the node
daemon's batch-size histogram); this module stays stdlib-only all the same.
"""

from __future__ import annotations

import contextlib
import threading

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence
    from typing import Any, TypeVar

    Request = TypeVar("Request")
    Outcome = TypeVar("Outcome")

MAX_BATCH = 64  # requests per round: bounds one round's latency and the size of its pool patch


class _Ticket:
    __slots__ = ("done", "outcome", "request")

    def __init__(self, request: Any) -> None:
        self.request = request
        self.done = False
        self.outcome: Any = None


class _Group:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: list[_Ticket] = []
        self.busy = False  # a leader is serving a round


class Batcher:
    def __init__(self, observe: Callable[[Hashable, int], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.groups: dict[Hashable, _Group] = {}
        self.observe = observe  # told (key, size) of each round served

    def submit(
        self, key: Hashable, request: Request, serve: Callable[[Sequence[Request]], Sequence[Outcome]]
    ) -> Outcome:
        """Serve `request` together with the other requests of `key` waiting now. `serve` takes the requests
        and returns one outcome per request, in order; an outcome that is an exception is raised here."""
        with self.lock:
            group = self.groups.setdefault(key, _Group())
        ticket = _Ticket(request)
        with group.cond:
            group.queue.append(ticket)
            while not ticket.done:
                if group.busy:
                    group.cond.wait()
                    continue
                group.busy = True
                batch, group.queue = group.queue[:MAX_BATCH], group.queue[MAX_BATCH:]
                group.cond.release()
                try:
                    self._observe(key, len(batch))
                    _serve(batch, serve)
                finally:
                    group.cond.acquire()
                    group.busy = False
                    group.cond.notify_all()
        self._forget_if_idle(key, group)
        if isinstance(ticket.outcome, BaseException):
            raise ticket.outcome
        outcome: Outcome = ticket.outcome  # the ticket holds what `serve` answered for this request
        return outcome

    def _observe(self, key: Hashable, size: int) -> None:
        if self.observe is not None:
            with contextlib.suppress(Exception):  # counting a round must never keep its requests from being served
                self.observe(key, size)

    def _forget_if_idle(self, key: Hashable, group: _Group) -> None:
        """Drop a group nobody waits in: the keys are network configs, and a daemon serving for months sees
        many come and go. (A caller that took the group just before is served by it all the same.)"""
        with self.lock, group.cond:
            if not group.busy and not group.queue and self.groups.get(key) is group:
                del self.groups[key]


def _serve(batch: list[_Ticket], serve: Callable[[Sequence[Any]], Sequence[Any]]) -> None:
    try:
        outcomes: Sequence[Any] = serve([ticket.request for ticket in batch])
    except Exception as exc:  # the round failed as a whole (store unreachable): every request gets it
        outcomes = [exc] * len(batch)
    for ticket, outcome in zip(batch, outcomes, strict=True):
        ticket.outcome, ticket.done = outcome, True
