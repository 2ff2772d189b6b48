"""`whereabouts`: the CNI IPAM executable. Thin: parse, call the IPAM service, print."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from typing import Any, TextIO

from whereabouts.cni.protocol import LATEST, SUPPORTED_VERSIONS, CallEnv, check_version, read_env
from whereabouts.errors import UndecodableConfig, WhereaboutsError

HELP = f"""whereabouts: a cluster-wide IPAM plugin for CNI (Python).
A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS, VERSION) and the network
config on stdin; see the README for the ipam keys.
CNI protocol versions supported: {", ".join(SUPPORTED_VERSIONS)}
"""


def main() -> int:
    return run(os.environ, sys.stdin.buffer.read if "CNI_COMMAND" in os.environ else None, sys.stdout)


def run(environ: Mapping[str, str], read_stdin: Any, out: TextIO) -> int:
    if read_stdin is None:
        out.write(HELP)
        return 0
    version = LATEST
    try:
        call = read_env(environ)
        netconf = _decode(read_stdin())
        declared = netconf.get("cniVersion") or "0.1.0"
        version = declared if isinstance(declared, str) else LATEST
        check_version(version, call.command)
        result = _dispatch(call, netconf, version)
    except WhereaboutsError as exc:
        out.write(json.dumps(exc.to_cni(version)) + "\n")
        return 1
    except Exception as exc:
        error = WhereaboutsError(f"internal error: {type(exc).__name__}: {exc}")
        out.write(json.dumps(error.to_cni(version)) + "\n")
        return 1
    if result is not None:
        out.write(json.dumps(result) + "\n")
    return 0


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        netconf = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise UndecodableConfig(f"cannot decode network config: {exc}") from None
    if not isinstance(netconf, dict):
        raise UndecodableConfig("cannot decode network config: expected a JSON object")
    return netconf


def _dispatch(call: CallEnv, netconf: dict[str, Any], version: str) -> dict[str, Any] | None:
    if call.command == "VERSION":
        return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}
    from whereabouts.cni.verbs import VERBS  # after VERSION: only real calls load config and store code

    return VERBS[call.command](call, netconf, version)


if __name__ == "__main__":
    sys.exit(main())
