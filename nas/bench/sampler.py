"""`hwnas bench sampler`: how fast a strategy asks and tells as its study grows (a dummy objective, a real
storage), so a long shared study does not slow down per trial."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from nas.search import Objective, SearchConfig, run_search
from search_spaces import load_space


def bench_sampler(
    strategies: list[str],
    storage: str,
    trials: int,
    window: int = 100,
    space_spec: str = "nasbench201",
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Per strategy: trials per second over the first `window` trials and over the last `window` of `trials`."""
    space = load_space(space_spec)

    def evaluate(arch: tuple) -> tuple[float, float]:
        flops = space.flops(arch)
        return 1.0 - 1.0 / (1.0 + flops / 2e7), flops / 1e7

    rows = []
    for strategy in strategies:
        stamps: list[float] = []
        name = f"bench-sampler-{strategy}-{time.time_ns()}"
        config = SearchConfig(strategy=strategy, trials=trials, population=50, study_name=name, seed=0)
        tick: Callable[[int, tuple, float, float], None] = lambda *_: stamps.append(time.perf_counter())
        start = time.perf_counter()
        run_search(space, evaluate, Objective("pareto"), config, storage, progress=progress, on_trial=tick)
        times = [start, *stamps]
        first = window / (times[min(window, trials)] - times[0])
        last = window / (times[-1] - times[-1 - window]) if trials > window else first
        rows.append({"strategy": strategy, "trials": trials, "first": first, "last": last})
    return rows
