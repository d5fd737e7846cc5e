"""Small random graphs shared by the quantization tests."""

import os

import pytest
import torch

os.environ.setdefault("DGLBACKEND", "pytorch")

from qgnn.graph import Graph  # noqa: E402


def make_graph(num_nodes: int = 24, num_edges: int = 90, seed: int = 0) -> Graph:
    """A random directed graph whose in-degrees vary (a few hubs), no isolated nodes."""
    gen = torch.Generator().manual_seed(seed)
    hubs = torch.randint(0, 3, (num_edges // 3,), generator=gen)  # nodes 0..2 get many in-edges
    dst = torch.cat([hubs, torch.randint(0, num_nodes, (num_edges - hubs.numel(),), generator=gen)])
    src = torch.randint(0, num_nodes, (num_edges,), generator=gen)
    ring = torch.arange(num_nodes)
    src = torch.cat([src, ring])
    dst = torch.cat([dst, (ring + 1) % num_nodes])
    return Graph.from_edges(src, dst, num_nodes)


@pytest.fixture
def graph() -> Graph:
    return make_graph()


@pytest.fixture
def features() -> torch.Tensor:
    return torch.randn(24, 7, generator=torch.Generator().manual_seed(1))
