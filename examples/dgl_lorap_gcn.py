"""A plain DGL GCN layer with qgnn's quantizers and a LoRAP head dropped in.

The layer is written the DGL way (``graph.local_scope()``, ``update_all`` with
``dgl.function`` built-ins, as in DGL's ``GraphConv``); qgnn contributes only tensor-level
modules: ``FakeQuantize`` on the input, weight and aggregate, and ``LoRAP`` on the
aggregated feature right after ``update_all``.

    python examples/dgl_lorap_gcn.py      # trains 50 epochs on a random graph, prints accuracy
"""

import os

os.environ.setdefault("DGLBACKEND", "pytorch")

import dgl  # noqa: E402
import dgl.function as fn  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from qgnn.prompts import LoRAP  # noqa: E402
from qgnn.quant import FakeQuantize, MinMaxObserver  # noqa: E402


class QuantLoRAPGraphConv(nn.Module):
    """``h' = LoRAP(Q(D^-1/2 A D^-1/2 Q(Q(h) W))) + b`` with DGL message passing."""

    def __init__(self, in_feats: int, out_feats: int, bits: int = 4, k: int = 40, rank: int = 2):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_feats, out_feats))
        self.bias = nn.Parameter(torch.zeros(out_feats))
        nn.init.xavier_uniform_(self.weight)
        observer = lambda: MinMaxObserver(momentum=0.1)  # noqa: E731
        self.q_input = FakeQuantize(bits, observer=observer())
        self.q_weight = FakeQuantize(bits, symmetric=True, observer=observer())
        self.q_aggregate = FakeQuantize(bits, observer=observer())
        self.lorap = LoRAP(out_feats, k=k, rank=rank)

    def forward(self, graph: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        with graph.local_scope():
            norm = graph.in_degrees().float().clamp(min=1).pow(-0.5).unsqueeze(-1)
            h = self.q_input(h) @ self.q_weight(self.weight)
            graph.srcdata["h"] = h * norm
            graph.update_all(fn.copy_u("h", "m"), fn.sum("m", "s"))
            s = self.q_aggregate(graph.dstdata["s"] * norm)
            return self.lorap(s) + self.bias


class QuantLoRAPGCN(nn.Module):
    def __init__(self, in_feats: int, hidden: int, classes: int, bits: int = 4):
        super().__init__()
        self.conv1 = QuantLoRAPGraphConv(in_feats, hidden, bits)
        self.conv2 = QuantLoRAPGraphConv(hidden, classes, bits)

    def forward(self, graph, h):
        return self.conv2(graph, F.relu(self.conv1(graph, h)))


def main(epochs: int = 50, seed: int = 0) -> float:
    torch.manual_seed(seed)
    # Two communities: features and edges both carry the label.
    n, classes = 200, 2
    labels = torch.arange(n) % classes
    feats = F.one_hot(labels, classes).float() + 0.5 * torch.randn(n, classes)
    src = torch.randint(0, n, (1500,))
    dst = torch.where(torch.rand(1500) < 0.9, src + classes * torch.randint(1, 5, (1500,)), torch.randint(0, n, (1500,))) % n
    graph = dgl.add_self_loop(dgl.to_bidirected(dgl.graph((src, dst), num_nodes=n)))
    model = QuantLoRAPGCN(classes, 16, classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    train = torch.arange(n) < n // 2
    for _ in range(epochs):
        model.train()
        loss = F.cross_entropy(model(graph, feats)[train], labels[train])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(graph, feats).argmax(-1)[~train] == labels[~train]).float().mean().item()
    print(f"held-out accuracy of the 4-bit DGL GCN with LoRAP: {100 * accuracy:.1f}%")
    return accuracy


if __name__ == "__main__":
    main()
