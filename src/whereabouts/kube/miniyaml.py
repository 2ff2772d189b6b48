"""Just enough YAML for kubeconfig files, so a CNI call need not import PyYAML (tens of milliseconds).

Handles block mappings and sequences, plain and quoted scalars, comments and the empty flow collections
`{}` and `[]`, which is everything kubectl and installers write into a kubeconfig. Anything else raises
`Unsupported`, and the caller falls back to PyYAML.
"""

from __future__ import annotations

import json
from typing import Any


class Unsupported(ValueError):
    pass


def loads(text: str) -> Any:
    lines = [_strip(line) for line in text.splitlines()]
    tokens = [(len(line) - len(line.lstrip(" ")), line.strip()) for line in lines if line.strip()]
    if not tokens:
        return None
    value, end = _block(tokens, 0, tokens[0][0])
    if end != len(tokens):
        raise Unsupported("unexpected indentation")
    return value


def _strip(line: str) -> str:
    if "\t" in line:
        raise Unsupported("tabs")
    if line.lstrip().startswith("#") or line.strip() in ("---", "..."):
        return ""
    if " #" in line and "'" not in line and '"' not in line:
        line = line.split(" #", 1)[0]
    return line.rstrip()


def _block(tokens: list[tuple[int, str]], i: int, indent: int) -> tuple[Any, int]:
    if tokens[i][1].startswith("- ") or tokens[i][1] == "-":
        return _sequence(tokens, i, indent)
    return _mapping(tokens, i, indent)


def _sequence(tokens: list[tuple[int, str]], i: int, indent: int) -> tuple[list[Any], int]:
    items: list[Any] = []
    while i < len(tokens) and tokens[i][0] == indent and (tokens[i][1].startswith("- ") or tokens[i][1] == "-"):
        rest = tokens[i][1][1:].lstrip()
        if not rest:
            value, i = _block(tokens, i + 1, tokens[i + 1][0])
        elif ":" in rest and not rest.startswith(("'", '"')):
            # "- key: value" opens a mapping whose further keys line up with this first one
            column = indent + len(tokens[i][1]) - len(rest)
            tokens[i] = (column, rest)
            value, i = _mapping(tokens, i, column)
        else:
            value, i = _scalar(rest), i + 1
        items.append(value)
    return items, i


def _mapping(tokens: list[tuple[int, str]], i: int, indent: int) -> tuple[dict[str, Any], int]:
    result: dict[str, Any] = {}
    while i < len(tokens) and tokens[i][0] == indent and not tokens[i][1].startswith("- "):
        key, sep, rest = tokens[i][1].partition(":")
        if not sep or (rest and not rest.startswith(" ")):
            raise Unsupported(f"not a mapping entry: {tokens[i][1]!r}")
        key, rest = _scalar(key.strip()), rest.strip()
        i += 1
        if rest:
            result[str(key)] = _scalar(rest)
        elif i < len(tokens) and (tokens[i][0] > indent or (tokens[i][0] == indent and tokens[i][1].startswith("- "))):
            result[str(key)], i = _block(tokens, i, tokens[i][0])
        else:
            result[str(key)] = None
    return result, i


def _scalar(text: str) -> Any:
    if text in ("{}", "[]"):
        return {} if text == "{}" else []
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise Unsupported("multi-line quoted scalar")
        return text[1:-1].replace("''", "'")
    if text[0] in "{[&*!|>%@`":
        raise Unsupported(f"YAML feature not handled: {text[:20]!r}")
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("null", "~"):
        return None
    return text
