"""Which strings the API server takes as object and namespace names, checked before any request is made.

Custom resources are named by DNS-1123 subdomains (as the API server validates them): lowercase letters,
digits, '-' and '.', each dot-separated part starting and ending with a letter or digit, at most 253
characters. Namespaces are DNS-1123 labels: the same without dots, at most 63.
"""

from __future__ import annotations

import re

from whereabouts.errors import InvalidConfig

_LABEL = "[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_SUBDOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_NAMESPACE = re.compile(_LABEL)
RULES = "lowercase letters, digits, '-' and '.', starting and ending with a letter or digit, at most 253 characters"


def is_object_name(text: object) -> bool:
    return isinstance(text, str) and len(text) <= 253 and _SUBDOMAIN.fullmatch(text) is not None


def is_namespace(text: object) -> bool:
    return isinstance(text, str) and len(text) <= 63 and _NAMESPACE.fullmatch(text) is not None


def require_object_name(name: str, key: str, value: str) -> None:
    """InvalidConfig naming `key` unless `name`, made from the value of `key`, is a valid object name."""
    if not is_object_name(name):
        shown = repr(value) if len(value) <= 100 else repr(value[:100]) + "..."
        made = "" if name == value else f" (it makes the Kubernetes object name {name[:300]!r})"
        raise InvalidConfig(f"invalid {key} {shown}: not a Kubernetes object name{made}: {RULES}")
