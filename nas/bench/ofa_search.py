"""Once-for-All's own search (`ofa`'s EvolutionFinder) on an hwnas run: fed hwnas's calibrated latency predictor as
its efficiency predictor and hwnas's subnet accuracy as its accuracy predictor, so only the search differs."""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np

from nas.bench.peers import need

NAME = "ofa-evolution"


class _Efficiency:
    def __init__(self, latency: Callable[[tuple], float], to_arch: Callable[[dict], tuple]) -> None:
        self.latency, self.to_arch = latency, to_arch

    def get_efficiency(self, sample: dict) -> float:
        return self.latency(self.to_arch(sample))


class _Accuracy:
    """What EvolutionFinder asks of an accuracy predictor: an arch encoder and `predict_acc`; every sample it
    scores is recorded (that is the evaluation count)."""

    def __init__(self, encoder: object, accuracy: Callable[[tuple], float], to_arch: Callable[[dict], tuple]) -> None:
        self.arch_encoder, self.accuracy, self.to_arch = encoder, accuracy, to_arch
        self.scored: list[tuple] = []

    def predict_acc(self, samples: list[dict]) -> np.ndarray:
        archs = [self.to_arch(s) for s in samples]
        self.scored.extend(archs)
        return np.array([self.accuracy(a) for a in archs], dtype=float)


def check_space(space: object) -> None:
    if getattr(space, "name", None) != "ofa_mbv3":
        raise ValueError(f"--peer ofa searches ofa_mbv3 runs (OFA's space), but this run's space is {space.spec!r}")


def ofa_evolution(
    space: object,
    accuracy: Callable[[tuple], float],
    latency: Callable[[tuple], float],
    budget_ms: float,
    evaluations: int,
    population: int,
    seed: int,
) -> list[tuple]:
    """The archs OFA's EvolutionFinder scores, in order, searching under `budget_ms` with `evaluations` accuracy
    evaluations (its population, then `evaluations / population - 1` generations; OFA's ratios of parents
    0.25 and of mutations 0.5, its mutation probabilities 0.1 and 0.5 for the resolution)."""
    from search_spaces.ofa_mbv3.blocks import DEPTHS, EXPANDS, KERNELS

    check_space(space)
    search = need("ofa", "ofa.nas.search_algorithm")
    encoders = need("ofa", "ofa.nas.accuracy_predictor.arch_encoder")
    encoder = encoders.MobileNetArchEncoder(
        image_size_list=list(space.resolutions),
        ks_list=list(KERNELS),
        expand_list=list(EXPANDS),
        depth_list=list(DEPTHS),
    )

    def to_arch(sample: dict) -> tuple:
        return space.make(sample["ks"], sample["e"], sample["d"], sample["image_size"])

    scorer = _Accuracy(encoder, accuracy, to_arch)
    finder = search.EvolutionFinder(
        _Efficiency(latency, to_arch),
        scorer,
        population_size=population,
        max_time_budget=max(evaluations // population - 1, 0),
        parent_ratio=0.25,
        mutation_ratio=0.5,
        arch_mutate_prob=0.1,
        resolution_mutate_prob=0.5,
    )
    saved = random.getstate(), np.random.get_state()
    random.seed(seed)  # OFA draws from the global generators: seeded for the search, given back after it
    np.random.seed(seed)
    try:
        finder.run_evolution_search(budget_ms, verbose=False)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
    return scorer.scored
