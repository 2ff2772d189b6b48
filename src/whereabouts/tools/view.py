"""Output as kubectl prints it: a table by default (`-o wide` adds columns), or every row's fields as JSON or
YAML (`-o json|yaml`: `{"kind": ..., "items": [...]}`, values as numbers and strings, for scripts)."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

OUTPUTS = ("table", "wide", "json", "yaml")
Row = Mapping[str, Any]


@dataclass(frozen=True)
class Column:
    header: str
    key: str
    show: Callable[[Row], str] | None = None  # the cell's text; default: the value, "-" when empty
    wide: bool = False  # only with -o wide

    def cell(self, row: Row) -> str:
        if self.show is not None:
            return self.show(row)
        value = row.get(self.key)
        return "-" if value in (None, "", ()) else str(value)


def render(kind: str, rows: Sequence[Row], columns: Sequence[Column], output: str) -> str:
    if output == "json":
        return json.dumps({"kind": kind, "items": list(rows)}, indent=2, default=str) + "\n"
    if output == "yaml":
        import yaml

        return str(yaml.safe_dump({"kind": kind, "items": [dict(r) for r in rows]}, sort_keys=False))
    shown = [c for c in columns if output == "wide" or not c.wide]
    return table([c.header for c in shown], [[c.cell(row) for c in shown] for row in rows])


def printable(text: str) -> str:
    """`text` as a terminal shows it without acting on it: control characters (ESC sequences, carriage returns,
    newlines), line separators and format characters (bidi overrides) written as escapes ('\\x1b', '\\r',
    '\\u202e'). Names read from a store or a request (an interface, a pod, a network config) can hold any."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else char.encode("unicode_escape").decode("ascii") for char in text)


def printable_lines(text: str) -> str:
    """Each line of `text` printable (its line breaks kept: the lines the tool itself wrote)."""
    return "\n".join(printable(line) for line in text.split("\n"))


def table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns three spaces apart, as kubectl's tables (no trailing blanks); every cell printable."""
    cells = [[printable(text) for text in line] for line in cells]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells, strict=True)]
    lines = ["   ".join(text.ljust(width) for text, width in zip(line, widths, strict=True)).rstrip()
             for line in (headers, *cells)]  # fmt: skip
    return "\n".join(lines) + "\n"


def count(value: int) -> str:
    """An address count: exact up to a million, else a power of two or a short form ('16.8M', '2^64')."""
    if value < 1_000_000:
        return str(value)
    if value & (value - 1) == 0 and value >= 1 << 32:
        return f"2^{value.bit_length() - 1}"
    for unit, size in (("T", 10**12), ("G", 10**9), ("M", 10**6)):
        if value >= size and value < 1000 * size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.2e}"


def bar(used: int, capacity: int, width: int = 20) -> str:
    """'[#####---------------]  25%': the share of pickable addresses in use."""
    share = used / capacity if capacity else 1.0
    filled = min(width, round(share * width))
    if used and not filled:
        filled = 1  # anything in use shows
    return f"[{'#' * filled}{'-' * (width - filled)}] {share * 100:3.0f}%"
