"""The watch-fed copy (kube.informer) on its own: which version of an object wins, deletes that stay deleted,
and a copy whose watch is refused is not used. The client here is a stand-in that serves scripted lists and
watches (the real API server is in tests/kube/test_kube_per_address.py); it records what was asked."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from whereabouts.kube.client import APIError, Event, Expired
from whereabouts.kube.informer import Informer


def obj(name: str, version: int, holder: str = "a") -> dict[str, Any]:
    return {"metadata": {"name": name, "resourceVersion": str(version)}, "spec": {"containerid": holder}}


class ScriptedClient:
    """Lists return `items` at `version`; each watch yields the next script's events, then ends (a list of
    events), or raises (an exception)."""

    def __init__(self, items: list[dict[str, Any]], version: int, watches: list[Any]) -> None:
        self.items, self.version, self.watches = items, version, watches
        self.lists = 0
        self.done = threading.Event()
        self.closed = False

    def list_with_version(self, path: str, **params: str) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        return list(self.items), str(self.version)

    def watch(self, path: str, resource_version: str, *, timeout: int = 300, **params: str) -> Iterator[Event]:
        if not self.watches:
            self.done.set()
            threading.Event().wait(0.05)
            return
        step = self.watches.pop(0)
        if isinstance(step, BaseException):
            raise step
        yield from step

    def interrupt(self) -> None:
        pass  # (its watches end by themselves)

    def close(self) -> None:
        self.closed = True


def test_an_older_version_never_replaces_a_newer_one() -> None:
    informer = Informer(ScriptedClient([], 1, []), "/x")  # type: ignore[arg-type]
    informer.put(obj("a", 10, "mine"))
    informer._apply("MODIFIED", obj("a", 9, "theirs"))  # the watch's event from before the process's own write
    assert informer.get("a") == obj("a", 10, "mine")
    informer._apply("MODIFIED", obj("a", 11, "theirs"))
    assert informer.get("a") == obj("a", 11, "theirs")


def test_a_delete_stays_deleted_when_an_older_event_arrives_after_it() -> None:
    informer = Informer(ScriptedClient([], 1, []), "/x")  # type: ignore[arg-type]
    informer.put(obj("a", 5))
    informer.drop("a", 6)  # the process deleted it
    informer._apply("ADDED", obj("a", 5))  # the create's event, late
    assert informer.get("a") is None
    informer._apply("ADDED", obj("a", 7, "b"))  # created again, later
    assert informer.get("a") == obj("a", 7, "b")


def test_a_list_keeps_the_processes_newer_writes_and_deletes() -> None:
    client = ScriptedClient([obj("a", 3), obj("b", 3)], 4, [])
    informer = Informer(client, "/x")  # type: ignore[arg-type]
    informer.put(obj("a", 8, "mine"))  # written after the list's version
    informer.put(obj("b", 3))
    informer.drop("b", 9)  # deleted after it
    informer._list()
    assert informer.get("a") == obj("a", 8, "mine")
    assert informer.get("b") is None


def test_watched_events_reach_the_copy_and_the_listener() -> None:
    seen: list[tuple[str, object]] = []
    client = ScriptedClient(
        [obj("a", 1)], 1, [[Event("ADDED", obj("b", 2)), Event("DELETED", obj("a", 3)), Event("MODIFIED", obj("b", 4))]]
    )
    informer = Informer(client, "/x", listener=lambda name, o: seen.append((name, o)))  # type: ignore[arg-type]
    informer.start()
    assert client.done.wait(5)
    informer.stop()
    assert informer.usable(1)
    assert {o["metadata"]["name"]: o for o in informer.items()} == {"b": obj("b", 4)}
    assert seen == [("a", obj("a", 1)), ("b", obj("b", 2)), ("a", None), ("b", obj("b", 4))]


def test_a_refused_watch_makes_the_copy_unusable_and_backs_off() -> None:
    client = ScriptedClient([obj("a", 1)], 1, [APIError("403", status=403)] * 50)
    informer = Informer(client, "/x")  # type: ignore[arg-type]
    informer.start()
    threading.Event().wait(1.0)
    informer.stop()
    assert not informer.usable(0.1)  # callers read the server themselves
    assert client.lists <= 3, f"{client.lists} lists in a second: no backoff"


def test_an_expired_watch_lists_again() -> None:
    client = ScriptedClient([obj("a", 1)], 1, [Expired("1")])
    informer = Informer(client, "/x")  # type: ignore[arg-type]
    informer.start()
    assert client.done.wait(5)
    informer.stop(5.0)
    assert client.lists == 2
    assert informer.usable(0.1)
    assert informer.thread is not None and not informer.thread.is_alive() and client.closed  # as its thread ended


def test_an_informer_never_started_closes_its_client_when_stopped() -> None:
    client = ScriptedClient([], 1, [])
    Informer(client, "/x").stop()  # type: ignore[arg-type]
    assert client.closed
