"""A small file logger for the CNI process (stdlib `logging` costs start-up time on every call).

Levels as the Go plugin names them: debug < verbose < error < panic. Without `log_file` nothing is written:
stdout carries the CNI result and must stay clean. Each entry is one line, stamped in UTC to the millisecond
(`2024-05-01T12:00:00.123Z [verbose] pid=42 ADD ... ok`): a call's outcome is one line.
"""

from __future__ import annotations

import os
import stat
import time

LEVELS = {"debug": 0, "verbose": 1, "error": 2, "panic": 3}
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NONBLOCK | os.O_CLOEXEC


class Log:
    def __init__(self, path: str = "", level: str = "") -> None:
        self.path = path
        self.threshold = LEVELS.get(level.lower(), LEVELS["error"]) if level else LEVELS["error"]

    def debug(self, msg: str) -> None:
        self._write("debug", msg)

    def verbose(self, msg: str) -> None:
        self._write("verbose", msg)

    def error(self, msg: str) -> None:
        self._write("error", msg)

    def warning(self, msg: str) -> None:
        """Written whenever errors are (the default level): what the config says that is read in a way it
        may not mean, as the Go plugin reads it."""
        self._write("warning", msg)

    def _write(self, level: str, msg: str) -> None:
        if not self.path or LEVELS.get(level, LEVELS["error"]) < self.threshold:
            return
        now = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        one_line = msg.replace("\r", "\\r").replace("\n", "\\n")  # one line per entry, whatever a message holds
        line = f"{stamp}.{int(now * 1000) % 1000:03d}Z [{level}] pid={os.getpid()} {one_line}\n"
        fd = _open(self.path)
        if fd is None:
            return
        try:
            os.write(fd, line.encode("utf-8", "backslashreplace"))
        except OSError:
            pass  # logging must never fail a CNI call
        finally:
            os.close(fd)


def _open(path: str) -> int | None:
    """`path` opened to append, made if missing; None when it cannot be, or is no regular file: a device is
    never opened (some act on it: a watchdog), a FIFO never waited on (O_NONBLOCK, should one appear since the
    stat). So `/dev/null` as log_file logs nothing."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
    except FileNotFoundError:
        pass  # made below
    except (OSError, ValueError):
        return None
    try:
        fd = os.open(path, _APPEND, 0o666)
    except (OSError, ValueError):
        return None
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
    except OSError:
        pass
    os.close(fd)
    return None
