"""CNI protocol facts: versions, verbs, the environment each verb needs, CNI_ARGS."""

from __future__ import annotations

from whereabouts.errors import IncompatibleVersion, InvalidEnvironment, shown
from whereabouts.record import record

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing; type checkers go by the name
if TYPE_CHECKING:
    from collections.abc import Mapping

SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = SUPPORTED_VERSIONS[-1]

# Environment each verb requires (as libcni's skel does); IPAM plugins never touch the netns themselves.
REQUIRED_ENV = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
    "VERSION": (),
}
# The first spec version that has each verb.
MIN_VERSION = {"CHECK": "0.4.0", "GC": "1.1.0", "STATUS": "1.1.0"}
KNOWN_CNI_ARGS = frozenset(
    {
        "IgnoreUnknown",
        "IP",
        "GATEWAY",
        "MAC",
        "K8S_POD_NAMESPACE",
        "K8S_POD_NAME",
        "K8S_POD_INFRA_CONTAINER_ID",
        "K8S_POD_UID",
    }
)


def version_tuple(version: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in version.split("."))
    except ValueError:
        raise IncompatibleVersion(
            f"unsupported cniVersion {shown(version)}; supported: {', '.join(SUPPORTED_VERSIONS)}"
        ) from None


def check_version(version: str, command: str) -> None:
    if version not in SUPPORTED_VERSIONS:
        raise IncompatibleVersion(
            f"unsupported cniVersion {shown(version)}; supported: {', '.join(SUPPORTED_VERSIONS)}",
        )
    minimum = MIN_VERSION.get(command)
    if minimum and version_tuple(version) < version_tuple(minimum):
        raise IncompatibleVersion(f"{command} needs cniVersion {minimum} or later; the config says {version}")


@record(frozen=True)
class CallEnv:
    command: str
    container_id: str
    ifname: str
    netns: str
    args: Mapping[str, str]
    nodename: str = ""  # NODENAME: the node whose slice Fast IPAM allocates from (else a file, else the hostname)
    flat_file: str = ""  # WHEREABOUTS_FLAT_FILE: where install-cni wrote the flat file (see whereabouts.config)

    @property
    def podref(self) -> str:
        namespace, name = self.args.get("K8S_POD_NAMESPACE", ""), self.args.get("K8S_POD_NAME", "")
        return f"{namespace}/{name}" if namespace and name else ""


def read_env(environ: Mapping[str, str]) -> CallEnv:
    command = environ.get("CNI_COMMAND", "")
    if command not in REQUIRED_ENV:
        raise InvalidEnvironment(f"unknown CNI_COMMAND {shown(command)}; expected one of {', '.join(REQUIRED_ENV)}")
    missing = [name for name in REQUIRED_ENV[command] if not environ.get(name)]
    if missing:
        raise InvalidEnvironment(f"{command} needs environment variables {', '.join(missing)}")
    for name in RECORDED_ENV:  # (bytes that are no UTF-8: no store records them, nor the Go plugin's CRDs)
        value = environ.get(name, "")
        if not value.isascii() and not _utf8(value):
            raise InvalidEnvironment(f"invalid {name} {shown(value)}: not UTF-8 text")
    if command == "ADD":  # (a DEL releases whatever an ADD recorded before)
        _check_ifname(environ.get("CNI_IFNAME", ""))
    return CallEnv(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        netns=environ.get("CNI_NETNS", ""),
        args=parse_cni_args(environ.get("CNI_ARGS", "")),
        nodename=environ.get("NODENAME", "").strip(),
        flat_file=environ.get("WHEREABOUTS_FLAT_FILE", ""),
    )


RECORDED_ENV = ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_ARGS", "NODENAME")
IFNAMSIZ = 16  # Linux: an interface name is at most 15 bytes


def _check_ifname(name: str) -> None:
    """An interface name as libcni's ValidateInterfaceName takes one (at most 15 bytes, not '.' or '..', no '/',
    ':' or whitespace), and printable: the name is recorded with the address, and operators' tools show it."""
    if (
        len(name.encode()) >= IFNAMSIZ
        or name in (".", "..")
        or not name.isprintable()
        or any(char in "/:" or char.isspace() for char in name)
    ):
        raise InvalidEnvironment(
            f"invalid CNI_IFNAME {shown(name)}: expected an interface name (at most 15 bytes; no '/', ':', "
            "whitespace or control characters; not '.' or '..')"
        )


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate: a byte os.environ read as no UTF-8
        return False
    return True


def parse_cni_args(text: str) -> dict[str, str]:
    """'K=V;K=V'. Unknown keys are an error unless IgnoreUnknown=1|true is among them."""
    args: dict[str, str] = {}
    for pair in filter(None, text.split(";")):
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:  # a blank key is none: it would name nothing in an error, or hide under ''
            raise InvalidEnvironment(f"invalid CNI_ARGS entry {shown(pair)}: expected KEY=VALUE")
        args[key] = value.strip()
    ignore_unknown = args.get("IgnoreUnknown", "").lower() in ("1", "true")
    unknown = sorted(set(args) - KNOWN_CNI_ARGS)
    if unknown and not ignore_unknown:
        named = ", ".join(shown(key)[1:-1] for key in unknown[:10]) + (", ..." if len(unknown) > 10 else "")
        raise InvalidEnvironment(f"unknown CNI_ARGS keys {named} (set IgnoreUnknown=true to allow them)")
    return args
