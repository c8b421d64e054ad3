"""Search: every strategy drives a study; objectives, fronts, resuming, and workers sharing a storage."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from nas.search import (
    STRATEGIES,
    Objective,
    SearchConfig,
    completed,
    hypervolume,
    make_sampler,
    pareto_front,
    run_search,
)
from search_spaces import load_space


def toy(space):
    """Latency is proportional to FLOPs; accuracy is a hidden score per gene choice plus a FLOPs
    term: finding the best arch under a budget takes combining good choices, as in a real search."""
    rng = np.random.default_rng(123)
    weights = [rng.random(len(g.options)) for g in space.genes]
    f0 = space.flops(space.sample(np.random.default_rng(0)))

    def evaluate(arch):
        f = space.flops(arch)
        hidden = np.mean(
            [w[g.options.index(v)] for w, g, v, on in zip(weights, space.genes, arch, space.active(arch)) if on]
        )
        return 0.5 * hidden + 0.5 * f / (f + f0), f / f0

    return evaluate


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("objective", ["budget", "pareto"])
def test_every_strategy_searches_valid_archs_of_every_space(strategy, objective, tmp_path):
    for spec in ("nasbench201", "ofa_mbv3:resolutions=[32]"):
        space = load_space(spec)
        config = SearchConfig(strategy=strategy, trials=24, population=8, seed=1, study_name=f"s{objective}")
        study = run_search(
            space, toy(space), Objective(objective, budget_ms=2.0), config, f"sqlite:///{tmp_path}/{space.name}.db"
        )
        rows = completed(study)
        assert len(rows) == 24
        for r in rows:
            assert space.to_str(space.from_str(r["arch"])) == r["arch"]
        assert len({r["arch"] for r in rows}) > 12  # the strategy explores, it does not repeat one arch


@pytest.mark.parametrize("strategy", ["evolution", "nsga2"])
def test_our_strategies_evaluate_no_architecture_twice(strategy, tmp_path):
    space = load_space("hybrid_lm:dims=[64],heads=[2],ffn_ratios=[2],stages=1,max_repeat=1,max_blocks=4")
    rng = np.random.default_rng(0)
    fixed = {}

    def evaluate(arch):  # a few good architectures, so parents and children repeat unless the sampler avoids it
        key = space.to_str(arch)
        fixed.setdefault(key, (float(rng.integers(3)), 1.0))
        return fixed[key]

    config = SearchConfig(strategy=strategy, trials=60, population=6, seed=0)
    rows = completed(
        run_search(space, evaluate, Objective("budget", budget_ms=2.0), config, f"sqlite:///{tmp_path}/s.db")
    )
    assert space.size() > 60 and len(rows) == 60
    assert len({r["arch"] for r in rows}) == 60


@pytest.mark.slow
def test_evolution_finds_better_feasible_archs_than_random(tmp_path):
    space = load_space("ofa_mbv3:resolutions=[32]")
    evaluate = toy(space)
    lat = sorted(evaluate(space.sample(np.random.default_rng(i)))[1] for i in range(200))
    budget = lat[len(lat) // 4]  # only a quarter of random archs meet it
    best = {}
    for strategy in ("random", "evolution", "nsga2"):
        scores = []
        for seed in range(3):
            config = SearchConfig(
                strategy=strategy, trials=120, population=20, seed=seed, study_name=f"{strategy}{seed}"
            )
            study = run_search(
                space, evaluate, Objective("budget", budget_ms=budget), config, f"sqlite:///{tmp_path}/s.db"
            )
            scores.append(max(r["accuracy"] for r in completed(study) if r["latency_ms"] <= budget))
        best[strategy] = np.mean(scores)
    assert best["evolution"] > best["random"] and best["nsga2"] > best["random"], best


def test_a_stopped_search_resumes_without_repeating_a_trial(tmp_path):
    space = load_space("nasbench201")
    calls = []
    evaluate = toy(space)

    def counted(arch):
        calls.append(arch)
        if len(calls) == 13:
            raise KeyboardInterrupt  # killed while evaluating the 13th
        return evaluate(arch)

    storage = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(strategy="evolution", trials=30, population=8, seed=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(space, counted, Objective("pareto"), config, storage)
    study = run_search(space, counted, Objective("pareto"), config, storage)
    rows = completed(study)
    assert len(rows) == 30 and len(calls) == 31  # 12 kept, 1 lost mid-evaluation and asked again, 18 more
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.FAIL) == 1 and optuna.trial.TrialState.RUNNING not in states


def test_a_trial_left_running_by_a_dead_worker_is_failed_and_redone(tmp_path):
    space = load_space("nasbench201")
    storage = f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(storage=storage, study_name="hwnas", directions=["maximize", "minimize"])
    orphan = study.ask()
    orphan.set_user_attr("worker", f"{os.uname().nodename}:999999999")  # no such process
    study = run_search(space, toy(space), Objective("pareto"), SearchConfig(trials=5, population=4), storage)
    assert len(completed(study)) == 5
    assert study.get_trials()[0].state == optuna.trial.TrialState.FAIL


def test_objectives_rank_feasible_above_infeasible():
    budget = Objective("budget", budget_ms=10.0)
    assert budget.values(0.5, 9.0)[0] > budget.values(0.99, 11.0)[0]
    assert budget.values(0.1, 12.0)[0] > budget.values(0.1, 30.0)[0]  # of the infeasible, the faster
    assert budget.values(-5.0, 10.0)[0] > budget.values(-1.0, 10.5)[0] > budget.values(-1.0, 40.0)[0]  # any sign
    soft = Objective("soft", budget_ms=10.0)
    assert soft.values(0.8, 5.0)[0] > soft.values(0.8, 10.0)[0] > soft.values(0.8, 20.0)[0]
    with pytest.raises(ValueError, match="objective 'soft' needs accuracy >= 0, but got -2.5"):
        soft.values(-2.5, 5.0)
    assert Objective("pareto").directions == ["maximize", "minimize"]
    with pytest.raises(ValueError, match="objective must be one of budget, soft, pareto, but got 'fast'"):
        Objective("fast")
    with pytest.raises(ValueError, match="needs a positive budget_ms"):
        Objective("budget")
    with pytest.raises(ValueError, match="Unknown search strategy 'anneal'; known: evolution"):
        make_sampler("anneal", load_space("nasbench201"))


def test_front_and_hypervolume_on_a_hand_example():
    acc = [0.5, 0.7, 0.6, 0.9, 0.8]
    lat = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert pareto_front(acc, lat).tolist() == [0, 1, 3]
    # steps: [1,2) at 0.5, [2,4) at 0.7, [4,6) at 0.9 above reference accuracy 0.0, latency 6
    assert hypervolume(acc, lat, 0.0, 6.0) == pytest.approx(1 * 0.5 + 2 * 0.7 + 2 * 0.9)
    assert hypervolume(acc, lat, 0.95, 6.0) == 0.0


def _start(storage: str, name: str, tmp_path: Path, strategy: str, pause: float = 0.0):
    worker = Path(__file__).with_name("search_worker.py")
    logs = [tmp_path / f"{name}-{k}.log" for k in range(2)]
    procs = [
        subprocess.Popen(
            [sys.executable, str(worker), storage, name, str(log), strategy, str(pause)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for log in logs
    ]
    return procs, logs


def _workers(storage: str, name: str, tmp_path: Path, strategy: str) -> list[list[str]]:
    procs, logs = _start(storage, name, tmp_path, strategy)
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    return [log.read_text().splitlines() if log.exists() else [] for log in logs]


def _check_shared(storage: str, name: str, logs: list[list[str]], strategy: str = "nsga2") -> None:
    study = optuna.load_study(study_name=name, storage=storage)
    rows = completed(study)
    done = [line.split("\t")[0] for log in logs for line in log]
    assert all(logs), "both workers must have evaluated trials"
    assert len(done) == len(set(done)), "a trial was evaluated twice"
    assert sorted(map(int, done)) == sorted(r["trial"] for r in rows), "a trial was lost"
    assert 40 <= len(rows) <= 41  # workers ask only for the trials left; two may ask for the last at once
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.get_trials())
    if not strategy.startswith("optuna-"):  # ours never evaluate an architecture twice, even with one seed
        assert len({r["arch"] for r in rows}) == len(rows), "two workers evaluated one architecture"


@pytest.mark.parametrize("strategy", ["random", "nsga2", "optuna-tpe"])
def test_two_workers_share_one_sqlite_study(strategy, tmp_path):
    storage = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(storage=storage, study_name="shared", directions=["maximize", "minimize"])
    _check_shared(storage, "shared", _workers(storage, "shared", tmp_path, strategy), strategy)


def test_a_search_ends_when_its_stop_condition_holds(tmp_path):
    space, seen = load_space("nasbench201"), []
    evaluate = toy(space)

    def counted(arch):
        seen.append(arch)
        return evaluate(arch)

    config = SearchConfig(strategy="random", trials=50, population=10, seed=0)
    study = run_search(
        space, counted, Objective("pareto"), config, f"sqlite:///{tmp_path}/s.db", stop=lambda: len(seen) >= 7
    )
    assert len(completed(study)) == len(seen) == 7


@pytest.mark.parametrize("strategy", ["random", "evolution", "optuna-tpe"])
def test_a_resumed_seeded_study_does_not_replay_its_first_proposals(strategy, tmp_path):
    space, calls = load_space("nasbench201"), []
    evaluate = toy(space)

    def stop_after_four(arch):
        if len(calls) == 4:
            raise KeyboardInterrupt
        calls.append(space.to_str(arch))
        return evaluate(arch)

    storage = f"sqlite:///{tmp_path}/s.db"
    config = SearchConfig(strategy=strategy, trials=10, population=20, seed=0)
    with pytest.raises(KeyboardInterrupt):
        run_search(space, stop_after_four, Objective("pareto"), config, storage)
    study = run_search(space, evaluate, Objective("pareto"), config, storage)
    assert len({r["arch"] for r in completed(study)}) == 10


def test_a_trial_whose_worker_stopped_beating_is_failed_on_any_host(tmp_path, monkeypatch):
    import time

    from nas.search import study as study_module

    monkeypatch.setattr(study_module, "HEARTBEAT", 1)
    monkeypatch.setattr(study_module, "GRACE", 1)
    space, storage = load_space("nasbench201"), f"sqlite:///{tmp_path}/s.db"
    study = optuna.create_study(
        storage=study_module.open_storage(storage), study_name="hwnas", directions=["maximize", "minimize"]
    )
    orphan = study.ask()
    orphan.set_user_attr("worker", "another-machine:12")  # its process cannot be looked up from here
    study._storage.record_heartbeat(orphan._trial_id)
    time.sleep(2.5)
    study = run_search(space, toy(space), Objective("pareto"), SearchConfig(trials=5, population=4), storage)
    assert len(completed(study)) == 5 and study.get_trials()[0].state == optuna.trial.TrialState.FAIL


@pytest.mark.slow
def test_a_worker_killed_mid_trial_leaves_the_other_to_finish_the_study(tmp_path):
    import signal
    import time

    storage = f"sqlite:///{tmp_path}/shared.db"
    optuna.create_study(storage=storage, study_name="shared", directions=["maximize", "minimize"])
    procs, logs = _start(storage, "shared", tmp_path, "evolution", pause=0.15)
    deadline = time.time() + 120
    while not (logs[0].exists() and len(logs[0].read_text().splitlines()) >= 5) and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.07)  # inside its next evaluation
    procs[0].send_signal(signal.SIGKILL)
    procs[0].wait()  # reaped, as a shell or a scheduler does
    _, err = procs[1].communicate(timeout=300)
    assert procs[1].returncode == 0, err[-2000:]
    study = optuna.load_study(study_name="shared", storage=storage)
    states = [t.state for t in study.get_trials()]
    rows = completed(study)
    assert len(rows) in (40, 41) and len({r["arch"] for r in rows}) == len(rows)
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.FAIL in states


@pytest.mark.skipif(
    not os.environ.get("HWNAS_TEST_POSTGRES"), reason="set HWNAS_TEST_POSTGRES=postgresql://... (.ci/run does)"
)
def test_two_workers_share_one_postgresql_study(tmp_path):
    storage = os.environ["HWNAS_TEST_POSTGRES"]
    name = f"shared-{os.getpid()}"
    optuna.create_study(storage=storage, study_name=name, directions=["maximize", "minimize"])
    _check_shared(storage, name, _workers(storage, name, tmp_path, "nsga2"), "nsga2")


def test_bench_sampler_prints_the_speed_of_each_strategy_as_the_study_grows(tmp_path, capsys):
    from nas.cli.main import main

    argv = ["bench", "sampler", "--storage", f"sqlite:///{tmp_path}/b.db", "--trials", "30", "--window", "10"]
    assert main([*argv, "--strategies", "nsga2,random"]) == 0
    out = capsys.readouterr().out
    assert "trials/s, last 10 of 30" in out and "nsga2" in out and "random" in out
    study_names = optuna.get_all_study_names(f"sqlite:///{tmp_path}/b.db")
    assert len(study_names) == 2
    assert all(
        len(optuna.load_study(study_name=n, storage=f"sqlite:///{tmp_path}/b.db").trials) == 30 for n in study_names
    )


@pytest.mark.parametrize("strategy", ["evolution", "nsga2", "random"])
def test_proposals_that_break_the_constraint_are_drawn_again_before_a_trial_is_spent(tmp_path, strategy):
    space = load_space("nasbench201")
    evaluate = toy(space)
    budget = 1.0
    inside = lambda arch: evaluate(arch)[1] <= budget
    cfg = SearchConfig(strategy=strategy, trials=40, population=8, seed=0, objective="budget")
    study = run_search(
        space, evaluate, Objective("budget", budget), cfg, f"sqlite:///{tmp_path}/s.db", constraint=inside
    )
    rows = completed(study)
    assert len(rows) == 40 and all(r["latency_ms"] <= budget for r in rows)
    free = completed(run_search(space, evaluate, Objective("budget", budget), cfg, f"sqlite:///{tmp_path}/f.db"))
    assert any(r["latency_ms"] > budget for r in free)  # without it the same search spends trials over the budget


def test_a_constraint_nothing_meets_still_gives_new_architectures(tmp_path):
    space = load_space("nasbench201")
    cfg = SearchConfig(strategy="evolution", trials=12, population=4, seed=0, objective="budget")
    study = run_search(
        space, toy(space), Objective("budget", 1.0), cfg, f"sqlite:///{tmp_path}/s.db", constraint=lambda a: False
    )
    assert len({r["arch"] for r in completed(study)}) == 12


def test_the_surrogate_carries_what_each_gene_value_is_worth_to_combinations_never_evaluated():
    from itertools import product

    from nas.search.samplers import gp_upper_bound

    genes, values = 6, 5
    onehot = lambda arch: np.concatenate([np.eye(values)[v] for v in arch])
    every = list(product(range(values), repeat=genes))  # 15,625 architectures
    E = np.stack([onehot(a) for a in every])
    ranks = []
    for seed in range(4):
        worth = np.random.default_rng(seed).normal(size=(genes, values))  # accuracy additive over the genes' values
        truth = np.array([worth[np.arange(genes), a].sum() for a in every])
        seen = np.random.default_rng(seed + 100).integers(len(every), size=40)  # forty random evaluations
        unseen = np.setdiff1d(np.arange(len(every)), seen)  # as the sampler does: only new architectures
        pick = int(unseen[np.argmax(gp_upper_bound(E[seen], truth[seen], E[unseen], 0.0))])
        ranks.append(int((truth > truth[pick]).sum()))
    assert np.mean(ranks) <= 50, ranks  # among the best 0.3% on average (the distance kernel alone: 116)


def test_the_surrogate_learns_from_forty_evaluations_that_accuracy_follows_how_much_a_network_computes():
    """When accuracy follows each network's executed computation (as within a space it largely does), the size term
    finds it: the mean at unseen architectures ranks them as their size does, far better than the gene kernels
    alone, and the sampler hands the GP that size."""
    from scipy.stats import spearmanr

    from nas.search.samplers import SurrogateSampler, gp_upper_bound

    space = load_space("nasbench201")
    rng = np.random.default_rng(0)
    archs = list({space.to_str(a): a for a in (space.sample(rng) for _ in range(400))}.values())
    size = SurrogateSampler(space)._size(archs)
    assert size is not None and len(np.unique(size)) > 10
    truth = np.sqrt(size + 0.5)  # saturating in size, nothing of the genes themselves
    E = space.encode_many(archs).astype(float)
    seen, unseen = np.arange(40), np.arange(40, len(archs))
    with_size = gp_upper_bound(E[seen], truth[seen], E[unseen], 0.0, size[seen], size[unseen])
    genes_only = gp_upper_bound(E[seen], truth[seen], E[unseen], 0.0)
    rho_size = spearmanr(with_size, truth[unseen]).statistic
    rho_genes = spearmanr(genes_only, truth[unseen]).statistic
    assert rho_size >= 0.95 and rho_size > rho_genes + 0.05, (rho_size, rho_genes)
