"""BRP-NAS-style graph network: each gene is a node (its one-hot value and its position), edges
follow the space's gene graph (the cell's data flow in NAS-Bench-201, a chain elsewhere); graph
convolutions, a mean over nodes, one head per source device; a new device gets a ridge head on the
graph embedding (log space)."""

from __future__ import annotations

import numpy as np

from predictors.base import Layout, Predictor
from predictors.neural import EmbeddingHead, fit_log_latency
from predictors.registry import register


@register("gcn")
class GraphRegressor(EmbeddingHead, Predictor):
    def __init__(
        self,
        layout: Layout | None = None,
        seed: int = 0,
        hidden: int = 128,
        layers: int = 3,
        steps: int = 2000,
        lr: float = 1e-3,
    ) -> None:
        super().__init__(layout, seed)
        self.hidden, self.layers, self.steps, self.lr = hidden, layers, steps, lr

    def _graph(self) -> tuple[list[int], np.ndarray]:
        if not self.layout or "gene_sizes" not in self.layout:
            raise ValueError(
                f"predictor {self.name!r} needs the gene layout (gene_sizes, gene_edges); re-make the base"
            )
        sizes = list(self.layout["gene_sizes"])
        g = len(sizes)
        A = np.eye(g)
        e = self.layout.get("gene_edges", [])
        for i, j in zip(e[0::2], e[1::2]):
            A[i, j] = A[j, i] = 1.0
        return sizes, A / A.sum(1, keepdims=True)

    def _nodes(self, X: np.ndarray) -> np.ndarray:
        """(n, genes, max options + genes): each gene's one-hot, padded, then its position."""
        sizes, _ = self._graph()
        H = self.block(X, "onehot")
        width = max(sizes)
        out = np.zeros((len(X), len(sizes), width + len(sizes)), np.float32)
        start = 0
        for k, size in enumerate(sizes):
            out[:, k, :size] = H[:, start : start + size]
            out[:, k, width + k] = 1.0
            start += size
        return out

    def fit(self, X: np.ndarray, Y: np.ndarray) -> GraphRegressor:
        import torch

        nodes = self._nodes(X)
        A = torch.tensor(self._graph()[1], dtype=torch.float32)
        dims = [nodes.shape[2]] + [self.hidden] * self.layers

        class Net(torch.nn.Module):
            def __init__(self, devices: int, hidden: int) -> None:
                super().__init__()
                self.convs = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
                self.head = torch.nn.Linear(hidden, devices)

            def forward(self, x: torch.Tensor) -> torch.Tensor:
                for conv in self.convs:
                    x = torch.relu(conv(A @ x))
                return self.head(x.mean(1))

        net, self.mu_, self.sd_ = fit_log_latency(
            lambda devices: Net(devices, self.hidden), nodes, Y, self.seed, self.steps, self.lr
        )
        for i, conv in enumerate(net.convs):
            setattr(self, f"W{i}_", conv.weight.detach().numpy().T.copy())
            setattr(self, f"b{i}_", conv.bias.detach().numpy().copy())
        self.head_w_, self.head_b_ = net.head.weight.detach().numpy().T.copy(), net.head.bias.detach().numpy().copy()
        return self

    def embed(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("W0_")
        x, A = self._nodes(X), self._graph()[1].astype(np.float32)
        for i in range(self.layers):
            x = np.maximum(np.einsum("ij,njf->nif", A, x) @ getattr(self, f"W{i}_") + getattr(self, f"b{i}_"), 0)
        return x.mean(1)

    def sources(self, X: np.ndarray) -> np.ndarray:
        """Predicted ms on every source device, (n, devices)."""
        return np.exp((self.embed(X) @ self.head_w_ + self.head_b_) * self.sd_ + self.mu_)
