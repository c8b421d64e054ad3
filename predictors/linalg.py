"""Small least-squares fits shared by the predictors (all with an intercept)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from scipy.optimize import nnls


@contextlib.contextmanager
def small_solves() -> Iterator[None]:
    """BLAS on one thread: a few-shot fit is thousands of solves of at most tens of columns, which threads only
    slow down (25x on a 2-core machine with other work on it)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def nnls_fit(F: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative weights w (last one the intercept) with [F, 1] @ w ~ y."""
    A = np.column_stack([F, np.ones(len(F))])
    scale = np.abs(A).max(0) + 1e-12
    w, _ = nnls(A / scale, y)
    return w / scale


def nnls_predict(F: np.ndarray, w: np.ndarray) -> np.ndarray:
    return np.column_stack([F, np.ones(len(F))]) @ w


def ridge_fit(F: np.ndarray, y: np.ndarray, lam: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Ridge on standardized columns: returns (mu, sd, w, intercept)."""
    mu, sd = F.mean(0), F.std(0) + 1e-9
    Z = (F - mu) / sd
    ym = float(y.mean())
    w = np.linalg.solve(Z.T @ Z + lam * np.eye(Z.shape[1]), Z.T @ (y - ym))
    return mu, sd, w, ym


# the ridge strengths leave-one-out chooses from (standardised columns): from plain least squares to strong shrinkage
RIDGE_GRID = (1e-8, 1e-6, 1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)


def ridge_loo(F: np.ndarray, y: np.ndarray, grid: tuple[float, ...] = RIDGE_GRID, default: float = 1.0) -> float:
    """The ridge strength for (F, y): `default` unless another strength of `grid` cuts its leave-one-out mean
    |log error| to under a fifth, then the best one. Ten references cannot tell strengths apart by small
    differences (the plain minimum lost 0.09 Spearman on fbnet's devices, under half of it 0.03), but exact
    structure shows plainly: on a device whose latency is linear in the features, lambda -> 0 (plain least
    squares) has no leave-one-out error at all."""
    grid = tuple(sorted(set(grid) | {default}))
    if len(y) > MAX_LOO_ROWS:  # many rows: the closed form, so thousands take as long as ten
        keep = determined(F)
        means = [log_error(ridge_loo_predictions(F, y, lam), y, keep) for lam in grid]
    else:
        means = [loo_log_error(lambda a, b, c, lam=lam: ridge_predict(c, *ridge_fit(a, b, lam)), F, y) for lam in grid]
    best = int(np.argmin(means))
    return float(grid[best]) if means[best] < 0.2 * means[grid.index(default)] else float(default)


def ridge_loo_predictions(F: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    """Every row's leave-one-out prediction of `ridge_fit` in closed form (the hat matrix: y_i - e_i / (1 - h_ii)),
    the columns standardised once on all rows: one solve instead of one fit per row, so a calibration from
    thousands of rows takes as long as one from ten."""
    mu, sd = F.mean(0), F.std(0) + 1e-9
    A = np.column_stack([(F - mu) / sd, np.ones(len(F))])
    penalty = lam * np.eye(A.shape[1])
    penalty[-1, -1] = 0.0  # the intercept is not shrunk
    G = np.linalg.pinv(A.T @ A + penalty)
    h = np.einsum("ij,jk,ik->i", A, G, A)
    resid = y - A @ (G @ (A.T @ y))
    return y - resid / np.maximum(1.0 - h, 1e-9)


def log_error(pred: np.ndarray, y: np.ndarray, keep: np.ndarray) -> float:
    rows = keep if keep.any() else np.ones(len(y), bool)
    return float(np.mean(np.abs(np.log(np.maximum(pred[rows], 1e-9)) - np.log(y[rows]))))


def ridge_predict(F: np.ndarray, mu: np.ndarray, sd: np.ndarray, w: np.ndarray, b: float) -> np.ndarray:
    return ((F - mu) / sd) @ w + b


# a reference whose leverage is this close to 1 lies outside the span of the others: leaving it out tests nothing
MAX_LEVERAGE = 0.99


def determined(F: np.ndarray) -> np.ndarray:
    """Rows of F (with an intercept) that the other rows determine: their leverage in least squares is below
    MAX_LEVERAGE. Leaving out a row the others do not span (the only reference with a pooling, a network that
    executes nothing) makes any fit extrapolate, exact or not, so it says nothing about which fit is right."""
    A = np.column_stack([F, np.ones(len(F))])
    A = A / (np.abs(A).max(0) + 1e-12)
    leverage = np.einsum("ij,ji->i", A, np.linalg.pinv(A, rcond=1e-10))
    return leverage < MAX_LEVERAGE


# past this many rows, leave-one-out becomes K-fold (FOLDS folds): as informative, and it scales
MAX_LOO_ROWS = 50
FOLDS = 10


def loo_log_error(fit_predict, F: np.ndarray, y: np.ndarray) -> float:
    """Mean |log error| of leave-one-out predictions over the rows the others determine (all rows when none is);
    fit_predict(F_train, y_train, F_test). Over MAX_LOO_ROWS rows, FOLDS-fold cross-validation instead."""
    if len(y) > MAX_LOO_ROWS:
        fold = np.arange(len(y)) % FOLDS
        pred = np.empty(len(y))
        for k in range(FOLDS):
            pred[fold == k] = fit_predict(F[fold != k], y[fold != k], F[fold == k])
        return log_error(pred, y, np.ones(len(y), bool))
    errs = []
    keep_rows = determined(F)
    for i in np.flatnonzero(keep_rows) if keep_rows.any() else range(len(y)):
        keep = np.arange(len(y)) != i
        p = fit_predict(F[keep], y[keep], F[i : i + 1])[0]
        errs.append(abs(np.log(max(p, 1e-9)) - np.log(y[i])))
    return float(np.mean(errs))
