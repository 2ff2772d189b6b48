"""Files a config names, read safely: only a regular file is ever opened (a device may act on being opened,
a FIFO would block the call for good), and the reading is bounded. Stdlib only: the CNI hot path uses it."""

from __future__ import annotations

import errno
import os
import stat


class NotRegular(OSError):
    """The path names something else than a regular file (a device, a FIFO, a directory): never opened."""

    def __init__(self) -> None:
        super().__init__(errno.EINVAL, "not a regular file")


def require_regular(path: str) -> None:
    """NotRegular unless `path` is a regular file (a symlink to one is followed); FileNotFoundError and the
    other OSErrors of os.stat as they come."""
    if not stat.S_ISREG(os.stat(path).st_mode):
        raise NotRegular


def read_regular(path: str, limit: int) -> bytes:
    """Up to `limit` bytes of the regular file at `path` (see require_regular), checked before it is opened
    and again once open: should a FIFO be swapped in between, O_NONBLOCK keeps the open from waiting."""
    require_regular(path)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular
        return handle.read(limit)


def out_of_descriptors(exc: BaseException) -> bool:
    """Whether `exc` says the process (EMFILE) or the system (ENFILE) has no file descriptor left: the file
    may be fine."""
    return isinstance(exc, OSError) and exc.errno in (errno.EMFILE, errno.ENFILE)
