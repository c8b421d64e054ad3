"""Our samplers pass Optuna's own generic sampler test cases (optuna.testing.pytest_samplers), on every space,
and keep the contracts users rely on when they combine them with Optuna's pieces."""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    MultiObjectiveSamplerTestCase,
    RelativeSamplerTestCase,
)

import search_spaces
from nas.search.samplers import EvolutionSampler, NSGA2Sampler, RandomArchSampler, crowding, nondominated_sort

SAMPLERS = {"evolution": EvolutionSampler, "nsga2": NSGA2Sampler, "random": RandomArchSampler}
SPACES = {name: search_spaces.create(name) for name in search_spaces.names()}


class TestOptunaSamplerSuite(BasicSamplerTestCase, RelativeSamplerTestCase, MultiObjectiveSamplerTestCase):
    """Optuna's cases, as its tests/samplers_tests/test_samplers.py runs them for its own samplers."""

    @pytest.fixture(params=[(s, p) for s in SAMPLERS for p in SPACES], ids=lambda p: f"{p[0]}-{p[1]}")
    def sampler(self, request):
        cls, space = SAMPLERS[request.param[0]], SPACES[request.param[1]]
        return lambda: cls(space, population=4, seed=0)


def _objective(space):
    def objective(trial):
        arch = space.suggest(trial)
        return float(np.random.default_rng(abs(hash(space.to_str(arch))) % 2**32).random())

    return objective


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_partial_fixed_sampler_fixes_a_gene_of_our_samplers(name):
    space = SPACES["nasbench201"]
    gene = space.genes[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fixed = optuna.samplers.PartialFixedSampler({gene.name: gene.options[0]}, SAMPLERS[name](space, 4, seed=0))
    study = optuna.create_study(sampler=fixed, direction="maximize")
    study.optimize(_objective(space), n_trials=12)
    assert {t.params[gene.name] for t in study.trials} == {gene.options[0]}
    assert len({tuple(t.params.values()) for t in study.trials}) == 12


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_seed_none_is_fresh_randomness_and_reseed_rng_reseeds(name):
    space = SPACES["nasbench201"]

    def first_archs(sampler):
        study = optuna.create_study(sampler=sampler, direction="maximize")
        study.optimize(_objective(space), n_trials=3)
        return [tuple(t.params.values()) for t in study.trials]

    cls = SAMPLERS[name]
    assert first_archs(cls(space, 4, seed=0)) == first_archs(cls(space, 4, seed=0))
    assert first_archs(cls(space, 4, seed=None)) != first_archs(cls(space, 4, seed=None))
    reseeded = cls(space, 4, seed=0)
    reseeded.reseed_rng()
    assert first_archs(reseeded) != first_archs(cls(space, 4, seed=0))


def test_crowding_with_infinite_objectives_stays_a_number():
    points = np.array([[1.0, -np.inf], [0.5, 2.0], [0.2, 3.0], [0.1, np.inf], [0.3, 2.5]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = crowding(points)
    assert not np.isnan(dist).any() and np.isinf(dist).sum() >= 2


def test_nondominated_sort_matches_the_definition():
    rng = np.random.default_rng(0)
    points = rng.integers(0, 5, size=(60, 2)).astype(float)
    fronts = nondominated_sort(points)
    assert sorted(i for f in fronts for i in f) == list(range(60))
    dominated = lambda a, b: np.all(points[b] >= points[a]) and np.any(points[b] > points[a])
    for k, front in enumerate(fronts):
        for i in front:
            assert not any(dominated(i, j) for f in fronts[k:] for j in f)  # nothing at its level or below beats it
            if k:
                assert any(dominated(i, j) for j in fronts[k - 1])  # something one level up does
