"""Neural predictors: a multi-device MLP (BRP-NAS style) and hwnas's mixture of source experts."""
from __future__ import annotations

import numpy as np

from predictors.base import Layout, Predictor
from predictors.linalg import loo_log_error, nnls_fit, nnls_predict, ridge_fit, ridge_predict
from predictors.registry import register


class _Experts(Predictor):
    """A shared MLP trunk with one head per source device, trained on log-latency (NaNs masked)."""

    def __init__(self, layout: Layout | None = None, seed: int = 0, hidden: int = 256, steps: int = 3000,
                 lr: float = 1e-3) -> None:
        super().__init__(layout, seed)
        self.hidden, self.steps, self.lr = hidden, steps, lr

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self.block(X, "onehot"), self.block(X, "counts")]).astype(np.float32)

    def fit(self, X: np.ndarray, Y: np.ndarray) -> "_Experts":
        import torch

        Y = np.atleast_2d(np.asarray(Y, float).T).T
        if np.any(Y[~np.isnan(Y)] <= 0):
            raise ValueError("latencies must be > 0 ms")
        torch.manual_seed(self.seed)
        L = np.log(Y)
        self.mu_, self.sd_ = np.nanmean(L, 0), np.nanstd(L, 0) + 1e-6
        T = torch.tensor(np.nan_to_num((L - self.mu_) / self.sd_), dtype=torch.float32)
        M = torch.tensor(~np.isnan(L), dtype=torch.float32)
        Xt = torch.tensor(self._inputs(X))
        net = torch.nn.Sequential(torch.nn.Linear(Xt.shape[1], self.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(self.hidden, self.hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(self.hidden, T.shape[1]))
        opt = torch.optim.AdamW(net.parameters(), self.lr, weight_decay=1e-4)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.steps)
        gen = torch.Generator().manual_seed(self.seed)
        for _ in range(self.steps):
            b = torch.randint(0, len(Xt), (128,), generator=gen)
            loss = (((net(Xt[b]) - T[b]) ** 2) * M[b]).sum() / M[b].sum().clamp(min=1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
        layers = [m for m in net if isinstance(m, torch.nn.Linear)]
        for i, layer in enumerate(layers):
            setattr(self, f"W{i}_", layer.weight.detach().numpy().T.copy())
            setattr(self, f"b{i}_", layer.bias.detach().numpy().copy())
        return self

    def embed(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("W0_")
        h = np.maximum(self._inputs(X) @ self.W0_ + self.b0_, 0)
        return np.maximum(h @ self.W1_ + self.b1_, 0)

    def sources(self, X: np.ndarray) -> np.ndarray:
        """Predicted ms on every source device, (n, devices)."""
        return np.exp((self.embed(X) @ self.W2_ + self.b2_) * self.sd_ + self.mu_)


@register("mlp")
class MLPRegressor(_Experts):
    """BRP-NAS-style MLP; a new device gets a ridge head on the trunk's embedding (log space)."""

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> "MLPRegressor":
        self.hmu_, self.hsd_, self.hw_, self.hb_ = ridge_fit(self.embed(X_ref), np.log(np.asarray(y_ref, float)), 10.0)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("hw_")
        return np.exp(ridge_predict(self.embed(X), self.hmu_, self.hsd_, self.hw_, self.hb_))

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        return self.sources(X)


@register("hwnas")
class ExpertMixture(_Experts):
    """hwnas: a non-negative mixture of source-device experts plus FLOPs/params, blended with a
    per-operation-count model; the blend weight comes from leave-one-out error on the references."""

    def _mix_features(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self.sources(X), self.block(X, "agnostic")])

    def _count_features(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self.block(X, "counts"), self.block(X, "agnostic")])

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> "ExpertMixture":
        y = np.asarray(y_ref, float)
        Fm, Fc = self._mix_features(X_ref), self._count_features(X_ref)
        self.wm_ = nnls_fit(Fm, y)
        self.cmu_, self.csd_, self.cw_, self.cb_ = ridge_fit(Fc, y, 1.0)
        lm = loo_log_error(lambda a, b, c: nnls_predict(c, nnls_fit(a, b)), Fm, y)
        lc = loo_log_error(lambda a, b, c: ridge_predict(c, *ridge_fit(a, b, 1.0)), Fc, y)
        self.blend_ = float((1 / lm**2) / (1 / lm**2 + 1 / lc**2)) if lm > 0 and lc > 0 else 1.0
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("wm_")
        pm = nnls_predict(self._mix_features(X), self.wm_)
        pc = ridge_predict(self._count_features(X), self.cmu_, self.csd_, self.cw_, self.cb_)
        return np.maximum(self.blend_ * pm + (1 - self.blend_) * pc, 1e-6)

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self._mix_features(X), self.block(X, "counts")])
