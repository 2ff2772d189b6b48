"""What the tools report instead of a traceback: a message for stderr and the exit status.

ToolError (exit 1)      the datastore refused or cannot be reached, a guarded write was refused
└── BadInput (exit 2)   an argument or a file that cannot be used; nothing was read or written
"""

from __future__ import annotations


class ToolError(Exception):
    status = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(ToolError):
    status = 2
