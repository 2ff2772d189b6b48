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

Each request keeps its own call's deadline (whereabouts.deadline): one whose deadline passed while it waited
is answered code 11 without a round; a round is served by its member with the most time left, on that
member's deadline, so that a newer request is not failed by an older one's; and a member whose deadline
passes while its round goes on is answered code 11 then, never later (its caller would give up, or be
answered past its runtime's own timeout). Its request may still be committed by the round, as a single call's
commit in flight at its deadline may: its runtime's retry of the ADD finds the same addresses (an attachment's
ADD is idempotent), or its DEL frees them: a `settled` callback given with a request hears when no round can
commit it any more (its round is over, or it left the queue unserved), which may be after its own thread was
answered code 11; the node daemon keeps the attachment's next call waiting until then (`Attachments`), so that
the runtime's DEL after that code 11 is served after the commit, never before it.

An `observe(key, size)` given to the Batcher hears of each round as its leader starts serving it (the node
daemon's batch-size histogram); this module imports nothing but the stdlib, the deadline and the errors modules.
"""

from __future__ import annotations

import contextlib
import threading
import time

from whereabouts import deadline
from whereabouts.errors import TryAgainLater

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Hashable, Sequence
    from typing import Any, TypeVar

    Request = TypeVar("Request")
    Outcome = TypeVar("Outcome")

# requests per round: bounds one round's latency and the size of its pool patch. A round may still need more
# than one commit of its store takes (etcd: 42 changes, and 64 dual-stack ADDs are 128): IPAMService.add_batch
# commits the requests that fit and then the rest, and the etcd store commits a DEL round's releases in parts.
MAX_BATCH = 64


class _Ticket:
    __slots__ = ("done", "due", "leads", "outcome", "request", "settled")

    def __init__(self, request: Any, due: tuple[float, float] | None, settled: Callable[[], None] | None) -> None:
        self.request = request
        self.settled = settled  # told once, when no round can commit this request any more
        self.due = due  # its call's deadline and seconds (deadline.current()); None: it has none
        self.done = False
        self.outcome: Any = None
        self.leads: list[_Ticket] | None = None  # the round this request's thread is to serve

    def left(self) -> float | None:
        """Seconds until its deadline (0 once passed); None: no deadline."""
        return None if self.due is None else max(0.0, self.due[0] - time.monotonic())

    def answer(self, outcome: Any) -> None:
        self.outcome, self.done = outcome, True

    def settle(self) -> None:
        settled, self.settled = self.settled, None
        if settled is not None:
            settled()


class _Group:
    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.queue: list[_Ticket] = []
        self.busy = False  # a round is being served


class Batcher:
    def __init__(self, observe: Callable[[Hashable, int], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.groups: dict[Hashable, _Group] = {}
        self.observe = observe  # told (key, size) of each round served

    def submit(
        self,
        key: Hashable,
        request: Request,
        serve: Callable[[Sequence[Request]], Sequence[Outcome]],
        settled: Callable[[], None] | None = None,
    ) -> Outcome:
        """Serve `request` together with the other requests of `key` waiting now, by this thread's deadline.
        `serve` takes the requests and returns one outcome per request, in order; an outcome that is an
        exception is raised here. `settled` is called once no round can commit `request` any more (see the
        module), on whichever thread that is known."""
        with self.lock:
            group = self.groups.setdefault(key, _Group())
        ticket = _Ticket(request, deadline.current(), settled)
        with group.cond:
            group.queue.append(ticket)
            while not ticket.done:
                if ticket.leads is not None:
                    self._lead(key, group, ticket, serve)
                elif not group.busy:
                    _start_round(group)
                elif not group.cond.wait(ticket.left()) and not ticket.done and ticket.leads is None:
                    if ticket in group.queue:  # (else its round is under way: its leader settles it)
                        group.queue.remove(ticket)
                        ticket.settle()
                    _give_up(ticket)
        self._forget_if_idle(key, group)
        if isinstance(ticket.outcome, BaseException):
            raise ticket.outcome
        outcome: Outcome = ticket.outcome  # the ticket holds what `serve` answered for this request
        return outcome

    def _lead(
        self, key: Hashable, group: _Group, ticket: _Ticket, serve: Callable[[Sequence[Any]], Sequence[Any]]
    ) -> None:
        """Serve the round `ticket` was given (the group's lock held on entry and on return, not meanwhile)."""
        batch, ticket.leads = ticket.leads or [], None
        group.cond.release()
        try:
            self._observe(key, len(batch))
            outcomes = _outcomes(batch, serve)
        finally:
            for member in batch:  # committed or not, for good: its attachment's next call may go ahead
                member.settle()
            group.cond.acquire()
            group.busy = False
            group.cond.notify_all()
        for member, outcome in zip(batch, outcomes, strict=True):
            if not member.done:  # (one that gave up at its deadline was answered then)
                member.answer(outcome)

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


def _start_round(group: _Group) -> None:
    """Take the next round from the queue (its lock held): the requests whose deadline passed are answered
    code 11, the others, up to MAX_BATCH in arrival order, go to the one with the most time left to serve."""
    batch: list[_Ticket] = []
    rest: list[_Ticket] = []
    for ticket in group.queue:
        if ticket.left() == 0:
            ticket.settle()
            _give_up(ticket)
        else:
            (batch if len(batch) < MAX_BATCH else rest).append(ticket)
    group.queue = rest
    if batch:
        leader = max(batch, key=lambda ticket: ticket.due[0] if ticket.due is not None else float("inf"))
        leader.leads, group.busy = batch, True
    group.cond.notify_all()


def _give_up(ticket: _Ticket) -> None:
    """`ticket`'s deadline passed while it waited for a round, or for the round it is in: code 11."""
    assert ticket.due is not None  # (only a request with a deadline has one to pass)
    ticket.answer(deadline.passed(ticket.due[1]))


def _outcomes(batch: list[_Ticket], serve: Callable[[Sequence[Any]], Sequence[Any]]) -> Sequence[Any]:
    try:
        return serve([ticket.request for ticket in batch])
    except Exception as exc:  # the round failed as a whole (store unreachable): every request gets it
        return [exc] * len(batch)


class Attachments:
    """The attachments (container ID, interface, network) a call of the node daemon is serving: the next call
    of one waits until the call before it is over, and an ADD is over only when no round can commit it any
    more (`Batcher.submit`'s `settled`). Without it, the runtime's DEL after an ADD answered code 11 (its
    deadline passed mid-round, or its caller was killed) could be served first, in a DEL round of its own, and
    the ADD's late commit would hold an address nobody releases."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.busy: set[Hashable] = set()

    def enter(self, key: Hashable) -> Callable[[], None]:
        """Wait (within the call's deadline: TryAgainLater, code 11, past it) until no call of `key` is being
        served, then mark it served; returns what ends that (to call once)."""
        with self.cond:
            while key in self.busy:
                try:
                    wait = deadline.remaining(1.0)
                except TryAgainLater:
                    raise TryAgainLater(f"an earlier call of attachment {key} is still being served") from None
                self.cond.wait(wait)
            self.busy.add(key)
        done = False

        def leave() -> None:
            nonlocal done
            with self.cond:
                if not done:
                    done = True
                    self.busy.discard(key)
                    self.cond.notify_all()

        return leave
