"""An IPPool's name `[<network>-][<node>-]<cidr>` read back into its network and node (resources.PoolNames): the node
part decided first, by what the NodeSlicePools and the known networks say; a name that reads two ways is no guess."""

from __future__ import annotations

from typing import Any

import pytest

from whereabouts.kube.resources import NETWORK_ANNOTATION, PoolNames, slice_nodes, subnet_pool_key
from whereabouts.model import PoolKey


def slice_pool(name: str, network: str | None, cidr: str, listing: list[tuple[str, str]]) -> dict[str, Any]:
    """This controller's (annotated with its network) or, `network` None, the Go controller's."""
    meta: dict[str, Any] = {"name": name}
    if network is not None:
        meta["annotations"] = {NETWORK_ANNOTATION: network}
    allocations = [{"nodeName": node, "sliceRange": sliced} for node, sliced in listing]
    return {"metadata": meta, "spec": {"range": cidr, "sliceSize": "/28"}, "status": {"allocations": allocations}}


SLICES = [
    slice_pool("worker", "worker", "10.90.0.0/24", [("worker-1", "10.90.0.0/28"), ("worker", "10.90.0.16/28")]),
    slice_pool("plain", None, "10.91.0.0/24", [("worker-1", "10.91.0.0/28"), ("worker", "10.91.0.16/28")]),
]


@pytest.mark.parametrize(
    ("name", "cidr", "key"),
    [
        ("worker-worker-1-10.90.0.0-28", "10.90.0.0/28", PoolKey("worker", "10.90.0.0/28", "worker-1")),
        ("worker-worker-10.90.0.16-28", "10.90.0.16/28", PoolKey("worker", "10.90.0.16/28", "worker")),
        ("worker-1-10.91.0.0-28", "10.91.0.0/28", PoolKey("", "10.91.0.0/28", "worker-1")),
        ("worker-10.91.0.16-28", "10.91.0.16/28", PoolKey("", "10.91.0.16/28", "worker")),
        ("worker-worker-1-10.90.0.32-28", "10.90.0.32/28", PoolKey("worker", "10.90.0.32/28", "worker-1")),
        ("worker-1-10.91.0.32-28", "10.91.0.32/28", PoolKey("", "10.91.0.32/28", "worker-1")),
        ("worker-10.92.0.0-24", "10.92.0.0/24", PoolKey("worker", "10.92.0.0/24")),
        ("10.0.0.0-8", "10.0.0.0/8", PoolKey("", "10.0.0.0/8")),
        ("blue-10.0.0.0-8", "10.0.0.0/8", PoolKey("blue", "10.0.0.0/8")),
        ("worker-10.91.0.48-28", "10.91.0.48/28", None),
    ],
    ids=["listed-node-worker-1", "listed-node-worker", "unnamed-network-on-worker-1", "unnamed-network-on-worker",
         "resliced-worker-1", "resliced-unnamed-on-worker-1", "whole-range", "default-whole-range", "unknown-network",
         "ambiguous"],
)  # fmt: skip
def test_the_node_part_is_decided_first(name: str, cidr: str, key: PoolKey | None) -> None:
    names = PoolNames({"worker", ""}, (), SLICES)
    assert names.key({"metadata": {"name": name}, "spec": {"range": cidr}}) == key
    assert list(names.ambiguous) == ([] if key is not None else [name])


def test_a_slice_belongs_to_the_node_of_its_own_network() -> None:
    """Two networks slicing one range: each slice's node as that network's NodeSlicePool lists it."""
    same = [
        slice_pool("a", "a", "10.93.0.0/24", [("n1", "10.93.0.0/28")]),
        slice_pool("b", "b", "10.93.0.0/24", [("n2", "10.93.0.0/28")]),
    ]
    nodes = slice_nodes(same)
    assert subnet_pool_key("a", (4, 0x0A5D0000, 28), nodes) == PoolKey("a", "10.93.0.0/28", "n1")
    assert subnet_pool_key("b", (4, 0x0A5D0000, 28), nodes) == PoolKey("b", "10.93.0.0/28", "n2")
