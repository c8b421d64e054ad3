"""Architecture search: strategies as Optuna samplers, objectives, the search loop, the front."""

from __future__ import annotations

from nas.search.front import hypervolume, pareto_front
from nas.search.objectives import Objective
from nas.search.samplers import STRATEGIES, make_sampler
from nas.search.study import SearchConfig, completed, run_search

__all__ = [
    "Objective",
    "STRATEGIES",
    "SearchConfig",
    "completed",
    "hypervolume",
    "make_sampler",
    "pareto_front",
    "run_search",
]
