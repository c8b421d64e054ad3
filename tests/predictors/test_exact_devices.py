"""Few-shot fits that keep exact structure: on a device whose latency is an exact linear function of the operation
counts (a systolic array, an FPGA pipeline come close), ten references pin it down; on one with a few percent of
noise the fit keeps its shrinkage."""

from __future__ import annotations

import numpy as np
import pytest

import predictors
from nas.latency.calibration import feature_space, load_base
from nas.latency.features import COSTS, features
from nas.metrics import mape
from search_spaces import load_space, sample_archs


@pytest.fixture(scope="module")
def space_and_features():
    space = load_space("nasbench201")
    base, meta, _ = load_base(None, "nasbench201")
    archs = sample_archs(space, 600, seed=3)
    X, _ = features(space, archs, feature_space(meta, space))
    return space, base, X


def _device(pred, X, noise: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    counts = np.column_stack([pred.block(X, "counts"), pred.block(X, "agnostic")])
    y = counts @ rng.uniform(0.5, 2.0, counts.shape[1]) / counts.mean(0).sum() + 0.3
    return y * (1 + noise * rng.standard_normal(len(y)))


@pytest.mark.parametrize("name", ["hwnas", "opcount"])
def test_an_exactly_linear_device_is_predicted_almost_exactly_from_ten_references(space_and_features, name):
    from scipy.stats import spearmanr

    _, base, X = space_and_features
    pred = base if name == "hwnas" else predictors.create("opcount", layout=base.layout)
    y = _device(pred, X, noise=0.0)
    pool, rest = np.arange(300), np.arange(300, 600)
    refs = pool[pred.choose_references(X[pool], 10)]
    pred.adapt(X[refs], y[refs])
    p = pred.predict(X[rest])
    assert spearmanr(p, y[rest]).statistic >= 0.999 and mape(p, y[rest]) < 0.5


def test_a_noisy_device_keeps_shrinkage(space_and_features):
    _, base, X = space_and_features
    pred = predictors.create("opcount", layout=base.layout)
    y = _device(pred, X, noise=0.05)
    refs = pred.choose_references(X[:300], 10)
    pred.adapt(X[refs], y[refs])
    exact = predictors.create("opcount", layout=base.layout).adapt(X[refs], _device(pred, X, noise=0.0)[refs])
    assert pred.ridge_ > exact.ridge_  # noise is met with more shrinkage than exact structure
    assert mape(pred.predict(X[300:]), y[300:]) < 10


def test_a_device_that_drops_dead_computation_predicts_cells_without_a_live_path_near_its_floor(space_and_features):
    """A graph-compiling runtime (LiteRT, OpenVINO) runs only what reaches the output: its latency is a floor plus
    the executed graph's costs, and a cell with no input-output path costs the floor alone. The shipped base,
    calibrated on ten references, must see that (the raw operation counts cannot)."""
    space, base, X = space_and_features
    executed = base.block(X, "executed")
    dense, pointwise, operators = (executed[:, COSTS.index(c)] for c in ("dense_macs", "pointwise_macs", "operators"))
    floor = 0.05
    y = floor + 0.02 * dense + 0.03 * pointwise + 0.004 * operators
    pool, rest = np.arange(300), np.arange(300, 600)
    refs = pool[base.choose_references(X[pool], 10)]
    base.adapt(X[refs], y[refs])
    p = base.predict(X[rest])
    assert mape(p, y[rest]) < 3
    empty = [space.from_str(s) for s in EMPTY_CELLS]
    p_empty = base.predict(features(space, empty, space)[0])
    assert np.all(p_empty < 3 * floor), p_empty  # the floor, not a network's worth of raw operations
    live_median = np.median(y[rest])
    assert np.all(p_empty < 0.1 * live_median)


def test_a_device_that_runs_computation_on_zeros_but_drops_dead_computation_is_fitted(space_and_features):
    """Between the two: a runtime that drops what cannot reach the output but runs a convolution of zeros (HELP's
    Pixel 3 comes close). Neither the raw counts nor the executed graph describe it; the reaching costs do."""
    _, base, X = space_and_features
    reaching = base.block(X, "reaching")
    dense, pointwise, operators = (reaching[:, COSTS.index(c)] for c in ("dense_macs", "pointwise_macs", "operators"))
    y = 0.05 + 0.02 * dense + 0.03 * pointwise + 0.004 * operators
    pool, rest = np.arange(300), np.arange(300, 600)
    refs = pool[base.choose_references(X[pool], 10)]
    base.adapt(X[refs], y[refs])
    assert mape(base.predict(X[rest]), y[rest]) < 3
    without = predictors.create("hwnas", layout={k: v for k, v in base.layout.items() if k != "reaching"})
    without.use_trunk(base.trunk()).tables_ = base.tables_
    without.adapt(X[refs], y[refs])
    assert mape(without.predict(X[rest]), y[rest]) > 2 * mape(base.predict(X[rest]), y[rest])


EMPTY_CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",
    "|nor_conv_1x1~0|+|avg_pool_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|",
    "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|",
)


def test_the_references_execute_something_but_one_constant_network_that_probes_the_runtime(space_and_features):
    """Nine references execute something; the tenth is the constant network with the most raw computation, which
    a runtime that folds it times at its floor and one that runs it at a whole network's worth."""
    _, base, X = space_and_features
    pool = np.arange(300)
    live = base.executing(X)
    assert (~live[pool]).sum() >= 2 and live[pool].sum() >= 10
    refs = pool[base.choose_references(X[pool], 10)]
    assert len(set(refs.tolist())) == 10 and (~live[refs]).sum() == 1
    flops = base.block(X, "agnostic")[:, 0]
    assert flops[refs[~live[refs]]][0] == flops[pool[~live[pool]]].max()
