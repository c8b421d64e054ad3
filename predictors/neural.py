"""Neural predictors: a multi-device MLP (BRP-NAS style) and hwnas's mixture of source experts."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from predictors.base import Layout, Predictor
from predictors.linalg import (
    MAX_LOO_ROWS,
    determined,
    log_error,
    loo_log_error,
    nnls_fit,
    nnls_predict,
    ridge_fit,
    ridge_loo,
    ridge_loo_predictions,
    ridge_predict,
    small_solves,
)
from predictors.linear import LookupTableMixture
from predictors.registry import register


def fit_log_latency(
    make_net: Callable[[int], Any], inputs: np.ndarray, Y: np.ndarray, seed: int, steps: int, lr: float
) -> tuple[Any, np.ndarray, np.ndarray]:
    """Train `make_net(devices)` (inputs batch -> one output per source device) on each device's
    standardised log latency, NaNs masked: returns (net, mu, sd) of the log latencies."""
    import torch

    Y = np.atleast_2d(np.asarray(Y, float).T).T
    if np.any(Y[~np.isnan(Y)] <= 0):
        raise ValueError("latencies must be > 0 ms")
    torch.manual_seed(seed)
    L = np.log(Y)
    mu, sd = np.nanmean(L, 0), np.nanstd(L, 0) + 1e-6
    T = torch.tensor(np.nan_to_num((L - mu) / sd), dtype=torch.float32)
    M = torch.tensor(~np.isnan(L), dtype=torch.float32)
    Xt = torch.tensor(inputs)
    net = make_net(T.shape[1])
    opt = torch.optim.AdamW(net.parameters(), lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = torch.randint(0, len(Xt), (128,), generator=gen)
        loss = (((net(Xt[b]) - T[b]) ** 2) * M[b]).sum() / M[b].sum().clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net, mu, sd


class EmbeddingHead:
    """A new device's ridge head (log space) on a network's embedding; the source heads' predictions are
    the references' features. For predictors with `embed(X)` and `sources(X)`."""

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> Any:
        self.hmu_, self.hsd_, self.hw_, self.hb_ = ridge_fit(self.embed(X_ref), np.log(np.asarray(y_ref, float)), 10.0)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("hw_")
        return np.exp(ridge_predict(self.embed(X), self.hmu_, self.hsd_, self.hw_, self.hb_))

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        return self.sources(X)


class _Experts(Predictor):
    """A shared MLP trunk with one head per source device, trained on log-latency (NaNs masked)."""

    def __init__(
        self, layout: Layout | None = None, seed: int = 0, hidden: int = 256, steps: int = 3000, lr: float = 1e-3
    ) -> None:
        super().__init__(layout, seed)
        self.hidden, self.steps, self.lr = hidden, steps, lr

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        blocks = [self.block(X, "onehot"), self.block(X, "counts")]
        if "executed" in (self.layout or {}):  # what a graph compiler keeps, on a log scale (MACs span decades)
            blocks.append(np.log1p(self.block(X, "executed")))
        return np.column_stack(blocks).astype(np.float32)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> _Experts:
        import torch

        def make_net(devices: int) -> torch.nn.Module:
            return torch.nn.Sequential(
                torch.nn.Linear(inputs.shape[1], self.hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(self.hidden, self.hidden),
                torch.nn.ReLU(),
                torch.nn.Linear(self.hidden, devices),
            )

        inputs = self._inputs(X)
        net, self.mu_, self.sd_ = fit_log_latency(make_net, inputs, Y, self.seed, self.steps, self.lr)
        layers = [m for m in net if isinstance(m, torch.nn.Linear)]
        for i, layer in enumerate(layers):
            setattr(self, f"W{i}_", layer.weight.detach().numpy().T.copy())
            setattr(self, f"b{i}_", layer.bias.detach().numpy().copy())
        return self

    TRUNK = ("W0_", "b0_", "W1_", "b1_", "W2_", "b2_", "mu_", "sd_")

    def trunk(self) -> dict[str, np.ndarray]:
        """The fitted trunk and source heads: another expert predictor fitted on the same table can `use_trunk`
        them instead of training its own."""
        self.check_fitted("W0_")
        return {k: getattr(self, k) for k in self.TRUNK}

    def use_trunk(self, trunk: dict[str, np.ndarray]) -> _Experts:
        for k in self.TRUNK:
            setattr(self, k, trunk[k])
        return self

    def embed(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("W0_")
        h = np.maximum(self._inputs(X) @ self.W0_ + self.b0_, 0)
        return np.maximum(h @ self.W1_ + self.b1_, 0)

    def sources(self, X: np.ndarray) -> np.ndarray:
        """Predicted ms on every source device, (n, devices)."""
        return np.exp((self.embed(X) @ self.W2_ + self.b2_) * self.sd_ + self.mu_)


@register("mlp")
class MLPRegressor(EmbeddingHead, _Experts):
    """BRP-NAS-style MLP; a new device gets a ridge head on the trunk's embedding (log space)."""


@register("hwnas")
class ExpertMixture(_Experts):
    """hwnas: few-shot models fitted to the references: a non-negative mixture of MLP source experts plus
    FLOPs/params, a non-negative mixture of per-device lookup tables, ridge least squares on per-operation
    counts, a non-negative roofline fit on the operators' MACs by kind, activations, weights and operator
    count, and (where the space says what a graph compiler executes) the executed graph's costs and depth beside
    the raw counts, non-negative and ridge, so a runtime that folds constants and drops dead computation is fitted
    as well as one that runs every operator; and (where the space has dead computation) the costs of what reaches
    the output, alone and beside the executed graph's, non-negative, for a runtime that drops dead computation but
    runs computation on zeros. The prediction averages those whose leave-one-out error on the
    references is within `near` times the best: the references decide how the device behaves."""

    def __init__(
        self,
        layout: Layout | None = None,
        seed: int = 0,
        hidden: int = 256,
        steps: int = 3000,
        lr: float = 1e-3,
        near: float = 1.5,
    ) -> None:
        super().__init__(layout, seed, hidden, steps, lr)
        self.near = near

    def fit(self, X: np.ndarray, Y: np.ndarray) -> ExpertMixture:
        super().fit(X, Y)
        self.tables_ = LookupTableMixture(self.layout).fit(X, Y).tables_
        return self

    def _candidates(self, X: np.ndarray) -> list[tuple[np.ndarray, str]]:
        H = self.block(X, "onehot")
        lut = np.column_stack([H, np.ones(len(H))]) @ self.tables_
        agnostic = self.block(X, "agnostic")
        out = [
            (np.column_stack([self.sources(X), agnostic]), "nnls"),
            (np.column_stack([lut, agnostic]), "nnls"),
            (np.column_stack([self.block(X, "counts"), agnostic]), "ridge"),
        ]
        if "costs" in (self.layout or {}):
            out.append((self.block(X, "costs"), "nnls"))
        if "executed" in (self.layout or {}):
            both = np.column_stack([self.block(X, "executed"), self.block(X, "counts"), agnostic])
            out += [(both, "nnls"), (both, "ridge"), (self.block(X, "executed"), "ridge")]
        if "reaching" in (self.layout or {}) and "executed" in self.layout:
            reaching = self.block(X, "reaching")
            out += [(reaching, "nnls"), (np.column_stack([reaching, self.block(X, "executed")]), "nnls")]
        return out

    @staticmethod
    def _fit(kind: str, F: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
        if kind == "nnls":
            return [nnls_fit(F, y)]
        mu, sd, w, b = ridge_fit(F, y, ridge_loo(F, y))
        return [mu, sd, w, np.array([b])]

    @staticmethod
    def _predict(kind: str, F: np.ndarray, params: list[np.ndarray]) -> np.ndarray:
        if kind == "nnls":
            return nnls_predict(F, params[0])
        mu, sd, w, b = params
        return ridge_predict(F, mu, sd, w, float(b[0]))

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> ExpertMixture:
        with small_solves():
            return self._adapt(X_ref, y_ref)

    def _adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> ExpertMixture:
        y = np.asarray(y_ref, float)
        errors = []
        for i, (F, kind) in enumerate(self._candidates(X_ref)):
            for j, p in enumerate(self._fit(kind, F, y)):
                setattr(self, f"c{i}_{j}_", p)
            if kind == "ridge" and len(y) > MAX_LOO_ROWS:  # closed form, at the strength chosen on every row
                lam = ridge_loo(F, y)
                errors.append(log_error(ridge_loo_predictions(F, y, lam), y, determined(F)))
            else:
                errors.append(loo_log_error(lambda a, b, c, k=kind: self._predict(k, c, self._fit(k, a, b)), F, y))
        self.loo_errors_ = np.array(errors)
        near = self.loo_errors_ <= self.near * self.loo_errors_.min()
        self.blend_ = near / near.sum()
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("blend_")
        out = np.zeros(len(X))
        for i, (F, kind) in enumerate(self._candidates(X)):
            if self.blend_[i] > 0:
                params = [getattr(self, f"c{i}_{j}_") for j in range(1 if kind == "nnls" else 4)]
                out += self.blend_[i] * self._predict(kind, F, params)
        return np.maximum(out, 1e-6)

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        """Operation counts, FLOPs and params, and the executed graph's costs: few columns, so ten references pin
        them down (a design on the experts' outputs was worse on both HELP spaces)."""
        blocks = [self.block(X, "counts"), self.block(X, "agnostic")]
        if "executed" in (self.layout or {}):
            blocks.append(self.block(X, "executed"))
        return np.column_stack(blocks)
