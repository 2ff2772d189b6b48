"""The compiled relay as install-cni installs it (the program is relay.c beside this module).

The bundle carries it unconfigured (bin/whereabouts-relay). install-cni writes into its copy what the Python
launcher says with `os.environ.setdefault` lines (the flat file's path) and a note naming the bundle and the
installer: NUL-terminated entries in the block that follows SETTINGS_MARKER, a fixed-size array of the
program's data, so the copy needs no file beside it and is replaced whole, atomically, like the launcher.
"""

from __future__ import annotations

SETTINGS_MARKER = b"\n#whereabouts-relay-settings#\n"
SETTINGS_SIZE = 4096  # the array's size in relay.c, the marker included
RELAY = "whereabouts-relay"  # its name in the bundle's bin/
PYTHON_PLUGIN = "whereabouts-python"  # the Python plugin it execs, beside it (relay.c's PYTHON_NAME)


def configured(program: bytes, *, note: str, environ: dict[str, str] | None = None) -> bytes:
    """`program` with `note` (a comment) and `environ` (each set unless the call's environment has it)."""
    at = program.find(SETTINGS_MARKER)
    if at < 0 or program.find(SETTINGS_MARKER, at + 1) >= 0:
        raise ValueError("not a whereabouts relay: its settings block is not found once")
    entries = [f"# {note}", *(f"{k}={v}" for k, v in sorted((environ or {}).items()))]
    if any("\0" in entry for entry in entries):
        raise ValueError("a relay setting holds a NUL byte")
    block = b"".join(entry.encode() + b"\0" for entry in entries) + b"\0"
    start, room = at + len(SETTINGS_MARKER), SETTINGS_SIZE - len(SETTINGS_MARKER)
    if len(block) > room:
        raise ValueError(f"relay settings of {len(block)} bytes do not fit in its {room}")
    return program[:start] + block.ljust(room, b"\0") + program[start + room :]


def note_of(program: bytes) -> str:
    """The note install-cni wrote into a relay ("" for any other file)."""
    at = program.find(SETTINGS_MARKER)
    if not program.startswith(b"\x7fELF") or at < 0:
        return ""
    first = program[at + len(SETTINGS_MARKER) :].split(b"\0", 1)[0]
    return first[2:].decode(errors="replace") if first.startswith(b"# ") else ""
