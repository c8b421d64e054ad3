"""The search loop: an Optuna study asks for architectures, the evaluator scores them, every result
is stored as it is made. Workers with the same storage URL and study name share one search."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState

from nas.search.objectives import Objective
from nas.search.samplers import ARCH_ATTR, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class SearchConfig:
    strategy: str = "evolution"
    trials: int = 300
    population: int = 50
    objective: str = "budget"
    soft_w: float = -0.07
    storage: str | None = None
    study_name: str = "hwnas"
    seed: int = 0


Evaluator = Callable[[tuple], tuple[float, float]]


def open_study(
    space: Any, config: SearchConfig, objective: Objective, storage: str, key: dict[str, Any] | None = None
) -> optuna.Study:
    """Create the study, or join it when it exists (resume, or another worker). `key` (the device and predictor
    the trials' numbers come from) must equal the key of an existing study: numbers of another device never mix."""
    sampler = make_sampler(config.strategy, space, config.population, config.seed)
    try:
        study = optuna.create_study(
            storage=storage,
            study_name=config.study_name,
            sampler=sampler,
            directions=objective.directions,
            load_if_exists=True,
        )
    except (optuna.exceptions.DuplicatedStudyError, KeyError):
        study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=sampler)
    if [d.name.lower() for d in study.directions] != objective.directions:
        raise ValueError(
            f"study {config.study_name!r} in {storage} optimises {[d.name.lower() for d in study.directions]}, "
            f"but this search has objective {objective.kind!r} ({objective.directions}); use another study_name"
        )
    if key is not None:
        before = study.user_attrs.get("key")
        if before is not None and before != key:
            differ = [k for k in key if before.get(k) != key[k]]
            then = ", ".join(f"{k}={before.get(k)!r}" for k in differ)
            now = ", ".join(f"{k}={key[k]!r}" for k in differ)
            raise ValueError(
                f"study {config.study_name!r} in {storage} holds trials scored with {then}, but this search has "
                f"{now}; set another search.study_name (or use a new run directory)"
            )
        study.set_user_attr("key", key)
    study.set_user_attr("objective", {"kind": objective.kind, "budget_ms": objective.budget_ms, "w": objective.w})
    return study


def _count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)))


def run_search(
    space: Any,
    evaluate: Evaluator,
    objective: Objective,
    config: SearchConfig,
    storage: str,
    progress: Callable[[int, int], None] | None = None,
    on_trial: Callable[[int, tuple, float, float], None] | None = None,
    key: dict[str, Any] | None = None,
) -> optuna.Study:
    """Evaluate architectures until the study holds `config.trials` finished trials.

    A trial left RUNNING by a worker that was killed is failed and its architecture asked again,
    so a stopped search resumes with nothing lost and nothing counted twice."""
    study = open_study(space, config, objective, storage, key)
    _fail_abandoned(study)
    while _count(study) < config.trials:
        trial = study.ask()
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        try:
            arch = space.suggest(trial)
            accuracy, latency = evaluate(arch)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        trial.set_user_attr(ARCH_ATTR, space.to_str(arch))
        trial.set_user_attr("accuracy", float(accuracy))
        trial.set_user_attr("latency_ms", float(latency))
        study.tell(trial, objective.values(accuracy, latency))
        if on_trial:
            on_trial(trial.number, arch, accuracy, latency)
        if progress:
            progress(min(_count(study), config.trials), config.trials)
    return study


def _fail_abandoned(study: optuna.Study) -> None:
    """RUNNING trials of this host whose process is gone were cut off: mark them failed."""
    host = os.uname().nodename
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = str(t.user_attrs.get("worker", ""))
        name, _, pid = worker.rpartition(":")
        if name == host and pid.isdigit() and not _alive(int(pid)):
            study._storage.set_trial_state_values(t._trial_id, TrialState.FAIL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def completed(study: optuna.Study) -> list[dict]:
    """Every finished trial: number, arch, accuracy, latency_ms, worker."""
    return [
        {
            "trial": t.number,
            "arch": t.user_attrs[ARCH_ATTR],
            "accuracy": t.user_attrs["accuracy"],
            "latency_ms": t.user_attrs["latency_ms"],
            "worker": t.user_attrs.get("worker", ""),
        }
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if ARCH_ATTR in t.user_attrs
    ]
