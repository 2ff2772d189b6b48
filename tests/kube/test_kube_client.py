"""The REST client's paths: an object name is one percent-encoded path segment, whatever it holds. Shown on
the wire (a raw loopback server keeps every byte) and on a real kube-apiserver (its audit log)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from kube_server import KubeAPIServer
from raw_http import RawHTTPServer
from whereabouts.errors import InvalidConfig, TryAgainLater
from whereabouts.kube.client import KubeClient
from whereabouts.kube.credentials import Credentials, load_credentials
from whereabouts.kube.transport import Endpoint, TLSSettings

GROUP_PATH = "/apis/whereabouts.cni.cncf.io/v1alpha1/namespaces"
# a second request whose head ends with the rest of the first one's: the plugin's Authorization header
SMUGGLE = "x HTTP/1.1\r\nHost: h\r\n\r\nDELETE {group}/{ns}/ippools/victim HTTP/1.1\r\nX-Rest:"

# names a network config could make; each must stay one segment of the path it was meant for
HOSTILE = {
    "crlf-smuggled-delete": SMUGGLE,
    "lf-smuggled-delete": "x\nDELETE {group}/{ns}/ippools/victim HTTP/1.1\n\n",
    "crlf-without-slash": "x HTTP/1.1\r\nX-Evil: 1\r\n\r\nGET x",
    "dot-dot-slash": "../../../../api/v1/namespaces/kube-system/secrets",
    "dot-dot": "..",
    "dot": ".",
    "percent-encoded-slash": "..%2F..%2Fsecrets",
    "query": "x?watch=true",
    "fragment": "x#y",
    "space": "a b",
    "nul": "a\x00b",
    "non-ascii": "b\u00e4r",
}


def hostile(key: str, namespace: str) -> str:
    return HOSTILE[key].format(group=GROUP_PATH, ns=namespace)


def calls(kube: KubeClient, name: str) -> list[Callable[[], object]]:
    """The requests the datastore makes with an object's name: read, guarded write, delete."""
    test = [{"op": "test", "path": "/spec/allocations/1", "value": None}]
    return [
        lambda: kube.get(kube.path("ippools", name)),
        lambda: kube.patch(kube.path("ippools", name), test),
        lambda: kube.delete(kube.path("overlappingrangeipreservations", name)),
    ]


@pytest.fixture
def raw() -> Iterator[RawHTTPServer]:
    srv = RawHTTPServer()
    yield srv
    srv.close()


@pytest.mark.parametrize("key", HOSTILE, ids=HOSTILE)
def test_a_hostile_name_never_makes_a_second_request_line(raw: RawHTTPServer, key: str) -> None:
    name = hostile(key, "ns")
    kube = KubeClient(Credentials(Endpoint("http", "127.0.0.1", raw.port), "", TLSSettings(), "ns", token="t"))
    sent = 0
    for call in calls(kube, name):
        try:
            call()
        except InvalidConfig:
            continue  # no name the API server could take: nothing sent
        except TryAgainLater:
            pass  # the 404 of a PATCH
        sent += 1
    kube.close()
    raw.wait_idle()
    lines = raw.requests
    assert len(lines) == sent  # every request line on the wire is one the client meant to send
    for line in lines:
        target = line.split(" ")[1]
        plural, _, segment = target.removeprefix(f"{GROUP_PATH}/ns/").partition("/")
        assert plural in ("ippools", "overlappingrangeipreservations") and "/" not in segment, line
        assert unquote(segment) == name  # the whole name, as one segment


@pytest.mark.parametrize("name", ["..", ".", "a/b", "a%2Fb"], ids=["dot-dot", "dot", "slash", "percent"])
def test_names_that_cannot_be_a_path_segment_are_refused(name: str) -> None:
    kube = KubeClient(Credentials(Endpoint("http", "127.0.0.1", 1), "", TLSSettings(), "ns"))
    with pytest.raises(InvalidConfig, match="cannot be a path segment"):
        kube.path("ippools", name)


def test_every_segment_is_percent_encoded() -> None:
    kube = KubeClient(Credentials(Endpoint("http", "127.0.0.1", 1), "/prefix", TLSSettings(), "n s"))
    path = kube.resource("pods", "a b\u00e4?", namespace="n s")
    assert path == "/prefix/api/v1/namespaces/n%20s/pods/a%20b%C3%A4%3F"


def test_hostile_names_reach_no_other_path_on_the_api_server(
    kube: KubeAPIServer, kube_namespace: str, plugin_kubeconfig: Path
) -> None:
    pools = f"{GROUP_PATH}/{kube_namespace}/ippools"
    victim = {"apiVersion": "whereabouts.cni.cncf.io/v1alpha1", "kind": "IPPool",
              "metadata": {"name": "victim", "namespace": kube_namespace},
              "spec": {"range": "10.90.0.0/24", "allocations": {}}}  # fmt: skip
    kube.request("POST", pools, victim)
    before = len(kube.audited())
    client = KubeClient(load_credentials(str(plugin_kubeconfig)))
    for key in HOSTILE:
        for call in calls(client, hostile(key, kube_namespace)):
            with contextlib.suppress(InvalidConfig, TryAgainLater):
                call()
    client.close()
    assert "victim" in kube.objects(kube_namespace, "ippools")
    # not the session's node daemon's own requests in other tests' namespaces (its watches go on meanwhile)
    others = re.compile(rf"{re.escape(GROUP_PATH)}/(?!{kube_namespace}/)wa-[0-9a-f]{{10}}/")
    uris = [event["requestURI"] for event in kube.audited()[before:] if not others.match(event["requestURI"])]
    assert uris, "no request reached the API server"
    for uri in uris:
        plural, _, segment = uri.removeprefix(f"{GROUP_PATH}/{kube_namespace}/").partition("/")
        assert plural in ("ippools", "overlappingrangeipreservations") and "/" not in segment, uri
        assert "victim" not in uri


def test_a_404_that_is_no_api_servers_not_found_is_an_error(raw: RawHTTPServer) -> None:
    """A proxy (or a wrong server path) answering 404 to everything says nothing of the object: no read takes it
    for "not there" (a pod taken for gone has its addresses freed while it runs)."""
    kube = KubeClient(Credentials(Endpoint("http", "127.0.0.1", raw.port), "", TLSSettings(), "ns", token="t"))
    with pytest.raises(TryAgainLater, match="404"):
        kube.get(kube.resource("pods", "web-0", namespace="ns"), named=True)
    with pytest.raises(TryAgainLater, match="404"):
        kube.get(kube.path("ippools", "x"))
    with pytest.raises(TryAgainLater, match="404"):
        kube.delete(kube.path("overlappingrangeipreservations", "x"))
    kube.close()


def test_a_pod_is_gone_only_when_the_api_server_names_it(kube: KubeAPIServer, kube_namespace: str,
                                                        tmp_path: Path) -> None:  # fmt: skip
    admin = kube.kubeconfig(tmp_path / "admin", token=kube.admin_token)
    client = KubeClient(load_credentials(str(admin)))
    assert client.get(client.resource("pods", "nobody", namespace=kube_namespace), named=True) is None
    client.close()
    # the same API server under a path it does not serve: its 404 is a Status NotFound naming no pod
    wrong = tmp_path / "wrong"
    wrong.write_text(admin.read_text().replace(f"server: {kube.url}", f"server: {kube.url}/not-the-api"))
    client = KubeClient(load_credentials(str(wrong)))
    with pytest.raises(TryAgainLater, match="404"):
        client.get(client.resource("pods", "nobody", namespace=kube_namespace), named=True)
    client.close()
