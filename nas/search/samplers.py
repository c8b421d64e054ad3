"""Search strategies as Optuna samplers, so every strategy runs in an Optuna study: one storage
(SQLite, PostgreSQL) holds the progress, resumes a stopped search, and lets many workers share it.

`evolution` (regularized evolution, Real et al. 2019) and `nsga2` (Deb et al. 2002) are our own and
vary architectures with the space's `mutate` and `crossover`, which know which genes matter;
`surrogate` is evolution guided by a Gaussian-process accuracy surrogate (after BANANAS, NPENAS);
`optuna-tpe` and `optuna-nsga2` are Optuna's samplers over the genes; `random` is the baseline."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from nas.search.objectives import INFEASIBLE
from search_spaces.base import totals

ARCH_ATTR = "arch"


def _signed(study: Study, trial: FrozenTrial) -> np.ndarray:
    """Trial values turned so that larger is better in every objective."""
    return np.array([v if d == StudyDirection.MAXIMIZE else -v for v, d in zip(trial.values, study.directions)])


def nondominated_sort(points: np.ndarray) -> list[list[int]]:
    """Fronts of indices, best first (points: larger is better in every column); O(n^2) in numpy."""
    points = np.asarray(points, float)
    n = len(points)
    if n == 0:
        return []
    ge = np.all(points[:, None, :] >= points[None, :, :], axis=2)
    gt = np.any(points[:, None, :] > points[None, :, :], axis=2)
    dominates = ge & gt  # dominates[i, j]: i dominates j
    count = dominates.sum(axis=0)
    fronts, current = [], np.flatnonzero(count == 0)
    while current.size:
        fronts.append(current.tolist())
        count = count - dominates[current].sum(axis=0)
        count[current] = -1
        current = np.flatnonzero(count == 0)
    return fronts


def _finite(column: np.ndarray) -> np.ndarray:
    """+/-inf replaced by values just beyond the finite ones, so distances stay numbers."""
    ok = np.isfinite(column)
    if ok.all():
        return column
    low, high = (column[ok].min(), column[ok].max()) if ok.any() else (0.0, 0.0)
    pad = (high - low) or 1.0
    return np.where(column == np.inf, high + pad, np.where(column == -np.inf, low - pad, column))


def crowding(points: np.ndarray) -> np.ndarray:
    """NSGA-II's crowding distance (the ends of each objective are infinitely far); +/-inf objectives are
    handled, never NaN."""
    n, m = points.shape
    dist = np.zeros(n)
    for k in range(m):
        column = _finite(points[:, k].astype(float))
        order = np.argsort(column, kind="stable")
        span = column[order[-1]] - column[order[0]] or 1.0
        dist[order[0]] = dist[order[-1]] = np.inf
        if n > 2:
            dist[order[1:-1]] += (column[order[2:]] - column[order[:-2]]) / span
    return dist


class _SpaceSampler(BaseSampler):
    """Proposes whole architectures; the trial's define-by-run `space.suggest` takes them gene by gene.

    Each trial's randomness comes from (seed, trial number), so workers sharing a study, and a study resumed
    after a stop, never replay each other's proposals; `seed=None` (and `reseed_rng`) draws fresh entropy."""

    retries = 32
    constrained = 4  # with a constraint, `constrained` times as many proposals and random draws
    per_trial = True  # resuming needs no reseeding: trial numbers never repeat
    constraint: Callable[[tuple], bool] | None = None  # set by `make_sampler`

    def __init__(self, space: Any, population: int = 50, seed: int | None = None) -> None:
        self.space, self.population, self.seed = space, population, seed
        self._random = RandomSampler(seed=seed)
        self._entropy = seed if seed is not None else _fresh()

    def reseed_rng(self) -> None:
        self._random.reseed_rng()
        self._entropy = _fresh()

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {g.name: CategoricalDistribution(list(g.options)) for g in self.space.genes}

    def sample_independent(self, study: Study, trial: FrozenTrial, name: str, dist: BaseDistribution) -> Any:
        return self._random.sample_independent(study, trial, name, dist)

    def _history(self, study: Study) -> list[FrozenTrial]:
        done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return [t for t in sorted(done, key=lambda t: t.number) if ARCH_ATTR in t.user_attrs]

    def _rng(self, trial: FrozenTrial) -> np.random.Generator:
        return np.random.default_rng([self._entropy, trial.number])

    def _running(self, study: Study, trial: FrozenTrial) -> set[str]:
        """Architectures other workers are evaluating now (their genes are in the storage already)."""
        names = [g.name for g in self.space.genes]
        out = set()
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if t.number != trial.number and all(n in t.params for n in names):
                out.add(self.space.to_str(tuple(t.params[n] for n in names)))
        return out

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        """A new architecture: one already evaluated (or being evaluated by another worker) is proposed again only
        after `retries` proposals and `retries` random draws found nothing new. With a `constraint` (the budget
        under the latency predictor), proposals that break it are drawn again, as Once-for-All's finder does,
        `constrained` times as often, before a new one that breaks it is taken. Values are returned for exactly the
        names of `search_space` (the Optuna contract, which `PartialFixedSampler` relies on): genes from the
        proposal, any other parameter from the random sampler."""
        if not search_space:
            return {}
        genes = {g.name for g in self.space.genes}
        values = {
            name: self._random.sample_independent(study, trial, name, dist)
            for name, dist in search_space.items()
            if name not in genes
        }
        if not genes & set(search_space):
            return values
        history = self._history(study)
        rng = self._rng(trial)
        seen = {t.user_attrs[ARCH_ATTR] for t in history} | self._running(study, trial)
        evolve = len(history) >= self.population
        tries = self.retries * (1 if self.constraint is None else self.constrained)
        first_new = None
        for attempt in range(2 * tries):  # the strategy's proposals first, then random ones
            arch = self.propose(study, history, rng) if evolve and attempt < tries else self.space.sample(rng)
            if self.space.to_str(arch) in seen:
                continue
            if self.constraint is None or self.constraint(arch):
                break
            first_new = first_new or arch
        else:  # nothing new met the constraint: the first new proposal, else the last one
            arch = first_new or arch
        return values | {g.name: _plain(v) for g, v in zip(self.space.genes, arch) if g.name in search_space}

    def arch(self, trial: FrozenTrial) -> tuple:
        return self.space.from_str(trial.user_attrs[ARCH_ATTR])

    def propose(self, study: Study, history: list[FrozenTrial], rng: np.random.Generator) -> tuple:
        raise NotImplementedError


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value Optuna stores."""
    return value.item() if isinstance(value, np.generic) else value


def _fresh() -> int:
    return int(np.random.SeedSequence().entropy)


class RandomArchSampler(_SpaceSampler):
    """Random search: uniform architectures of the space, none proposed twice while new ones are found."""

    def propose(self, study: Study, history: list[FrozenTrial], rng: np.random.Generator) -> tuple:
        return self.space.sample(rng)


class EvolutionSampler(_SpaceSampler):
    """Regularized evolution: the population is the newest `population` trials (the oldest dies);
    a parent is the best of `tournament` drawn from it (on several objectives: one of the sample's
    non-dominated members), and the child is the parent mutated."""

    def __init__(self, space: Any, population: int = 50, tournament: int = 10, seed: int | None = None) -> None:
        super().__init__(space, population, seed)
        self.tournament = tournament

    def propose(self, study: Study, history: list[FrozenTrial], rng: np.random.Generator) -> tuple:
        alive = history[-self.population :]
        pick = rng.choice(len(alive), size=min(self.tournament, len(alive)), replace=False)
        points = np.array([_signed(study, alive[i]) for i in pick])
        best = nondominated_sort(points)[0]
        parent = alive[pick[best[rng.integers(len(best))]]]
        return self.space.mutate(self.arch(parent), rng)


class NSGA2Sampler(_SpaceSampler):
    """NSGA-II: parents are the best `population` of all trials by (front, crowding distance),
    chosen by binary tournament; the child is their crossover, then mutated."""

    def __init__(self, space: Any, population: int = 50, crossover_prob: float = 0.9, seed: int | None = None) -> None:
        super().__init__(space, population, seed)
        self.crossover_prob = crossover_prob
        self._cache: dict[tuple[int, int], tuple[list[FrozenTrial], set[int]]] = {}

    def _elite(self, study: Study, history: list[FrozenTrial]) -> tuple[list[FrozenTrial], np.ndarray, np.ndarray]:
        """The best `population` trials by (front, crowding), with their ranks and crowding distances. The elite is
        kept between trials and merged with the trials finished since ((mu + lambda) selection, as NSGA-II's
        generations do), so a proposal costs the same at trial 100 and at trial 5,000."""
        key = (id(study._storage), study._study_id)
        elite, processed = self._cache.get(key, ([], set()))
        new = [t for t in history if t.number not in processed]  # other workers may finish out of order
        pool = elite + new
        points = np.array([_signed(study, t) for t in pool])
        rank, crowd = np.empty(len(pool), int), np.empty(len(pool))
        for r, front in enumerate(nondominated_sort(points)):
            rank[front] = r
            crowd[front] = crowding(points[front])
        keep = sorted(range(len(pool)), key=lambda i: (rank[i], -crowd[i]))[: self.population]
        elite = [pool[i] for i in keep]
        self._cache[key] = (elite, processed | {t.number for t in new})
        return elite, rank[keep], crowd[keep]

    def propose(self, study: Study, history: list[FrozenTrial], rng: np.random.Generator) -> tuple:
        elite, rank, crowd = self._elite(study, history)

        def tournament() -> tuple:
            a, b = rng.choice(len(elite), 2, replace=False)
            better = a if (rank[a], -crowd[a]) <= (rank[b], -crowd[b]) else b
            return self.arch(elite[better])

        child = tournament()
        if rng.random() < self.crossover_prob:
            child = self.space.crossover(child, tournament(), rng)
        return self.space.mutate(child, rng)


def _hamming(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Genes that differ between one-hot rows of A and B (inactive genes count as a value of their own)."""
    return (A.sum(1)[:, None] + B.sum(1)[None, :] - 2 * A @ B.T) / 2


SIZE_SETTINGS = ((0.0, 0.5), (0.5, 0.5), (0.5, 2.0), (2.0, 0.5), (2.0, 2.0))  # (by_size, scale); 0: no size term


def gp_upper_bound(
    X: np.ndarray,
    y: np.ndarray,
    C: np.ndarray,
    kappa: float,
    size: np.ndarray | None = None,
    size_c: np.ndarray | None = None,
) -> np.ndarray:
    """A Gaussian process on architectures fitted to (X, y), and its upper confidence bound mean + kappa x sd at the
    rows of C. Its kernel is exp(-genes that differ / length) plus `additive` x the share of genes two
    architectures have in common: the second term is a model additive over the genes' values, so what the evaluated
    architectures say of each value carries to combinations none of them had. With `size` (of X's rows) and
    `size_c` (of C's), e.g. the log of the computation each network executes, a third term `by_size` x
    exp(-(size difference / its spread)^2 / scale) lets networks of like size be alike whatever their genes: within
    a space, how much a network computes says much of its accuracy. Length, weights and scale are chosen by
    marginal likelihood (weight 0 leaves a term out)."""
    mu, sd = float(y.mean()), float(y.std()) + 1e-9
    t = (y - mu) / sd
    genes = max(float(X[0].sum()), 1.0)
    H, Hc = _hamming(X, X), _hamming(C, X)
    shared, noise = X @ X.T, 1e-2 * np.eye(len(X))
    by_size, alike = SIZE_SETTINGS[:1], {}
    if size is not None and size_c is not None:
        spread = float(np.std(size)) or 1.0
        by_size = SIZE_SETTINGS
        S2, S2c = ((size[:, None] - size[None]) / spread) ** 2, ((size_c[:, None] - size[None]) / spread) ** 2
        alike = {scale: np.exp(-S2 / scale) for _, scale in by_size}
    best = None
    for length in (0.5, 1.0, 2.0, 4.0):
        base = np.exp(-H / length) + noise
        for additive in (0.0, 0.5, 2.0):
            genes_part = base + additive * shared / genes
            for weight, scale in by_size:
                K = genes_part + weight * alike[scale] if weight else genes_part
                L = np.linalg.cholesky(K)
                alpha = np.linalg.solve(L.T, np.linalg.solve(L, t))
                evidence = -0.5 * t @ alpha - np.log(np.diag(L)).sum()
                if best is None or evidence > best[0]:
                    best = (evidence, length, additive, weight, scale, L, alpha)
    _, length, additive, weight, scale, L, alpha = best
    Kc = np.exp(-Hc / length) + additive * (C @ X.T) / genes
    if weight:
        Kc = Kc + weight * np.exp(-S2c / scale)
    v = np.linalg.solve(L, Kc.T)
    prior = 1.0 + additive * (C * C).sum(1) / genes + weight
    var = np.clip(prior - (v * v).sum(0), 1e-12, None)
    return mu + sd * (Kc @ alpha + kappa * np.sqrt(var))


class SurrogateSampler(_SpaceSampler):
    """Evolution guided by an accuracy surrogate (after BANANAS and NPENAS): a Gaussian process over the
    architectures evaluated so far (`gp_upper_bound`) scores `candidates` mutations of the best `parents` (and a
    few random architectures), and the one with the highest upper confidence bound is evaluated: accuracy queries
    go where the surrogate expects them to pay. The GP also knows how much each network executes (`_size`), so
    forty evaluations already say how accuracy grows with it. The latency constraint filters candidates before the
    surrogate sees them. `kappa` 2 explores more than 0.5 or 1 and less than 4: measured on NAS-Bench-201 over eight
    devices, three budgets and ten seeds (README). On several objectives it proposes as regularized evolution does."""

    def __init__(
        self,
        space: Any,
        population: int = 20,
        parents: int = 5,
        candidates: int = 200,
        kappa: float = 2.0,
        seed: int | None = None,
    ) -> None:
        super().__init__(space, population, seed)
        self.parents, self.candidates, self.kappa = parents, candidates, kappa
        self._sizes: dict[str, float] = {}

    def _size(self, archs: list[tuple]) -> np.ndarray | None:
        """log(1 + MMACs each network executes), cached; None for a space without an operator list."""
        out = []
        for arch in archs:
            key = self.space.to_str(arch)
            if key not in self._sizes:
                try:
                    ops, _ = self.space.executed_operators(arch)
                except NotImplementedError:
                    return None
                self._sizes[key] = float(np.log1p(totals(ops)[0] / 1e6))
            out.append(self._sizes[key])
        return np.array(out)

    def propose(self, study: Study, history: list[FrozenTrial], rng: np.random.Generator) -> tuple:
        if len(study.directions) > 1:
            return EvolutionSampler(self.space, self.population, max(2, self.population // 5)).propose(
                study, history, rng
            )
        sign = 1.0 if study.directions[0] == StudyDirection.MAXIMIZE else -1.0
        values = np.array([sign * t.values[0] for t in history])
        ok = values > INFEASIBLE / 2  # over the budget: never a parent, never taught to the surrogate
        archs = [self.arch(t) for t in history]
        seen = {self.space.to_str(a) for a in archs}
        ranked = [archs[i] for i in np.argsort(-np.where(ok, values, -np.inf))[: self.parents] if ok[i]]
        pool: dict[str, tuple] = {}
        for k in range(self.candidates):
            if not ranked or k % 5 == 4:
                cand = self.space.sample(rng)
            else:
                cand = self.space.mutate(ranked[k % len(ranked)], rng)
                if rng.random() < 0.3:
                    cand = self.space.mutate(cand, rng)
            key = self.space.to_str(cand)
            if key not in seen and key not in pool and (self.constraint is None or self.constraint(cand)):
                pool[key] = cand
        cands = list(pool.values())
        if not cands:
            return self.space.sample(rng)
        if ok.sum() < 2:
            return cands[int(rng.integers(len(cands)))]
        train = [a for a, good in zip(archs, ok) if good]
        score = gp_upper_bound(
            self.space.encode_many(train).astype(float),
            values[ok],
            self.space.encode_many(cands).astype(float),
            self.kappa,
            self._size(train),
            self._size(cands),
        )
        return cands[int(np.argmax(score))]


STRATEGIES: dict[str, Callable[..., BaseSampler]] = {
    "evolution": lambda space, population, seed: EvolutionSampler(
        space, population, max(2, population // 5), seed=seed
    ),
    "nsga2": lambda space, population, seed: NSGA2Sampler(space, population, seed=seed),
    "surrogate": lambda space, population, seed: SurrogateSampler(space, population, seed=seed),
    "random": lambda space, population, seed: RandomArchSampler(space, population, seed=seed),
    "optuna-tpe": lambda space, population, seed: optuna.samplers.TPESampler(
        seed=seed, n_startup_trials=min(population, 20), multivariate=True, group=True
    ),
    "optuna-nsga2": lambda space, population, seed: optuna.samplers.NSGAIISampler(
        population_size=population, seed=seed
    ),
}


def make_sampler(
    strategy: str,
    space: Any,
    population: int = 50,
    seed: int | None = None,
    constraint: Callable[[tuple], bool] | None = None,
) -> BaseSampler:
    """The strategy's sampler; `constraint` (hwnas's own strategies) redraws proposals that break it before any
    accuracy is spent on them."""
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown search strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if population < 2:
        raise ValueError(f"`population >= 2` must hold, but got population={population}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        sampler = STRATEGIES[strategy](space, population, seed)
    if constraint is not None and isinstance(sampler, _SpaceSampler):
        sampler.constraint = constraint
    return sampler
