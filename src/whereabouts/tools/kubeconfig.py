"""The operator's kubeconfig, read as kubectl reads it: `--kubeconfig`, else the first file of $KUBECONFIG, else
~/.kube/config; `--context` picks a context other than the current one; the context's namespace (kubectl's
default: "default") is where pod names without a namespace are looked for.

The credentials themselves come from whereabouts.kube.credentials, which reads the current context only: for
`--context`, a private copy of the file naming that context current is read instead, its relative file paths
made absolute (they are relative to the original file's directory).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from typing import Any

from whereabouts.kube.credentials import Credentials, load_credentials
from whereabouts.tools.errors import BadInput

PATH_KEYS = {"cluster": ("certificate-authority",), "user": ("client-certificate", "client-key", "tokenFile")}


def operator_kubeconfig(flag: str) -> str:
    """The kubeconfig kubectl would use; "" for none (in a pod: the service account)."""
    if flag:
        return os.path.abspath(flag)
    listed = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if listed:
        return os.path.abspath(listed[0])
    home = os.path.expanduser("~/.kube/config")
    return home if os.path.isfile(home) else ""


def load(path: str, context: str) -> tuple[Credentials, str]:
    """(the credentials of `context`, else of the current context; that context's namespace for pods)."""
    if not path:
        if context:
            raise BadInput("--context needs a kubeconfig (--kubeconfig, $KUBECONFIG or ~/.kube/config)")
        return load_credentials(""), "default"
    doc = _read(path)
    chosen = context or str(doc.get("current-context") or "")
    entry = _context(doc, chosen)
    if entry is None:
        names = ", ".join(sorted(str(c.get("name")) for c in doc.get("contexts") or [] if isinstance(c, Mapping)))
        raise BadInput(f"kubeconfig {path}: no context {chosen!r} (it has: {names or 'none'})")
    namespace = str(entry.get("namespace") or "default")
    if not context or context == doc.get("current-context"):
        return load_credentials(path), namespace
    return _load_with_context(path, doc, context), namespace


def _read(path: str) -> Mapping[str, Any]:
    import yaml

    try:
        with open(path, "rb") as handle:
            doc = yaml.safe_load(handle.read(4 << 20))
    except OSError as exc:
        raise BadInput(f"cannot read kubeconfig {path}: {exc.strerror}") from None
    except yaml.YAMLError:
        raise BadInput(f"kubeconfig {path} is not YAML or JSON") from None
    if not isinstance(doc, Mapping):
        raise BadInput(f"kubeconfig {path} holds no kubeconfig (expected a mapping)")
    return doc


def _context(doc: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    for item in doc.get("contexts") or []:
        if isinstance(item, Mapping) and item.get("name") == name and isinstance(item.get("context"), Mapping):
            context: Mapping[str, Any] = item["context"]
            return context
    return None


def _load_with_context(path: str, doc: Mapping[str, Any], context: str) -> Credentials:
    base = os.path.dirname(path)
    copy = json.loads(json.dumps(doc, default=str))
    copy["current-context"] = context
    for section, keys in PATH_KEYS.items():
        for item in copy.get(section + "s") or []:
            inner = item.get(section) if isinstance(item, dict) else None
            if not isinstance(inner, dict):
                continue
            for key in keys:
                if isinstance(inner.get(key), str) and inner[key]:
                    inner[key] = os.path.join(base, inner[key])  # an absolute path stays as it is
    with tempfile.TemporaryDirectory(prefix="kubectl-whereabouts-") as directory:
        private = os.path.join(directory, "kubeconfig")
        fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(copy, handle)
        return load_credentials(private)
