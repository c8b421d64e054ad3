"""Once-for-All's own search (`ofa`'s EvolutionFinder): on an hwnas run of OFA's space, fed hwnas's calibrated latency
predictor as its efficiency predictor and hwnas's subnet accuracy as its accuracy predictor, so only the search
differs; and on any space of genes (NAS-Bench-201 in `bench tabular`) through OFA's arch-manager contract."""

from __future__ import annotations

import contextlib
import io
import random
from collections.abc import Callable

import numpy as np

from nas.bench.peers import need

NAME = "ofa-evolution"


class _Efficiency:
    """What EvolutionFinder asks of an efficiency predictor; with `draws`, the search stops after that many samples
    (OFA draws again until a sample meets the budget, for ever where none does)."""

    def __init__(
        self, latency: Callable[[tuple], float], to_arch: Callable[[dict], tuple], draws: int | None = None
    ) -> None:
        self.latency, self.to_arch, self.draws, self.drawn = latency, to_arch, draws, 0

    def get_efficiency(self, sample: dict) -> float:
        if self.draws is not None and self.drawn == self.draws:
            raise _Enough
        self.drawn += 1
        return self.latency(self.to_arch(sample))


class _Enough(Exception):
    """Raised inside OFA's loop once a search has scored as many distinct architectures as it may."""


class _Accuracy:
    """What EvolutionFinder asks of an accuracy predictor: an arch encoder and `predict_acc`; every sample it
    scores is recorded (that is the evaluation count). With `distinct`, the search stops at the first sample past
    that many distinct architectures (what it scores again costs no new evaluation)."""

    def __init__(
        self,
        encoder: object,
        accuracy: Callable[[tuple], float],
        to_arch: Callable[[dict], tuple],
        distinct: int | None = None,
    ) -> None:
        self.arch_encoder, self.accuracy, self.to_arch, self.distinct = encoder, accuracy, to_arch, distinct
        self.scored: list[tuple] = []
        self.seen: dict[tuple, None] = {}  # the distinct ones, in order

    def predict_acc(self, samples: list[dict]) -> np.ndarray:
        archs = [self.to_arch(s) for s in samples]
        for a in archs:
            if self.distinct is not None and a not in self.seen and len(self.seen) == self.distinct:
                raise _Enough
            self.scored.append(a)
            self.seen[a] = None
        return np.array([self.accuracy(a) for a in archs], dtype=float)


class GeneArchManager:
    """OFA's arch-manager contract for a space of genes: a sample is {"genes": [...]}; a mutation re-draws each gene
    with the given probability, as OFA's MobileNetV3 encoder re-draws each block's kernel and expansion; the
    resolution, where a space has one, is a gene like the others."""

    def __init__(self, space: object) -> None:
        self.space = space

    def random_sample_arch(self) -> dict:
        return {"genes": [random.choice(g.options) for g in self.space.genes]}

    def mutate_resolution(self, sample: dict, mutate_prob: float) -> dict:
        return sample

    def mutate_arch(self, sample: dict, mutate_prob: float) -> dict:
        for i, gene in enumerate(self.space.genes):
            if random.random() < mutate_prob:
                sample["genes"][i] = random.choice(gene.options)
        return sample


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
    """The archs OFA's EvolutionFinder scores, in order, searching OFA's space under `budget_ms` with `evaluations`
    accuracy evaluations (`_settings`)."""
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
    _run(
        search.EvolutionFinder(_Efficiency(latency, to_arch), scorer, **_settings(population, evaluations)),
        budget_ms,
        seed,
    )
    return scorer.scored


def ofa_gene_evolution(
    space: object,
    accuracy: Callable[[tuple], float],
    latency: Callable[[tuple], float],
    budget_ms: float,
    evaluations: int,
    population: int,
    seed: int,
    draws: int | None = None,
) -> tuple[list[tuple], int]:
    """The distinct archs OFA's EvolutionFinder scores, in order, on any space of genes (`GeneArchManager`), and the
    samples it drew: its generations go on until it has scored `evaluations` distinct architectures or drawn
    `draws` samples, OFA's settings otherwise."""
    search = need("ofa", "ofa.nas.search_algorithm")

    def to_arch(sample: dict) -> tuple:
        return space.canonical(tuple(sample["genes"]))

    scorer = _Accuracy(GeneArchManager(space), accuracy, to_arch, distinct=evaluations)
    efficiency = _Efficiency(latency, to_arch, draws=draws)
    # a converged population scores the same architectures again: generations go on until `distinct` (or `draws`)
    settings = {**_settings(population, evaluations), "max_time_budget": evaluations if draws is None else draws}
    try:
        _run(search.EvolutionFinder(efficiency, scorer, **settings), budget_ms, seed)
    except _Enough:
        pass
    return list(scorer.seen), efficiency.drawn


def _settings(population: int, evaluations: int) -> dict:
    """OFA's ratios of parents 0.25 and of mutations 0.5, its mutation probabilities 0.1 and 0.5 for the resolution;
    its population, then `evaluations / population - 1` generations."""
    return {
        "population_size": population,
        "max_time_budget": max(evaluations // population - 1, 0),
        "parent_ratio": 0.25,
        "mutation_ratio": 0.5,
        "arch_mutate_prob": 0.1,
        "resolution_mutate_prob": 0.5,
    }


def _run(finder: object, budget_ms: float, seed: int) -> None:
    """OFA draws from the global generators: seeded for the search, given back after it. Its loop prints every
    100 generations even when not verbose: that goes nowhere."""
    saved = random.getstate(), np.random.get_state()
    random.seed(seed)
    np.random.seed(seed)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            finder.run_evolution_search(budget_ms, verbose=False)
    finally:
        random.setstate(saved[0])
        np.random.set_state(saved[1])
