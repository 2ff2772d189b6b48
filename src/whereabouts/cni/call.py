"""One CNI call, in process: environment and stdin in, exit status and stdout text out.

Used by the executable when no node daemon answers, and by the node daemon for each forwarded call.
"""

from __future__ import annotations

import json

from whereabouts import deadline
from whereabouts.cni.protocol import LATEST, SUPPORTED_VERSIONS, CallEnv, check_version, read_env
from whereabouts.errors import InvalidConfig, TryAgainLater, UndecodableConfig, WhereaboutsError
from whereabouts.node.runtime import Runtime, ServeInProcess

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from typing import Any, TextIO

HELP = f"""whereabouts: a cluster-wide IPAM plugin for CNI (Python).
A container runtime runs it with CNI_COMMAND (ADD, DEL, CHECK, GC, STATUS, VERSION) and the network
config on stdin; see the README for the ipam keys.
CNI protocol versions supported: {", ".join(SUPPORTED_VERSIONS)}
"""


def handle(environ: Mapping[str, str], stdin: bytes, runtime: Runtime | None = None) -> tuple[int, str]:
    """Serve one call; errors become CNI error objects, never exceptions (but ServeInProcess: the node daemon
    declines a call its caller must serve)."""
    if environ.get("CNI_COMMAND") == "VERSION":  # (before the environment is read: skel reads none of it)
        return 0, json.dumps(_version_info(stdin)) + "\n"
    version = LATEST
    deadline.start()
    try:
        call = read_env(environ)
        netconf = _decode(stdin)
        declared = netconf.get("cniVersion")
        if declared is not None and not isinstance(declared, str):
            raise InvalidConfig(f"invalid cniVersion {declared!r}: expected a version string such as {LATEST!r}")
        version = declared or "0.1.0"
        check_version(version, call.command)
        result = _dispatch(call, netconf, version, runtime or Runtime())
    except ServeInProcess:
        raise
    except Exception as exc:
        return 1, json.dumps(_error(exc, runtime).to_cni(version)) + "\n"
    finally:
        deadline.clear()
    return 0, "" if result is None else json.dumps(result) + "\n"


def run(environ: Mapping[str, str], read_stdin: Callable[[], bytes] | None, out: TextIO) -> int:
    """`handle` writing to a stream; no `read_stdin` means a person ran it: print the help."""
    if read_stdin is None:
        out.write(HELP)
        return 0
    status, text = handle(environ, read_stdin())
    out.write(text)
    return status


def _error(exc: Exception, runtime: Runtime | None) -> WhereaboutsError:
    """The CNI error a call ends with. No file descriptor left is never a config or internal error: the node
    daemon's own limit declines the call (its caller has descriptors of its own), else try again later."""
    if _out_of_descriptors(exc):
        if runtime is not None and runtime.peer is not None:
            raise ServeInProcess(f"the node daemon is out of file descriptors: {exc}", "descriptors") from exc
        return TryAgainLater(f"out of file descriptors: {exc}")
    if isinstance(exc, WhereaboutsError):
        return exc
    return WhereaboutsError(f"internal error: {type(exc).__name__}: {exc}")


def _out_of_descriptors(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from (or while handling), is EMFILE or ENFILE."""
    from whereabouts.files import out_of_descriptors

    seen: BaseException | None = exc
    for _ in range(16):  # (a chain is short; a cycle is possible)
        if seen is None:
            return False
        if out_of_descriptors(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _decode(raw: bytes) -> dict[str, Any]:
    try:
        netconf = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise UndecodableConfig(f"cannot decode network config: {exc}") from None
    except RecursionError:  # nested deeper than the decoder goes
        raise UndecodableConfig("cannot decode network config: nested too deeply") from None
    if not isinstance(netconf, dict):
        raise UndecodableConfig("cannot decode network config: expected a JSON object")
    if b"\\ud" in raw or b"\\uD" in raw:  # an escaped surrogate: only then is every string looked at
        where = _lone_surrogate(netconf)
        if where is not None:
            raise UndecodableConfig(
                f"cannot decode network config: {where} holds a lone UTF-16 surrogate (an escape \\ud800-\\udfff "
                "without its pair), which is no Unicode text"
            )
    return netconf


# Keys whose values are paths: "\udc80"-"\udcff" there name the bytes 0x80-0xff of a path that is no UTF-8,
# as the OS functions read them (os.fsencode): a path is opened, never written into the store.
PATH_KEYS = frozenset(("local_data_dir", "log_file", "configuration_path", "kubeconfig", "etcd_key_file",
                       "etcd_cert_file", "etcd_ca_cert_file"))  # fmt: skip


def _lone_surrogate(netconf: dict[str, Any]) -> str | None:
    """Where the decoded config holds a string with a lone surrogate (JSON escapes it, UTF-8 cannot encode it:
    a name with one would fail every write and log line), as a key path; None if nowhere. A path may name
    bytes that are no UTF-8 (PATH_KEYS)."""
    stack: list[tuple[str, object]] = [("", netconf)]
    while stack:
        path, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for key, item in items:
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and not _encodable(key):
                return f"a key at {path or 'the top level'}"
            if isinstance(item, str) and not _encodable(item, key in PATH_KEYS):
                return where
            if isinstance(item, dict | list):
                stack.append((where, item))
    return None


def _encodable(text: str, path: bool = False) -> bool:
    try:
        text.encode("utf-8", "surrogateescape" if path else "strict")
    except UnicodeEncodeError:
        return False
    return True


def _version_info(stdin: bytes) -> dict[str, Any]:
    """VERSION's answer, whatever stdin holds (libcni's skel reads none of it): a runtime newer than this
    plugin asks with its own newest cniVersion, and must learn what this plugin supports rather than get an
    error. The answer is in the asked version when it is one of ours, else in the newest we speak."""
    try:
        asked = json.loads(stdin).get("cniVersion", "0.1.0") if stdin.strip() else "0.1.0"
    except (ValueError, RecursionError, AttributeError):  # no JSON, or no object
        asked = None
    version = asked if isinstance(asked, str) and asked in SUPPORTED_VERSIONS else LATEST
    return {"cniVersion": version, "supportedVersions": list(SUPPORTED_VERSIONS)}


def _dispatch(call: CallEnv, netconf: dict[str, Any], version: str, runtime: Runtime) -> dict[str, Any] | None:
    from whereabouts.cni.verbs import VERBS  # only real calls load config and store code

    return VERBS[call.command](call, netconf, version, runtime)
