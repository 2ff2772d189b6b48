"""One CNI call, in process: environment and stdin in, exit status and stdout text out.

Used by the executable when no node daemon answers, and by the node daemon for each forwarded call.
"""

from __future__ import annotations

import json

from whereabouts.cni.protocol import LATEST, SUPPORTED_VERSIONS, CallEnv, check_version, read_env
from whereabouts.errors import UndecodableConfig, WhereaboutsError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

HELP = f"""whereabouts: a cluster-wide IPAM plugin for CNI (Python).
A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS, VERSION) and the network
config on stdin; see the README for the ipam keys.
CNI protocol versions supported: {", ".join(SUPPORTED_VERSIONS)}
"""


def handle(environ: Mapping[str, str], stdin: bytes) -> tuple[int, str]:
    """Serve one call; errors become CNI error objects, never exceptions."""
    version = LATEST
    try:
        call = read_env(environ)
        netconf = _decode(stdin)
        declared = netconf.get("cniVersion") or "0.1.0"
        version = declared if isinstance(declared, str) else LATEST
        check_version(version, call.command)
        result = _dispatch(call, netconf, version)
    except WhereaboutsError as exc:
        return 1, json.dumps(exc.to_cni(version)) + "\n"
    except Exception as exc:
        error = WhereaboutsError(f"internal error: {type(exc).__name__}: {exc}")
        return 1, json.dumps(error.to_cni(version)) + "\n"
    return 0, "" if result is None else json.dumps(result) + "\n"


def run(environ: Mapping[str, str], read_stdin: Callable[[], bytes] | None, out: TextIO) -> int:
    """`handle` writing to a stream; no `read_stdin` means a person ran it: print the help."""
    if read_stdin is None:
        out.write(HELP)
        return 0
    status, text = handle(environ, read_stdin())
    out.write(text)
    return status


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        netconf = json.loads(raw) if raw.strip() else {}
    except (ValueError, RecursionError) as exc:  # RecursionError: nested deeper than the decoder goes
        raise UndecodableConfig(f"cannot decode network config: {exc}") from None
    if not isinstance(netconf, dict):
        raise UndecodableConfig("cannot decode network config: expected a JSON object")
    return netconf


def _dispatch(call: CallEnv, netconf: dict[str, Any], version: str) -> dict[str, Any] | None:
    if call.command == "VERSION":
        return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    from whereabouts.cni.verbs import VERBS  # after VERSION: only real calls load config and store code

    return VERBS[call.command](call, netconf, version)
