"""HELP (Lee et al., NeurIPS 2021): a hardware embedding from the reference architectures'
latencies, a predictor whose layers that embedding modulates, meta-learned with MAML.

Our compact reading of it: targets are log-latencies standardised by the device's reference
latencies (so ranks, and ms after de-standardising); the modulator is FiLM on both hidden
layers; the inner loop takes a few SGD steps on the references."""

from __future__ import annotations

import numpy as np

from predictors.base import Layout, Predictor
from predictors.reference import select_references
from predictors.registry import register

PARAMS = ("W0", "b0", "W1", "b1", "W2", "b2", "Wm", "bm")


@register("help")
class HELP(Predictor):
    def __init__(
        self,
        layout: Layout | None = None,
        seed: int = 0,
        n_ref: int = 10,
        hidden: int = 128,
        meta_steps: int = 1500,
        inner_steps: int = 2,
        inner_lr: float = 0.05,
        lr: float = 1e-3,
    ) -> None:
        super().__init__(layout, seed)
        self.n_ref, self.hidden, self.meta_steps = n_ref, hidden, meta_steps
        self.inner_steps, self.inner_lr, self.lr = inner_steps, inner_lr, lr

    # ---- the network, as a function of its parameters ---------------------------------------
    @staticmethod
    def _forward(params: dict, x, h):
        import torch

        film = torch.tanh(h @ params["Wm"] + params["bm"])  # (4 * hidden,)
        g1, s1, g2, s2 = film.chunk(4)
        z = torch.relu((x @ params["W0"] + params["b0"]) * (1 + g1) + s1)
        z = torch.relu((z @ params["W1"] + params["b1"]) * (1 + g2) + s2)
        return (z @ params["W2"] + params["b2"]).squeeze(-1)

    def _adapted(self, params: dict, x_ref, t_ref, h, create_graph: bool):
        import torch

        fast = {k: v for k, v in params.items()}
        for _ in range(self.inner_steps):
            loss = ((self._forward(fast, x_ref, h) - t_ref) ** 2).mean()
            names = [k for k in fast if not k.startswith(("Wm", "bm"))]
            grads = torch.autograd.grad(loss, [fast[k] for k in names], create_graph=create_graph)
            fast.update({k: fast[k] - self.inner_lr * g for k, g in zip(names, grads)})
        return fast

    @staticmethod
    def _standardise(y_ref: np.ndarray) -> tuple[float, float]:
        L = np.log(y_ref)
        return float(L.mean()), float(L.std() + 1e-6)

    # ---- contract --------------------------------------------------------------------------
    def reference_rows(self, X: np.ndarray) -> list[int]:
        return select_references(self.block(X, "onehot"), self.n_ref)

    def fit(self, X: np.ndarray, Y: np.ndarray, reference_rows: list[int] | None = None) -> HELP:
        import torch

        Y = np.atleast_2d(np.asarray(Y, float).T).T
        refs = list(reference_rows) if reference_rows is not None else self.reference_rows(X)
        usable = [j for j in range(Y.shape[1]) if not np.isnan(Y[refs, j]).any()]
        if not usable:
            raise ValueError("HELP needs source devices measured on all reference architectures")
        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        H = self.block(X, "onehot").astype(np.float32)
        d, k = H.shape[1], self.hidden
        init = lambda *shape: torch.nn.Parameter(torch.randn(*shape) * (2 / shape[0]) ** 0.5)
        params = {
            "W0": init(d, k),
            "b0": torch.nn.Parameter(torch.zeros(k)),
            "W1": init(k, k),
            "b1": torch.nn.Parameter(torch.zeros(k)),
            "W2": init(k, 1),
            "b2": torch.nn.Parameter(torch.zeros(1)),
            "Wm": torch.nn.Parameter(torch.zeros(len(refs), 4 * k)),
            "bm": torch.nn.Parameter(torch.zeros(4 * k)),
        }
        opt = torch.optim.Adam(params.values(), self.lr)
        Xt = torch.tensor(H)
        x_ref = Xt[refs]
        for _ in range(self.meta_steps):
            j = usable[rng.integers(len(usable))]
            ok = np.where(~np.isnan(Y[:, j]))[0]
            mu, sd = self._standardise(Y[refs, j])
            t = torch.tensor((np.log(Y[:, j]) - mu) / sd, dtype=torch.float32)
            h = t[refs]
            fast = self._adapted(params, x_ref, h, h, create_graph=True)
            q = torch.tensor(rng.choice(ok, min(128, len(ok)), replace=False))
            loss = ((self._forward(fast, Xt[q], h) - t[q]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        for name, p in params.items():
            setattr(self, f"{name}_", p.detach().numpy().copy())
        self.ref_X_ = H[refs]
        return self

    def _params(self):
        import torch

        self.check_fitted("W0_")
        return {k: torch.tensor(getattr(self, f"{k}_"), requires_grad=True) for k in PARAMS}

    def choose_references(self, X_pool: np.ndarray, n: int) -> list[int]:
        """HELP's references are fixed at meta-training; they must be in the pool."""
        self.check_fitted("ref_X_")
        H = self.block(X_pool, "onehot")
        rows = []
        for r in self.ref_X_:
            hit = np.where(np.abs(H - r).sum(1) == 0)[0]
            if not len(hit):
                raise ValueError("the pool lacks one of HELP's fixed reference architectures")
            rows.append(int(hit[0]))
        return rows

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> HELP:
        import torch

        H = self.block(X_ref, "onehot").astype(np.float32)
        order = [int(np.argmin(np.abs(H - r).sum(1))) for r in self.ref_X_]
        if len(X_ref) != len(self.ref_X_) or any(np.abs(H[o] - r).sum() > 0 for o, r in zip(order, self.ref_X_)):
            raise ValueError(
                "HELP adapts only on its own reference architectures (hwnas reference with a help base lists them)"
            )
        y = np.asarray(y_ref, float)[order]
        self.mu_, self.sd_ = self._standardise(y)
        h = torch.tensor((np.log(y) - self.mu_) / self.sd_, dtype=torch.float32)
        fast = self._adapted(self._params(), torch.tensor(H[order]), h, h, create_graph=False)
        for k, v in fast.items():
            setattr(self, f"fast_{k}_", v.detach().numpy().copy())
        self.h_ = h.numpy()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        import torch

        self.check_fitted("h_")
        fast = {k: torch.tensor(getattr(self, f"fast_{k}_")) for k in PARAMS}
        with torch.no_grad():
            t = self._forward(
                fast, torch.tensor(self.block(X, "onehot").astype(np.float32)), torch.tensor(self.h_)
            ).numpy()
        return np.exp(t * self.sd_ + self.mu_)
