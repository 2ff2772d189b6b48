"""The etcd datastore against a real etcd: TLS with client certificates, etcd auth, unreachable servers."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest

from etcd_server import AUTH_PREFIX, ETCD_PASSWORD, ETCD_USER, EtcdServer, free_port
from support import netconf, run_cni
from whereabouts.config import parse_ipam
from whereabouts.errors import InvalidConfig, TryAgainLater
from whereabouts.kube.transport import Endpoint, parse_endpoint
from whereabouts.model import Owner, PoolKey
from whereabouts.service import IPAMService
from whereabouts.store.etcd import open_etcd


def etcd_ipam(server: EtcdServer, prefix: str, **extra: object) -> dict:
    ipam = {"type": "whereabouts", "range": "10.70.0.0/24", "etcd_host": server.url, "etcd_prefix": prefix}
    if server.tls:
        ipam.update(
            etcd_ca_cert_file=str(server.tls.ca),
            etcd_cert_file=str(server.tls.client_cert),
            etcd_key_file=str(server.tls.client_key),
        )
    return {**ipam, **extra}


@pytest.mark.parametrize(
    ("text", "tls", "expected"),
    [
        ("127.0.0.1:2379", False, Endpoint("http", "127.0.0.1", 2379)),
        ("127.0.0.1:2379", True, Endpoint("https", "127.0.0.1", 2379)),
        ("https://etcd.example:2379", False, Endpoint("https", "etcd.example", 2379)),
        ("http://[::1]:23790/", True, Endpoint("http", "::1", 23790)),
        ("https://kube.example", False, Endpoint("https", "kube.example", 2379)),
        ("[::1]:2379", False, Endpoint("http", "::1", 2379)),
    ],
    ids=["plain", "tls-files", "url", "ipv6-url", "no-port", "ipv6"],
)
def test_endpoint_forms(text: str, tls: bool, expected: Endpoint) -> None:
    assert parse_endpoint(text, tls=tls) == expected


def test_datastore_defaults_to_etcd_when_etcd_host_is_set(etcd: EtcdServer, etcd_prefix: str) -> None:
    assert parse_ipam(etcd_ipam(etcd, etcd_prefix)).datastore == "etcd"


def test_bad_etcd_host_is_invalid_config(etcd_prefix: str) -> None:
    with pytest.raises(InvalidConfig, match="invalid etcd_host"):
        open_etcd(parse_ipam({"type": "whereabouts", "range": "10.0.0.0/24", "etcd_host": "ftp://x:1"}).store)


@pytest.mark.parametrize(
    ("key", "path"),
    [
        ("etcd_ca_cert_file", "/nonexistent/ca.pem"),
        ("etcd_ca_cert_file", "/etc/passwd"),
        ("etcd_cert_file", "/etc/passwd"),
        ("etcd_key_file", "/etc/passwd"),
    ],
    ids=["ca-missing", "ca-no-certificate", "certificate-no-pem", "key-no-pem"],
)
def test_tls_files_that_cannot_be_used_are_invalid_config_naming_the_file(
    etcd_tls: EtcdServer, etcd_prefix: str, tmp_path: Path, key: str, path: str
) -> None:
    """A TLS file of the config that is missing or no PEM is the config's fault, code 7 naming the file (it was
    code 11 "etcd unreachable": the runtime retried a config no retry mends, and the message named no file)."""
    result = run_cni("ADD", netconf(tmp_path, **etcd_ipam(etcd_tls, etcd_prefix, **{key: path})))
    assert result.json["code"] == 7 and path in result.json["msg"] and "invalid TLS" in result.json["msg"], (
        result.stdout
    )


def test_keys_are_laid_out_as_documented(etcd: EtcdServer, etcd_prefix: str) -> None:
    cfg = parse_ipam(etcd_ipam(etcd, etcd_prefix, network_name="blue"))
    IPAMService(open_etcd(cfg.store)).add(cfg, Owner("ctr-1", "net1", "ns/pod"))
    assert etcd.dump(etcd_prefix + "/") == {
        f"{etcd_prefix}/blue/pools/-/10.70.0.0-24/4:0a460001": {
            "address": "10.70.0.1", "id": "ctr-1", "ifname": "net1", "podref": "ns/pod"},
        f"{etcd_prefix}/blue/reservations/4:0a460001": {
            "address": "10.70.0.1", "id": "ctr-1", "ifname": "net1", "podref": "ns/pod"},
        f"{etcd_prefix}/blue/attachments/ctr-1/net1": {"id": "ctr-1", "ifname": "net1", "podref": "ns/pod"},
    }  # fmt: skip


def test_tls_with_client_certificate(etcd_tls: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    conf = netconf(tmp_path, **etcd_ipam(etcd_tls, etcd_prefix))
    assert run_cni("ADD", conf, container_id="tls-1").addresses() == ["10.70.0.1/24"]
    assert list(etcd_tls.dump(etcd_prefix + "/")) == [
        f"{etcd_prefix}/-/attachments/tls-1/eth0",
        f"{etcd_prefix}/-/pools/-/10.70.0.0-24/4:0a460001",
        f"{etcd_prefix}/-/reservations/4:0a460001",
    ]
    assert run_cni("DEL", conf, container_id="tls-1").returncode == 0
    assert etcd_tls.dump(etcd_prefix + "/") == {}


def test_tls_without_client_certificate_is_refused(etcd_tls: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    ipam = etcd_ipam(etcd_tls, etcd_prefix)
    del ipam["etcd_cert_file"], ipam["etcd_key_file"]
    result = run_cni("ADD", netconf(tmp_path, **ipam))
    assert result.returncode == 1 and result.json["code"] == 11, result.stdout
    assert "etcd unreachable" in result.json["msg"]


def test_username_password_auth(etcd_auth: EtcdServer, tmp_path: Path) -> None:
    prefix = AUTH_PREFIX + "t1"
    good = etcd_ipam(etcd_auth, prefix, etcd_username=ETCD_USER, etcd_password=ETCD_PASSWORD)
    assert run_cni("ADD", netconf(tmp_path, **good), container_id="auth-1").addresses() == ["10.70.0.1/24"]
    assert len(etcd_auth.dump(prefix + "/", etcd_auth.root_token())) == 3  # entry, reservation, attachment
    bad = {**good, "etcd_password": "wrong"}
    result = run_cni("ADD", netconf(tmp_path, **bad), container_id="auth-2")
    assert result.json["code"] == 11 and "authentication failed" in result.json["msg"], result.stdout
    anonymous = etcd_ipam(etcd_auth, prefix)
    result = run_cni("ADD", netconf(tmp_path, **anonymous), container_id="auth-3")
    assert result.json["code"] == 11, result.stdout
    assert len(etcd_auth.dump(prefix + "/", etcd_auth.root_token())) == 3  # refused calls wrote nothing


def test_outside_granted_prefix_is_refused(etcd_auth: EtcdServer, tmp_path: Path) -> None:
    ipam = etcd_ipam(etcd_auth, "/elsewhere", etcd_username=ETCD_USER, etcd_password=ETCD_PASSWORD)
    result = run_cni("ADD", netconf(tmp_path, **ipam))
    assert result.json["code"] == 11 and "permission denied" in result.json["msg"], result.stdout


@pytest.mark.parametrize("command", ["ADD", "DEL", "CHECK"])
def test_unreachable_etcd_is_code_11_within_seconds(command: str, tmp_path: Path) -> None:
    dead = f"127.0.0.1:{free_port()},127.0.0.2:{free_port()}"
    conf = netconf(tmp_path, range="10.70.0.0/24", etcd_host=dead)
    started = time.monotonic()
    result = run_cni(command, conf)
    assert time.monotonic() - started < 10
    assert result.returncode == 1 and result.json["code"] == 11, result.stdout
    assert "etcd unreachable" in result.json["msg"] and "127.0.0.2" in result.json["msg"]


@pytest.mark.slow
def test_endpoints_that_accept_and_never_answer_are_bounded_by_the_calls_deadline(tmp_path: Path) -> None:
    """Six endpoints that accept and never answer would take six read timeouts (60 s) one after another:
    the call's 45 s deadline ends it first, with code 11."""
    silent = [socket.create_server(("127.0.0.1", 0), backlog=16) for _ in range(6)]
    hosts = ",".join(f"127.0.0.1:{server.getsockname()[1]}" for server in silent)
    started = time.monotonic()
    result = run_cni("ADD", netconf(tmp_path, range="10.70.0.0/24", etcd_host=hosts))
    elapsed = time.monotonic() - started
    for server in silent:
        server.close()
    assert result.json["code"] == 11 and "deadline" in result.json["msg"], result.stdout
    assert 44 < elapsed < 50


def test_status_reports_unreachable_etcd(tmp_path: Path) -> None:
    conf = netconf(tmp_path, "1.1.0", range="10.70.0.0/24", etcd_host=f"127.0.0.1:{free_port()}")
    result = run_cni("STATUS", conf)
    assert result.json["code"] == 50 and "etcd unreachable" in result.json["msg"]


def test_failover_to_a_live_endpoint(etcd: EtcdServer, etcd_prefix: str, tmp_path: Path) -> None:
    ipam = etcd_ipam(etcd, etcd_prefix)
    ipam["etcd_host"] = f"127.0.0.1:{free_port()},{etcd.url}"
    assert run_cni("ADD", netconf(tmp_path, **ipam)).addresses() == ["10.70.0.1/24"]


def test_store_error_maps_to_try_again(etcd: EtcdServer) -> None:
    cfg = parse_ipam(etcd_ipam(etcd, "/x"))
    store = open_etcd(cfg.store)
    with pytest.raises(TryAgainLater, match="etcd refused kv/bogus"):
        store.call("kv/bogus", {})


def test_no_descriptor_left_to_load_a_tls_file_is_no_config_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Out of file descriptors while loading the CA, the file may be fine: code 11, with the cause kept for the
    node daemon (which declines the call, its caller has descriptors), not code 7 naming the file."""
    import errno
    import ssl

    from whereabouts.cni.call import _out_of_descriptors

    def no_descriptor(**_: object) -> ssl.SSLContext:
        raise OSError(errno.EMFILE, "Too many open files")

    ca = tmp_path / "ca.pem"
    ca.write_text("a CA")
    with socket.socket() as listener:  # (the connection fails at its TLS context, after the TCP connect)
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setattr(ssl, "create_default_context", no_descriptor)
        ipam = {"type": "whereabouts", "range": "10.70.0.0/24", "etcd_host": f"127.0.0.1:{listener.getsockname()[1]}",
                "etcd_ca_cert_file": str(ca)}  # fmt: skip
        cfg = parse_ipam(ipam)
        with pytest.raises(TryAgainLater) as caught:
            IPAMService(open_etcd(cfg.store)).add(cfg, Owner("ctr-1", "net1"))
    assert _out_of_descriptors(caught.value)


def test_a_tls_file_that_is_a_fifo_is_invalid_config_not_a_call_that_never_ends(
    etcd_tls: EtcdServer, etcd_prefix: str, tmp_path: Path
) -> None:
    """OpenSSL opens the file it is given: a FIFO blocked the call in open() for good (in the node daemon, a
    call slot each), a device was opened by the plugin, as root. A TLS file must be a regular file."""
    fifo = tmp_path / "ca.pem"
    os.mkfifo(fifo)
    result = run_cni("ADD", netconf(tmp_path, **etcd_ipam(etcd_tls, etcd_prefix, etcd_ca_cert_file=str(fifo))),
                     timeout=20)  # fmt: skip
    assert result.json["code"] == 7 and "not a regular file" in result.json["msg"], result.stdout


@pytest.mark.parametrize(
    "credentials",
    [{"etcd_username": "ipam"}, {"etcd_password": "secret"}, {"etcd_username": "ipam", "etcd_password": "secret"}],
    ids=["username-alone", "password-alone", "both-auth-off"],
)
def test_credentials_an_etcd_without_authentication_does_not_need_are_no_failure(
    etcd: EtcdServer, etcd_prefix: str, tmp_path: Path, credentials: dict[str, str]
) -> None:
    """As the Go plugin: a username without a password is sent as no credential, and an etcd that says
    authentication is not enabled is used without a token (every call failed with code 11 before)."""
    conf = netconf(tmp_path, **etcd_ipam(etcd, etcd_prefix, **credentials))
    assert run_cni("ADD", conf, container_id="auth-off").addresses() == ["10.70.0.1/24"]
    assert run_cni("DEL", conf, container_id="auth-off").returncode == 0
    assert etcd.dump(etcd_prefix + "/") == {}


def test_a_username_alone_on_an_etcd_with_authentication_is_refused_by_etcd(
    etcd_auth: EtcdServer, tmp_path: Path
) -> None:
    """No password: nothing is sent, and etcd with authentication on refuses the anonymous call (code 11)."""
    ipam = etcd_ipam(etcd_auth, AUTH_PREFIX + "t3", etcd_username=ETCD_USER)
    result = run_cni("ADD", netconf(tmp_path, **ipam))
    assert result.json["code"] == 11 and "user name is empty" in result.json["msg"], result.stdout


def test_a_network_named_dash_is_not_the_default_network(etcd: EtcdServer, etcd_prefix: str) -> None:
    """`-` stands for the default network in a key: a network named `-` wrote the default network's keys, so
    both handed out the same addresses as if one pool. Its keys are `%2D` now; other names' as they were."""
    store = open_etcd(parse_ipam(etcd_ipam(etcd, etcd_prefix)).store)
    default, dash = (parse_ipam(etcd_ipam(etcd, etcd_prefix, network_name=name)) for name in ("", "-"))
    held = [IPAMService(store).add(cfg, Owner(f"ctr-{i}", "net1")) for i, cfg in enumerate((default, dash))]
    assert [[a.address for a in assigned] for assigned in held] == [["10.70.0.1/24"], ["10.70.0.1/24"]]  # type: ignore[union-attr]
    keys = sorted(etcd.dump(etcd_prefix + "/"))
    assert f"{etcd_prefix}/-/pools/-/10.70.0.0-24/4:0a460001" in keys
    assert f"{etcd_prefix}/%2D/pools/-/10.70.0.0-24/4:0a460001" in keys
    assert sorted(store.pool_keys()) == [PoolKey("", "10.70.0.0/24"), PoolKey("-", "10.70.0.0/24")]
    assert store.pools_holding("-", "ctr-1", "net1") == [PoolKey("-", "10.70.0.0/24")]
    assert store.pools_holding("", "ctr-1", "net1") == []


def test_credentials_written_into_etcd_host_are_not_shown(tmp_path: Path) -> None:
    """A URL with a user and password in it is no endpoint (code 7), and the message names it without them."""
    conf = netconf(tmp_path, range="10.70.0.0/24", etcd_host="http://admin:hunter2@127.0.0.1:2379,127.0.0.1:x")
    result = run_cni("ADD", conf)
    assert result.json["code"] == 7 and "invalid etcd_host" in result.json["msg"], result.stdout
    assert "hunter2" not in result.stdout + result.stderr and "admin" not in result.stdout + result.stderr
    assert "***@127.0.0.1:2379" in result.json["msg"]


def test_a_network_name_too_long_for_a_key_is_a_config_error(
    etcd: EtcdServer, etcd_prefix: str, tmp_path: Path
) -> None:
    """A network name of megabytes made every request one etcd refused: code 11, retried for ever. It is the
    config's fault: code 7, before any request."""
    conf = netconf(tmp_path, **etcd_ipam(etcd, etcd_prefix, network_name="n" * 2_000_000))
    result = run_cni("ADD", conf)
    assert result.json["code"] == 7 and "invalid network_name" in result.json["msg"], result.stdout[:500]
    assert len(result.stdout) < 2000
    assert run_cni("ADD", netconf(tmp_path, **etcd_ipam(etcd, etcd_prefix, network_name="n" * 253))).returncode == 0
