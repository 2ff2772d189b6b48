"""The docs' examples hold what they show: every NetworkAttachmentDefinition in docs/ and the README parses as
an ipam config; the first example a reader meets (README, install.md, configuration.md) and every `bridge`
example that makes the bridge a gateway set `gateway` (else the first pod gets the bridge's own address); and
wherever a pod asks Multus for a static address (`"ips"` in its network selection), the
NetworkAttachmentDefinition shown declares `"capabilities": {"ips": true}`, without which Multus does not hand
the address to the plugin as runtimeConfig.ips."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from whereabouts.config import parse_ipam

REPO = Path(__file__).resolve().parents[1]
DOCS = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
YAML_BLOCK = re.compile(r"```ya?ml\n(.*?)```", re.DOTALL)


def yaml_documents(path: Path) -> list[Any]:
    return [doc for block in YAML_BLOCK.findall(path.read_text()) for doc in yaml.safe_load_all(block) if doc]


def nads(path: Path) -> list[dict[str, Any]]:
    """The network configs of the NetworkAttachmentDefinitions the page shows."""
    docs = yaml_documents(path)
    return [json.loads(d["spec"]["config"]) for d in docs if d.get("kind") == "NetworkAttachmentDefinition"]


def asks_for_static_addresses(path: Path) -> bool:
    for doc in yaml_documents(path):
        annotations = (doc.get("metadata") or {}).get("annotations") or {}
        selection = annotations.get("k8s.v1.cni.cncf.io/networks", "")
        if selection.strip().startswith("[") and any("ips" in element for element in json.loads(selection)):
            return True
    return False


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_a_static_address_example_shows_the_ips_capability_multus_needs(path: Path) -> None:
    if not asks_for_static_addresses(path):
        return
    shown = nads(path)
    assert shown, f"{path.name}: a static address asked for, but no NetworkAttachmentDefinition shown"
    assert all(conf.get("capabilities", {}).get("ips") is True for conf in shown), path.name


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_network_attachment_definition_shown_parses(path: Path) -> None:
    for conf in nads(path):
        plugins = conf.get("plugins", [conf])  # a config list, or a single config
        ipams = [plugin["ipam"] for plugin in plugins if plugin.get("ipam", {}).get("type") == "whereabouts"]
        assert ipams, f"{path.name}: a NetworkAttachmentDefinition without whereabouts: {conf}"
        for ipam in ipams:  # the examples are for clusters
            parse_ipam({"datastore": "kubernetes", **ipam}, conf.get("name", ""), conf.get("allowPersistentIPs"))


def test_the_configuration_page_shows_a_static_address() -> None:
    assert asks_for_static_addresses(REPO / "docs" / "configuration.md")


INLINE_IPAM = re.compile(r'`"ipam": (\{[^`]*\})`')
JSON_BLOCK = re.compile(r"```json\n(.*?)```", re.DOTALL)


def network_configs(path: Path) -> list[dict[str, Any]]:
    """The network configs (or bare ipam objects, as {"ipam": ...}) the page shows, in page order."""
    text, found = path.read_text(), []
    matches = sorted([*INLINE_IPAM.finditer(text), *JSON_BLOCK.finditer(text), *YAML_BLOCK.finditer(text)],
                     key=lambda m: m.start())  # fmt: skip
    for match in matches:
        body = match.group(1)
        if "..." in body:
            continue  # a mention with keys left out, not an example
        if match.re is YAML_BLOCK:
            found += [json.loads(d["spec"]["config"]) for d in yaml.safe_load_all(body)
                      if isinstance(d, dict) and d.get("kind") == "NetworkAttachmentDefinition"]  # fmt: skip
            continue
        doc = _json(body) or _json("{" + body + "}")  # a block may show a fragment: `"ipam": {...}`
        if isinstance(doc, dict):
            found.append({"ipam": doc} if match.re is INLINE_IPAM else doc)
    return found


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def whereabouts_plugins(conf: dict[str, Any]) -> list[dict[str, Any]]:
    plugins = conf.get("plugins") if isinstance(conf.get("plugins"), list) else [conf]
    return [p for p in plugins if isinstance(p, dict) and (p.get("ipam") or {}).get("type") == "whereabouts"]


@pytest.mark.parametrize("name", ["README.md", "install.md", "configuration.md"])
def test_the_first_example_a_reader_meets_sets_the_gateway(name: str) -> None:
    path = REPO / name if name == "README.md" else REPO / "docs" / name
    first = next(p for conf in network_configs(path) for p in whereabouts_plugins(conf))
    assert first["ipam"].get("gateway"), f"{name}: {first}"


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_every_bridge_example_that_is_a_gateway_sets_the_gateway(path: Path) -> None:
    for conf in network_configs(path):
        for plugin in whereabouts_plugins(conf):
            if plugin.get("type") == "bridge" and (plugin.get("isGateway") or plugin.get("isDefaultGateway")):
                assert plugin["ipam"].get("gateway"), f"{path.name}: {plugin}"
