"""Search scored where the truth is known: tabular accuracy, a replayed device, exact regret."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from nas.accuracy import load_accuracy_table
from nas.bench.tabular import search_once
from nas.cli.main import main
from search_spaces import load_space


@pytest.fixture(scope="module")
def world():
    space = load_space("nasbench201")
    acc = load_accuracy_table("table:nasbench201:cifar10", space)
    rng = np.random.default_rng(0)
    cells = rng.choice(sorted(acc.accuracy), 150, replace=False)
    true = {a: float(1 + 0.2 * a.count("conv_3x3") + 0.1 * a.count("conv_1x1") + 0.01 * rng.random()) for a in cells}
    return space, acc, true


def test_the_shipped_accuracy_table_is_nasbench201(world):
    space, acc, _ = world
    assert len(acc.accuracy) == 15625 and max(acc.accuracy.values()) == pytest.approx(94.3733)
    with pytest.raises(ValueError, match="neither a shipped table"):
        load_accuracy_table("table:nowhere.csv:cifar10", space)
    with pytest.raises(ValueError, match="no 'top1' column; it has cifar10, cifar100, imagenet16_120"):
        load_accuracy_table("table:nasbench201:top1", space)


def test_a_search_that_sees_every_cell_has_no_regret(world):
    space, acc, true = world
    budget = float(np.quantile(list(true.values()), 0.3))
    r = search_once(space, acc, true, true, budget, "random", queries=len(true), population=10, seed=0)
    assert r["meets"] and r["regret"] == pytest.approx(0.0) and r["acc"] == acc.best_within(true, budget)
    assert r["queries"] <= len(true) and r["curve"][-1] == pytest.approx(0.0)


def test_verification_on_the_device_keeps_winners_within_the_budget(world):
    """A predictor that puts everything at half its latency believes over-budget cells feasible; the winner is
    still one the device measures within the budget, and the best believed one is reported as missing it."""
    space, acc, true = world
    budget = float(np.quantile(list(true.values()), 0.3))
    optimistic = {a: 0.5 * ms for a, ms in true.items()}
    r = search_once(space, acc, optimistic, true, budget, "evolution", queries=60, population=10, seed=1)
    assert r["meets"] and r["true_ms"] <= budget and r["regret"] >= 0
    assert not r["unverified_meets"] and r["verified"] > 1


@pytest.mark.slow
def test_bench_tabular_prints_regret_per_method_and_writes_rows_and_plot(help_dir, tmp_path, capsys):
    argv = ["bench", "tabular", "--data", str(help_dir / "nasbench201.csv.gz"), "--devices", "silver_4114"]
    argv += ["--seeds", "2", "--quantiles", "0.3", "--queries", "20", "--strategies", "evolution,random"]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mean regret" in out and "surrogate+true-latency" in out and "surrogate+flops" in out
    assert "evolution vs it" in out  # the default did not run: the first method is the reference
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert len(rows) == 2 * 4 and rows["meets"].all() and (rows["regret"] >= 0).all()
    assert (rows["queries"] == 20).all() and (tmp_path / "regret.png").stat().st_size > 0
    assert not math.isnan(rows["regret"].mean())
    assert main([*argv, "--quantiles", "1.5"]) == 2


@pytest.fixture(scope="module")
def dense(world):
    """Every NB201 cell measured: latency grows with its convolutions."""
    space, acc, _ = world
    rng = np.random.default_rng(1)
    return {
        a: float(1 + 0.2 * a.count("conv_3x3") + 0.1 * a.count("conv_1x1") + 0.01 * rng.random()) for a in acc.accuracy
    }


def test_ofas_finder_searches_the_genes_of_nasbench201_with_the_same_queries(world, dense):
    """OFA's EvolutionFinder through the arch-manager contract on NB201's genes: distinct evaluations only, each
    believed within the budget, seeded like every other method."""
    pytest.importorskip("ofa", reason="needs the ofa package: pip install -e '.[peers]'")
    from nas.bench.ofa_search import ofa_gene_evolution

    space, acc, _ = world
    budget = float(np.quantile(list(dense.values()), 0.3))
    ms = lambda a: dense[space.to_str(a)]
    archs, drawn = ofa_gene_evolution(space, lambda a: acc(space.to_str(a)), ms, budget, 40, 10, seed=2)
    assert len(archs) == len(set(archs)) == 40 and drawn > 40 and all(ms(a) <= budget for a in archs)
    assert ofa_gene_evolution(space, lambda a: acc(space.to_str(a)), ms, budget, 40, 10, seed=2)[0] == archs
    r = search_once(space, acc, dense, dense, budget / 1.1, "ofa-evolution", queries=40, population=10, seed=2)
    assert r["queries"] == 40 and r["meets"] and r["regret"] >= 0


def test_ofas_finder_stops_where_no_cell_is_believed_within_the_budget(world):
    pytest.importorskip("ofa", reason="needs the ofa package: pip install -e '.[peers]'")
    space, acc, true = world
    r = search_once(space, acc, true, true, 0.1, "ofa-evolution", queries=10, population=5, seed=0)
    assert r["queries"] == 0 and r["winner"] is None and r["proposals"] == 20 * 10 * 5


def test_the_gene_arch_manager_mutates_each_gene_with_the_given_probability(world):
    from nas.bench.ofa_search import GeneArchManager

    space = world[0]
    manager = GeneArchManager(space)
    sample = manager.random_sample_arch()
    assert space.validate(sample["genes"]) and manager.mutate_arch(dict(genes=list(sample["genes"])), 0.0) == sample
    redrawn = [manager.mutate_arch({"genes": list(sample["genes"])}, 1.0)["genes"] for _ in range(20)]
    assert any(g != sample["genes"] for g in redrawn)


@pytest.mark.slow
def test_bench_tabular_puts_ofas_finder_beside_the_strategies(help_dir, tmp_path, capsys):
    pytest.importorskip("ofa", reason="needs the ofa package: pip install -e '.[peers]'")
    argv = ["bench", "tabular", "--data", str(help_dir / "nasbench201.csv.gz"), "--devices", "silver_4114"]
    argv += ["--seeds", "2", "--quantiles", "0.3", "--queries", "20", "--strategies", "random", "--peer", "ofa"]
    assert main([*argv, "--no-ablations", "--out", str(tmp_path)]) == 0
    assert "ofa-evolution" in capsys.readouterr().out
    rows = pd.read_csv(tmp_path / "rows.csv")
    assert list(rows["method"]) == ["random", "ofa-evolution"] * 2 and (rows["queries"] == 20).all()


def test_an_optuna_search_that_needs_more_proposals_than_queries_is_reproducible(world):
    """Cells the device never ran are free proposals, so the search goes on past `queries` trials in one study
    (a resumed Optuna sampler would be reseeded at random)."""
    space, acc, true = world
    budget = float(np.quantile(list(true.values()), 0.5))
    runs = [search_once(space, acc, true, true, budget, "optuna-tpe", queries=15, population=10, seed=4) for _ in "ab"]
    assert runs[0]["proposals"] > 15 and runs[0]["queries"] == 15
    assert runs[0]["curve"] == runs[1]["curve"] and runs[0]["winner"] == runs[1]["winner"]
