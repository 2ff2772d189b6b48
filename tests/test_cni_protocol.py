"""The CNI protocol's small parsers: CNI_ARGS, the environment of each verb, and the version checks.

Hostile input (an '=' in a value, empty or blank keys, duplicates, every spelling of IgnoreUnknown, huge
values) gets a clear CNI error naming what is wrong, code 4 for the environment and 1 for a version,
never a traceback; and an error message stays bounded whatever the input's size.
"""

from __future__ import annotations

import pytest

from whereabouts.cni.protocol import (
    LATEST,
    REQUIRED_ENV,
    SUPPORTED_VERSIONS,
    check_version,
    parse_cni_args,
    read_env,
    version_tuple,
)
from whereabouts.errors import IncompatibleVersion, InvalidEnvironment

POD = {"K8S_POD_NAMESPACE": "ns", "K8S_POD_NAME": "web-0"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", {}),
        (";", {}),
        (";;IP=10.0.0.5;", {"IP": "10.0.0.5"}),  # empty entries are skipped
        ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0", POD),
        (" IP = 10.0.0.5 ", {"IP": "10.0.0.5"}),  # whitespace around keys and values is not part of them
        ("K8S_POD_NAME=", {"K8S_POD_NAME": ""}),  # an empty value is a value
        ("IP=10.0.0.5=x", {"IP": "10.0.0.5=x"}),  # the first '=' splits: the rest is the value's
        ("K8S_POD_UID=a==b", {"K8S_POD_UID": "a==b"}),
        ("IP=10.0.0.1;IP=10.0.0.2", {"IP": "10.0.0.2"}),  # a duplicate key: the last one counts, as in libcni
        ("K8S_POD_NAME=a;K8S_POD_NAME=b", {"K8S_POD_NAME": "b"}),
        ("IgnoreUnknown=1;FOO=bar", {"IgnoreUnknown": "1", "FOO": "bar"}),
        ("IgnoreUnknown=true;FOO=bar", {"IgnoreUnknown": "true", "FOO": "bar"}),
        ("IgnoreUnknown=TRUE;FOO=bar", {"IgnoreUnknown": "TRUE", "FOO": "bar"}),  # case-insensitive, as libcni
        ("IgnoreUnknown=True;FOO=bar", {"IgnoreUnknown": "True", "FOO": "bar"}),
        ("IgnoreUnknown= true ;FOO=bar", {"IgnoreUnknown": "true", "FOO": "bar"}),
        ("FOO=bar;IgnoreUnknown=1", {"FOO": "bar", "IgnoreUnknown": "1"}),  # anywhere in the list
        ("IgnoreUnknown=0;IgnoreUnknown=1;FOO=bar", {"IgnoreUnknown": "1", "FOO": "bar"}),
        ("IgnoreUnknown=yes", {"IgnoreUnknown": "yes"}),  # not a yes, but with no unknown key nothing to ignore
        (
            "MAC=00:11:22:33:44:55;K8S_POD_INFRA_CONTAINER_ID=abc",
            {"MAC": "00:11:22:33:44:55", "K8S_POD_INFRA_CONTAINER_ID": "abc"},
        ),
    ],
    ids=repr,
)
def test_cni_args_parse(text: str, expected: dict[str, str]) -> None:
    assert parse_cni_args(text) == expected


@pytest.mark.parametrize(
    "text, named",
    [
        ("garbage", "'garbage'"),  # no '='
        ("IP", "'IP'"),
        ("=10.0.0.5", "'=10.0.0.5'"),  # an empty key
        ("=", "'='"),
        ("==", "'=='"),
        (" =v", "' =v'"),  # a blank key is no key either
        ("IgnoreUnknown=1; =v", "' =v'"),  # and not one that IgnoreUnknown lets through
        ("K8S_POD_NAME=p;;IP", "'IP'"),
    ],
    ids=repr,
)
def test_cni_args_entries_without_a_key_are_code_4_naming_the_entry(text: str, named: str) -> None:
    with pytest.raises(InvalidEnvironment) as caught:
        parse_cni_args(text)
    assert caught.value.code == 4
    assert f"invalid CNI_ARGS entry {named}" in str(caught.value)


@pytest.mark.parametrize(
    "text, named",
    [
        ("FOO=bar", "FOO"),
        ("K8S_POD_NAME=p;FOO=bar", "FOO"),
        ("IgnoreUnknown=false;FOO=bar", "FOO"),
        ("IgnoreUnknown=0;FOO=bar", "FOO"),
        ("IgnoreUnknown=yes;FOO=bar", "FOO"),  # only 1 and true (any case) ignore
        ("IgnoreUnknown=;FOO=bar", "FOO"),
        ("IgnoreUnknown=1;IgnoreUnknown=0;FOO=bar", "FOO"),  # the last one counts
        ("ignoreunknown=1;FOO=bar", "ignoreunknown"),  # keys are case-sensitive
        ("k8s_pod_name=p", "k8s_pod_name"),
    ],
    ids=repr,
)
def test_unknown_cni_args_keys_are_code_4_unless_ignored(text: str, named: str) -> None:
    with pytest.raises(InvalidEnvironment) as caught:
        parse_cni_args(text)
    assert caught.value.code == 4
    assert "unknown CNI_ARGS keys" in str(caught.value) and named in str(caught.value)
    assert "IgnoreUnknown=true" in str(caught.value)  # says how to allow them


@pytest.mark.parametrize(
    "text",
    ["F" * 100_000 + "=1", ";".join(f"K{n}=v" for n in range(10_000)), "X=" + "v" * 100_000 + ";" + "Y" * 100_000],
    ids=["huge-key", "many-keys", "huge-entry"],
)
def test_cni_args_errors_stay_short_whatever_the_input(text: str) -> None:
    with pytest.raises(InvalidEnvironment) as caught:
        parse_cni_args(text)
    assert len(str(caught.value)) < 2000


def full_env(command: str, **extra: str) -> dict[str, str]:
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": "ctr", "CNI_NETNS": "/var/run/netns/x", "CNI_IFNAME": "eth0",
           "CNI_PATH": "/opt/cni/bin"}  # fmt: skip
    return {**env, **extra}


@pytest.mark.parametrize("command", list(REQUIRED_ENV), ids=list(REQUIRED_ENV))
def test_read_env_takes_each_verb_with_its_environment(command: str) -> None:
    env = {"CNI_COMMAND": command, **{name: f"v-{name}" for name in REQUIRED_ENV[command]}}
    call = read_env(env)
    assert call.command == command
    assert call.container_id == env.get("CNI_CONTAINERID", "") and call.ifname == env.get("CNI_IFNAME", "")
    assert call.args == {} and call.podref == "" and call.nodename == ""


@pytest.mark.parametrize(
    "command, missing",
    [(command, name) for command, names in REQUIRED_ENV.items() for name in names],
    ids=[f"{command}-without-{name}" for command, names in REQUIRED_ENV.items() for name in names],
)
def test_read_env_names_each_missing_variable(command: str, missing: str) -> None:
    for env in ({k: v for k, v in full_env(command).items() if k != missing}, full_env(command, **{missing: ""})):
        with pytest.raises(InvalidEnvironment) as caught:
            read_env(env)
        assert caught.value.code == 4 and missing in str(caught.value) and command in str(caught.value)


def test_del_needs_no_netns() -> None:
    """A DEL may come after the container's netns is gone: the runtime sends none."""
    env = full_env("DEL")
    del env["CNI_NETNS"]
    assert read_env(env).netns == ""


@pytest.mark.parametrize(
    "command",
    ["", "add", "ADDD", "DELETE", " ADD", "ADD\n", "VERSION;ADD", "x" * 10_000],
    ids=["empty", "lowercase", "typo", "DELETE", "leading-space", "newline", "injected", "huge"],
)
def test_read_env_refuses_unknown_commands_with_code_4(command: str) -> None:
    with pytest.raises(InvalidEnvironment) as caught:
        read_env(full_env(command))
    assert caught.value.code == 4 and "unknown CNI_COMMAND" in str(caught.value)
    assert len(str(caught.value)) < 1000


@pytest.mark.parametrize(
    "cni_args, podref",
    [
        ("K8S_POD_NAMESPACE=ns;K8S_POD_NAME=web-0", "ns/web-0"),
        ("K8S_POD_NAMESPACE=ns", ""),  # half a pod reference is none
        ("K8S_POD_NAME=web-0", ""),
        ("K8S_POD_NAMESPACE=;K8S_POD_NAME=web-0", ""),
        ("IgnoreUnknown=1;K8S_POD_NAMESPACE= ns ;K8S_POD_NAME= web-0;FOO=1", "ns/web-0"),
    ],
    ids=repr,
)
def test_podref_needs_both_namespace_and_name(cni_args: str, podref: str) -> None:
    assert read_env(full_env("ADD", CNI_ARGS=cni_args)).podref == podref


@pytest.mark.parametrize("nodename, expected", [("node-1", "node-1"), (" node-1\n", "node-1"), ("", "")], ids=repr)
def test_nodename_is_read_stripped(nodename: str, expected: str) -> None:
    assert read_env(full_env("ADD", NODENAME=nodename)).nodename == expected


def test_read_env_refuses_bad_cni_args_with_code_4() -> None:
    with pytest.raises(InvalidEnvironment):
        read_env(full_env("ADD", CNI_ARGS="FOO=bar"))


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS, ids=SUPPORTED_VERSIONS)
def test_every_supported_version_serves_add_and_del(version: str) -> None:
    for command in ("ADD", "DEL", "VERSION"):
        check_version(version, command)


@pytest.mark.parametrize(
    "version",
    [
        "",
        "1.0",
        "1",
        "1.0.0 ",
        " 1.0.0",
        "01.0.0",
        "1.0.0.0",
        "0.5.0",
        "2.0.0",
        "1.2.0",
        "v1.0.0",
        "latest",
        "x" * 10_000,
    ],
    ids=lambda v: repr(v)[:20],
)
def test_unsupported_versions_are_code_1(version: str) -> None:
    with pytest.raises(IncompatibleVersion) as caught:
        check_version(version, "ADD")
    assert caught.value.code == 1 and "unsupported cniVersion" in str(caught.value)
    assert LATEST in str(caught.value)  # says what is supported
    assert len(str(caught.value)) < 1000


@pytest.mark.parametrize(
    "version, command, allowed",
    [
        ("0.3.1", "CHECK", False),
        ("0.4.0", "CHECK", True),
        ("1.0.0", "CHECK", True),
        ("1.0.0", "GC", False),
        ("1.1.0", "GC", True),
        ("1.0.0", "STATUS", False),
        ("1.1.0", "STATUS", True),
        ("0.1.0", "DEL", True),
    ],
    ids=lambda v: str(v),
)
def test_verbs_need_the_spec_version_that_introduced_them(version: str, command: str, allowed: bool) -> None:
    if allowed:
        check_version(version, command)
        return
    with pytest.raises(IncompatibleVersion) as caught:
        check_version(version, command)
    assert caught.value.code == 1 and command in str(caught.value) and version in str(caught.value)


@pytest.mark.parametrize(
    "version, expected",
    [("0.1.0", (0, 1, 0)), ("1.1.0", (1, 1, 0)), ("0.10.0", (0, 10, 0))],
    ids=["0.1.0", "1.1.0", "compared-as-numbers"],
)
def test_version_tuple(version: str, expected: tuple[int, ...]) -> None:
    assert version_tuple(version) == expected
    assert version_tuple("0.10.0") > version_tuple("0.9.0")


@pytest.mark.parametrize("version", ["", "x", "1..0", "1.0.x", "1.0.0-rc1"], ids=repr)
def test_version_tuple_refuses_what_is_not_a_version_with_code_1(version: str) -> None:
    with pytest.raises(IncompatibleVersion):
        version_tuple(version)


@pytest.mark.parametrize(
    "ifname",
    ["eth0\x1b[2J", "net1\r", "net\n1", "a b", "a/b", "a:b", ".", "..", "x" * 16, "\u202eeth0", "ä" * 8],
    ids=["escape", "carriage-return", "newline", "space", "slash", "colon", "dot", "dot-dot", "16-bytes", "bidi",
         "16-utf8-bytes"],
)  # fmt: skip
def test_add_refuses_an_interface_name_linux_would_not_take_with_code_4(ifname: str) -> None:
    with pytest.raises(InvalidEnvironment, match="invalid CNI_IFNAME") as raised:
        read_env(full_env("ADD", CNI_IFNAME=ifname))
    assert raised.value.code == 4


@pytest.mark.parametrize("ifname", ["eth0", "net1", "x" * 15, "bär0", "eth0.100", "veth-a_b"])
def test_add_takes_interface_names_linux_takes(ifname: str) -> None:
    assert read_env(full_env("ADD", CNI_IFNAME=ifname)).ifname == ifname


def test_del_releases_whatever_interface_name_was_recorded() -> None:
    assert read_env(full_env("DEL", CNI_IFNAME="net\x1b1")).ifname == "net\x1b1"
