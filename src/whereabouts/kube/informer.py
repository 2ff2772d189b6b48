"""A watch-fed copy of one resource's objects in one namespace, for a long-running process (the node daemon).

`Informer(client, path)` lists the objects, then watches from the list's resourceVersion, and keeps the
newest version of each object it has seen: from the list, from watch events, and from the process's own
writes (`put`, `drop`), so that a decision made right after a write sees it even before its watch event
arrives. An older version never replaces a newer one (resourceVersions of one resource are etcd revisions:
compared as numbers; the API conventions call them opaque, and where one is not a number it is taken as
newer). A watch that expires (410) or fails lists again, after a jittered backoff when the server failed.

A copy can lag the server by the watch's delay: callers use it to decide, and the server to arbitrate (a
create that finds the object exists, a patch whose test fails). `fresh(name)` reads one object from the
server and keeps it, for a caller that lost such a race.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from whereabouts.kube.client import APIError, Expired, KubeClient

Object = dict[str, Any]
WATCH_SECONDS = 60  # each watch request's length: a stopped informer's thread ends within it
Listener = Callable[[str, Object | None], None]


def version_of(obj: Object | None) -> int:
    text = str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")
    return int(text) if text.isdigit() else -1


class Informer:
    def __init__(self, client: KubeClient, path: str, *, listener: Listener | None = None) -> None:
        self.client, self.path = client, path
        self.listener = listener  # told of each object that changed (None: deleted), under no lock of ours
        self.objects: dict[str, Object] = {}
        self.gone: dict[str, int] = {}  # name -> resourceVersion of a delete seen (an older event must not revive it)
        self.lock = threading.Lock()
        self.synced = threading.Event()
        self.refused = threading.Event()  # the last list or watch failed
        self.stopping = threading.Event()
        self.listed_at = 0  # resourceVersion of the last list
        self.relists = 0
        self.thread: threading.Thread | None = None

    def start(self) -> Informer:
        self.thread = threading.Thread(target=self._run, name=f"informer {self.path}", daemon=True)
        self.thread.start()
        return self

    def stop(self, wait: float = 0.0) -> None:
        """Stop: the watch being read ends at once, and the thread closes the client as it ends (waited for up
        to `wait` seconds), its sockets not left to the garbage collector. Never started: closed now."""
        self.stopping.set()
        if self.thread is None:
            self.client.close()
            return
        self.client.interrupt()
        self.thread.join(wait)

    # -- reads --------------------------------------------------------------------------------------------------

    def get(self, name: str) -> Object | None:
        with self.lock:
            return self.objects.get(name)

    def items(self) -> list[Object]:
        with self.lock:
            return list(self.objects.values())

    def fresh(self, name: str) -> Object | None:
        """Read `name` from the server now (a quorum read) and keep what it says."""
        obj = self.client.get(f"{self.path}/{name}")
        if obj is None:
            self.drop(name, self._deleted_version(name))
        else:
            self.put(obj)
        return obj

    def _deleted_version(self, name: str) -> int:
        with self.lock:
            return max(version_of(self.objects.get(name)), self.listed_at)

    # -- the process's own writes -------------------------------------------------------------------------------

    def put(self, obj: Object) -> None:
        name = obj["metadata"]["name"]
        with self.lock:
            changed = self._newer(name, version_of(obj))
            if changed:
                self.objects[name] = obj
                self.gone.pop(name, None)
        if changed and self.listener is not None:
            self.listener(name, obj)

    def drop(self, name: str, version: int) -> None:
        """`name` was deleted (at `version`, or later): forget it unless a newer version is known."""
        with self.lock:
            current = self.objects.get(name)
            if current is not None and version_of(current) > version >= 0:
                return
            self.objects.pop(name, None)
            self.gone[name] = max(version, self.gone.get(name, -1))
        if current is not None and self.listener is not None:
            self.listener(name, None)

    def _newer(self, name: str, version: int) -> bool:
        known = max(version_of(self.objects.get(name)), self.gone.get(name, -1))
        return version < 0 or known < 0 or version > known

    # -- the watch ----------------------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._follow()
        finally:
            self.client.close()

    def _follow(self) -> None:
        failures = 0
        while not self.stopping.is_set():
            try:
                version = self._list()
                while not self.stopping.is_set():  # the server ends each watch: resume where it ended
                    for event in self.client.watch(self.path, version, timeout=WATCH_SECONDS):
                        if self.stopping.is_set():
                            return
                        version = str(event.object.get("metadata", {}).get("resourceVersion") or version)
                        self._apply(event.type, event.object)
                        self._forget_deletes(version)
                    failures = 0  # a watch served to its end: the copy is current
                    self.refused.clear()
            except Expired:
                continue  # too old for the server: list again at once
            except (APIError, OSError, ValueError, KeyError):
                # refused (no `watch` in the RBAC) or unreachable: the copy is not current, callers read the
                # server themselves until a list and a watch work again
                self.refused.set()
                failures += 1
                self.stopping.wait(min(30.0, 0.5 * 2 ** min(failures, 6)) * random.uniform(0.5, 1.0))

    def usable(self, wait: float) -> bool:
        """Whether the copy is current: listed, and its watch not failing; the first caller waits for it."""
        return not self.refused.is_set() and self.synced.wait(wait) and not self.refused.is_set()

    def _list(self) -> str:
        items, version = self.client.list_with_version(self.path)
        listed = int(version) if version.isdigit() else -1
        with self.lock:
            fetched = {obj["metadata"]["name"]: obj for obj in items}
            # the process's own writes newer than the list stay; deletes newer than it stay deleted
            for name, obj in self.objects.items():
                if version_of(obj) > listed >= 0 and version_of(fetched.get(name)) < version_of(obj):
                    fetched[name] = obj
            for name, gone in list(self.gone.items()):
                if gone > listed >= 0 and version_of(fetched.get(name)) < gone:
                    fetched.pop(name, None)
                elif gone <= listed:
                    del self.gone[name]
            before, self.objects, self.listed_at = self.objects, fetched, listed
            self.relists += 1
        self.synced.set()
        if self.listener is not None:
            for name in before.keys() | fetched.keys():
                if before.get(name) is not fetched.get(name):
                    self.listener(name, fetched.get(name))
        return version

    def _forget_deletes(self, version: str) -> None:
        """Deletes the watch has gone past need no remembering: no older event of theirs can come any more (a
        daemon deletes objects for months)."""
        if len(self.gone) > 64 and version.isdigit():
            seen = int(version)
            with self.lock:
                self.gone = {name: at for name, at in self.gone.items() if at > seen}

    def _apply(self, kind: str, obj: Object) -> None:
        if kind in ("ADDED", "MODIFIED"):
            self.put(obj)
        elif kind == "DELETED":
            self.drop(obj["metadata"]["name"], version_of(obj))
