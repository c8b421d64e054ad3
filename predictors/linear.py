"""Linear baselines: FLOPs proxy, per-operation counts, and a mixture of per-device lookup tables."""

from __future__ import annotations

import numpy as np

from predictors.base import Layout, Predictor
from predictors.linalg import nnls_fit, nnls_predict, ridge_fit, ridge_loo, ridge_predict, small_solves
from predictors.registry import register


@register("flops")
class FlopsProxy(Predictor):
    """latency = a * FLOPs + b, with a, b >= 0 fitted to the reference samples."""

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> FlopsProxy:
        self.w_ = nnls_fit(self.block(X_ref, "agnostic")[:, :1], np.asarray(y_ref, float))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("w_")
        return nnls_predict(self.block(X, "agnostic")[:, :1], self.w_)


@register("roofline")
class Roofline(Predictor):
    """Non-negative least squares on the operators' MACs by kind, activation traffic, weights and
    operator count: needs no source devices, so it serves any space and any device."""

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> Roofline:
        self.w_ = nnls_fit(self.block(X_ref, "costs"), np.asarray(y_ref, float))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("w_")
        return nnls_predict(self.block(X, "costs"), self.w_)

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        return self.block(X, "costs")


@register("opcount")
class OpCount(Predictor):
    """Ridge least squares on per-operation counts, FLOPs and params, fitted to the references; the ridge strength
    is chosen by leave-one-out on the references (`ridge=None`) or given."""

    def __init__(self, layout: Layout | None = None, seed: int = 0, ridge: float | None = None) -> None:
        super().__init__(layout, seed)
        self.ridge = ridge

    def _features(self, X: np.ndarray) -> np.ndarray:
        return np.column_stack([self.block(X, "counts"), self.block(X, "agnostic")])

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> OpCount:
        F, y = self._features(X_ref), np.asarray(y_ref, float)
        with small_solves():
            self.ridge_ = ridge_loo(F, y) if self.ridge is None else float(self.ridge)
        self.mu_, self.sd_, self.w_, self.b_ = ridge_fit(F, y, self.ridge_)
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("w_")
        return ridge_predict(self._features(X), self.mu_, self.sd_, self.w_, self.b_)

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        return self._features(X)


@register("lut")
class LookupTableMixture(Predictor):
    """Per-layer lookup table (ProxylessNAS/OFA) per source device; a new device is their NNLS mixture."""

    def __init__(self, layout: Layout | None = None, seed: int = 0, ridge: float = 1e-3) -> None:
        super().__init__(layout, seed)
        self.ridge = ridge

    def fit(self, X: np.ndarray, Y: np.ndarray) -> LookupTableMixture:
        H = self.block(X, "onehot")
        Y = np.atleast_2d(np.asarray(Y, float).T).T
        tables = []
        for j in range(Y.shape[1]):
            ok = ~np.isnan(Y[:, j])
            A = np.column_stack([H[ok], np.ones(ok.sum())])
            tables.append(np.linalg.solve(A.T @ A + self.ridge * len(A) * np.eye(A.shape[1]), A.T @ Y[ok, j]))
        self.tables_ = np.stack(tables, axis=1)  # (onehot + 1, devices)
        return self

    def sources(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("tables_")
        H = self.block(X, "onehot")
        return np.column_stack([H, np.ones(len(H))]) @ self.tables_

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> LookupTableMixture:
        self.w_ = nnls_fit(self.sources(X_ref), np.asarray(y_ref, float))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        self.check_fitted("w_")
        return nnls_predict(self.sources(X), self.w_)

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        return self.sources(X)
