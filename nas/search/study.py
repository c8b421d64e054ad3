"""The search loop: an Optuna study asks for architectures, the evaluator scores them, every result
is stored as it is made. Workers with the same storage URL and study name share one search."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.storages import RDBStorage, fail_stale_trials
from optuna.trial import FrozenTrial, TrialState

from nas.rundir import process_alive
from nas.search.objectives import Objective
from nas.search.samplers import ARCH_ATTR, make_sampler

optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class SearchConfig:
    strategy: str = "surrogate"
    trials: int = 300
    population: int = 50
    objective: str = "budget"
    soft_w: float = -0.07
    storage: str | None = None
    study_name: str = "hwnas"
    seed: int = 0


Evaluator = Callable[[tuple], tuple[float, float]]

# a worker records a heartbeat every HEARTBEAT seconds while it evaluates; a RUNNING trial whose heartbeat is
# older than GRACE seconds belongs to a worker that died (on any machine) and is failed, its architecture asked again
HEARTBEAT = 10
GRACE = 60
# how often a worker that has nothing left to ask checks whether the other workers' trials finished or died
WAIT = 2.0


def open_storage(url: str) -> Any:
    """An Optuna storage with heartbeats for a database URL; other storages as Optuna opens them (a storage object,
    such as `optuna.storages.InMemoryStorage()` for a benchmark's many short searches, as it is)."""
    if not isinstance(url, str) or "://" not in url:
        return url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return RDBStorage(url, heartbeat_interval=HEARTBEAT, grace_period=GRACE)


DRIVERS = {"mysql": "mysqlclient, or use mysql+pymysql:// with pymysql", "postgresql": "psycopg2-binary"}


def check_storage_opens(url: str, source: str = "search.storage") -> None:
    """Open a database storage once (Optuna creates its tables), so that a URL that cannot serve is one line naming
    it and the cause before any work, not SQLAlchemy's traceback after the budget was measured."""
    if not isinstance(url, str) or "://" not in url:
        return
    try:
        storage = open_storage(url)
    except ImportError:
        scheme = url.split("://")[0]
        driver = DRIVERS.get(scheme.split("+")[0], "the driver SQLAlchemy names for it")
        cause = f"no database driver for {scheme}:// is installed in this Python (pip install {driver})"
    except Exception as err:  # SQLAlchemy's and the driver's errors: the driver's first line says why
        cause = str(getattr(err, "orig", None) or err).strip().splitlines()[0] or type(err).__name__
    else:
        storage.engine.dispose()
        return
    raise ValueError(f"cannot open {source} {_shown(url)!r}: {cause}")


def _shown(url: str) -> str:
    """The URL with its password hidden."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


@contextlib.contextmanager
def heartbeat(study: optuna.Study, trial: optuna.Trial) -> Iterator[None]:
    """Record the trial's heartbeat in the background while the block runs (RDB storages only)."""
    storage = study._storage
    if not isinstance(storage, RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while True:
            storage.record_heartbeat(trial._trial_id)
            if stop.wait(HEARTBEAT):
                return

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def open_study(
    space: Any,
    config: SearchConfig,
    objective: Objective,
    storage: str,
    key: dict[str, Any] | None = None,
    constraint: Callable[[tuple], bool] | None = None,
) -> optuna.Study:
    """Create the study, or join it when it exists (resume, or another worker). `key` (the device and predictor
    the trials' numbers come from) must equal the key of an existing study: numbers of another device never mix."""
    sampler = make_sampler(config.strategy, space, config.population, config.seed, constraint)
    url, storage = storage, open_storage(storage)
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
            f"study {config.study_name!r} in {url} optimises {[d.name.lower() for d in study.directions]}, "
            f"but this search has objective {objective.kind!r} ({objective.directions}); use another study_name"
        )
    if key is not None:
        before = study.user_attrs.get("key")
        if before is not None and before != key:
            differ = [k for k in key if before.get(k) != key[k]]
            then = ", ".join(f"{k}={before.get(k)!r}" for k in differ)
            now = ", ".join(f"{k}={key[k]!r}" for k in differ)
            raise ValueError(
                f"study {config.study_name!r} in {url} holds trials scored with {then}, but this search has "
                f"{now}; set another search.study_name (or use a new run directory)"
            )
        study.set_user_attr("key", key)
    study.set_user_attr("objective", {"kind": objective.kind, "budget_ms": objective.budget_ms, "w": objective.w})
    if study.get_trials(deepcopy=False) and not getattr(sampler, "per_trial", False):
        sampler.reseed_rng()  # resumed or joined: a seeded Optuna sampler would replay the study's first proposals
    return study


def _states(study: optuna.Study) -> tuple[int, int]:
    """(complete, running) trials of the study, once running trials whose worker died are failed: a process gone
    from this host, or (database storages) a heartbeat gone stale on any host."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail_stale_trials(study)
    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING))
    complete = sum(t.state == TrialState.COMPLETE for t in trials)
    running = [t for t in trials if t.state == TrialState.RUNNING and not _fail_abandoned(study, t)]
    return complete, len(running)


def run_search(
    space: Any,
    evaluate: Evaluator,
    objective: Objective,
    config: SearchConfig,
    storage: str,
    progress: Callable[[int, int], None] | None = None,
    on_trial: Callable[[int, tuple, float, float], None] | None = None,
    key: dict[str, Any] | None = None,
    constraint: Callable[[tuple], bool] | None = None,
    stop: Callable[[], bool] | None = None,
) -> optuna.Study:
    """Evaluate architectures until the study holds `config.trials` finished trials, or `stop()` holds.

    Workers sharing the storage never ask for more than the trials left (finished + running); a worker with
    nothing left to ask waits for the others' running trials, and a trial whose worker died (its process gone on
    this host, or its heartbeat stale in a database storage) is failed and a new trial takes its place, so the
    study ends with exactly `config.trials` finished trials while any worker lives. `constraint` (predicted
    latency within the budget) is what hwnas's own strategies draw again for before a trial is evaluated."""
    study = open_study(space, config, objective, storage, key, constraint)
    while True:
        complete, running = _states(study)
        if progress:
            progress(min(complete, config.trials), config.trials)
        if complete >= config.trials or (stop is not None and stop()):
            break
        if complete + running >= config.trials:
            time.sleep(WAIT)
            continue
        with warnings.catch_warnings():  # our heartbeat thread beats for ask-and-tell trials, as optimize's does
            warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used", UserWarning)
            trial = study.ask()
        trial.set_user_attr("worker", f"{os.uname().nodename}:{os.getpid()}")
        try:
            with heartbeat(study, trial):
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
    return study


def _fail_abandoned(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Fail a RUNNING trial of this host whose process is gone (it was cut off); returns whether it was."""
    name, _, pid = str(trial.user_attrs.get("worker", "")).rpartition(":")
    if name == os.uname().nodename and pid.isdigit() and not process_alive(int(pid)):
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        return True
    return False


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
