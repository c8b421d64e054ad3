"""The protocol every search space follows, with the gene machinery most spaces share."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class Gene:
    """One independent decision of an architecture: its name and the values it may take."""

    name: str
    options: tuple[Any, ...]


class Op(NamedTuple):
    """One operator of a built network at batch 1, as latency features see it. Kinds: "conv",
    "linear", "pool", "eltwise", and "matmul" (activation-by-activation work such as attention scores
    or a recurrent state update: c_in x c_out multiply-adds per position, no weights, not in FLOPs)."""

    kind: str
    c_in: int
    c_out: int
    kernel: int = 1
    groups: int = 1
    in_hw: int = 1
    out_hw: int = 1
    extra_params: int = 0  # batch-norm, bias or norm parameters
    positions: int = 1  # sequence positions the operator runs at (language models)

    @property
    def work(self) -> int:
        """Multiply-adds, matmuls included."""
        if self.kind not in ("conv", "linear", "matmul"):
            return 0
        return (
            self.positions
            * self.out_hw
            * self.out_hw
            * self.c_out
            * (self.c_in // self.groups)
            * self.kernel
            * self.kernel
        )

    @property
    def macs(self) -> int:
        return self.work if self.kind in ("conv", "linear") else 0

    @property
    def weights(self) -> int:
        return (
            self.c_out * (self.c_in // self.groups) * self.kernel * self.kernel
            if self.kind in ("conv", "linear")
            else 0
        )


def at_least(space: str, option: str, value: Any, low: int = 1) -> int:
    """A whole-number space option checked: `option >= low`, as a one-line error naming the space."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{space}: `{option} >= {low}` must hold, but got {option}={value!r}")
    return value


def totals(ops: Sequence[Op]) -> tuple[int, int]:
    """(MACs, params) of an operator list."""
    return sum(op.macs for op in ops), sum(op.weights + op.extra_params for op in ops)


class SearchSpace:
    """Base class: a space describes its architectures as a tuple of gene values.

    A subclass provides `genes`, `to_str`, `from_str`, `build`, `input_shape`, and `operators` (or
    `flops_params`), and may override `active` (which genes matter for a given arch) and `canonical`.
    """

    name: str = ""  # the registry name, set by `register`
    spec: str = ""  # the spec string it was made from ("ofa_mbv3:resolutions=[160]"), set by the constructor
    genes: tuple[Gene, ...] = ()

    # ---- strings ---------------------------------------------------------------------------
    def to_str(self, arch: tuple) -> str:
        raise NotImplementedError

    def from_str(self, s: str) -> tuple:
        raise NotImplementedError

    # ---- gene helpers ----------------------------------------------------------------------
    def active(self, arch: tuple) -> list[bool]:
        """Which genes influence the network built from `arch` (all, unless overridden)."""
        return [True] * len(self.genes)

    def canonical(self, arch: tuple) -> tuple:
        """The one representative of `arch` among genes-equivalent tuples."""
        return tuple(arch)

    def validate(self, arch: Sequence) -> tuple:
        if len(arch) != len(self.genes):
            raise ValueError(f"{self.name}: an architecture has {len(self.genes)} genes, but got {len(arch)}")
        for gene, value in zip(self.genes, arch):
            if value not in gene.options:
                raise ValueError(
                    f"{self.name}: gene {gene.name!r} must be one of {list(gene.options)}, but got {value!r}"
                )
        return self.canonical(tuple(arch))

    # ---- sampling and variation ------------------------------------------------------------
    def sample(self, rng: np.random.Generator) -> tuple:
        return self.canonical(tuple(g.options[rng.integers(len(g.options))] for g in self.genes))

    def mutate(self, arch: tuple, rng: np.random.Generator, rate: float | None = None) -> tuple:
        """Re-draw each active gene with probability `rate` (default 1/#active); never returns `arch`."""
        mask = self.active(arch)
        positions = [i for i, m in enumerate(mask) if m and len(self.genes[i].options) > 1]
        rate = 1.0 / len(positions) if rate is None else rate
        while True:
            genes = list(arch)
            chosen = [i for i in positions if rng.random() < rate] or [positions[rng.integers(len(positions))]]
            for i in chosen:
                others = self.neighbours(i, genes[i])
                genes[i] = others[rng.integers(len(others))]
            child = self.canonical(tuple(genes))
            if child != arch:
                return child

    def neighbours(self, gene: int, value: Any) -> list[Any]:
        """The values a mutation may put in place of `value` at gene `gene`: every other option."""
        return [o for o in self.genes[gene].options if o != value]

    def crossover(self, a: tuple, b: tuple, rng: np.random.Generator) -> tuple:
        """Uniform crossover: each gene from either parent."""
        pick = rng.random(len(self.genes)) < 0.5
        return self.canonical(tuple(x if p else y for x, y, p in zip(a, b, pick)))

    def suggest(self, trial: Any) -> tuple:
        """Optuna define-by-run: ask `trial` for every gene that matters. A gene's relevance may
        depend on genes after it (a stage's mixer matters once its repeat count is above 0), so the
        genes are walked until no further gene becomes relevant."""
        genes = [gene.options[0] for gene in self.genes]
        asked: set[int] = set()
        while True:
            mask = self.active(tuple(genes))
            todo = [i for i, on in enumerate(mask) if on and i not in asked]
            if not todo:
                return self.canonical(tuple(genes))
            for i in todo:
                genes[i] = trial.suggest_categorical(self.genes[i].name, list(self.genes[i].options))
                asked.add(i)

    def size(self) -> int:
        return int(np.prod([len(g.options) for g in self.genes], dtype=object))

    def enumerate(self) -> Iterator[tuple]:
        """Every architecture once (only sensible for finite, small spaces)."""
        seen: set[tuple] = set()
        for genes in itertools.product(*(g.options for g in self.genes)):
            arch = self.canonical(genes)
            if arch not in seen:
                seen.add(arch)
                yield arch

    # ---- encodings -------------------------------------------------------------------------
    @property
    def encoding_size(self) -> int:
        return sum(len(g.options) for g in self.genes)

    def encode(self, arch: tuple) -> np.ndarray:
        """One-hot per gene, zeros for genes that do not matter: distinct archs differ."""
        return self.encode_many([arch])[0]

    def encode_many(self, archs: Sequence[tuple]) -> np.ndarray:
        """`encode` of each arch, as rows."""
        index = [{v: i for i, v in enumerate(g.options)} for g in self.genes]
        offsets = np.cumsum([0] + [len(g.options) for g in self.genes])[:-1]
        cols = offsets + np.array([[ix[v] for ix, v in zip(index, a)] for a in archs], dtype=np.int64).reshape(
            len(archs), -1
        )
        on = np.array([self.active(a) for a in archs], dtype=np.float32).reshape(len(archs), -1)
        out = np.zeros((len(archs), self.encoding_size), dtype=np.float32)
        np.put_along_axis(out, cols, on, axis=1)
        return out

    # ---- models ----------------------------------------------------------------------------
    def build(self, arch: tuple, **options: Any) -> nn.Module:
        raise NotImplementedError

    def input_shape(self, arch: tuple) -> tuple[int, int, int, int]:
        raise NotImplementedError

    def resolution(self, arch: tuple) -> int:
        """The input side length `arch` runs at (image spaces: the last dimension of `input_shape`)."""
        return int(self.input_shape(arch)[-1])

    def timm_config(self, arch: tuple, num_classes: int | None = None) -> dict[str, Any] | None:
        """The arguments that rebuild `arch` with timm alone (what an exported model.json carries), or None where
        the space's models are not timm's."""
        return None

    def latency_operators(self, arch: tuple) -> list[Op]:
        """The operators of what `latency_model` times (latency features come from these)."""
        return self.operators(arch)

    def executed_operators(self, arch: tuple) -> tuple[list[Op], int]:
        """What a graph-compiling runtime executes of `latency_model`: the operators whose input is not constant
        and whose result reaches the output, and the depth of that graph (operators on its longest path). A space
        whose networks hold no dead or constant computation keeps this default: every latency operator, in a
        chain. `search_spaces.execution.traced_execution` derives the same from a built model."""
        ops = self.latency_operators(arch)
        return ops, len(ops)

    def reaching_operators(self, arch: tuple) -> list[Op] | None:
        """What a runtime that drops dead computation but folds no constants executes of `latency_model`: every
        operator whose result reaches the output, its input constant or not (a multiplication by zero is known to
        be zero, a convolution of zeros is run). None where that is every latency operator (a space without dead
        computation)."""
        return None

    def gene_graph(self) -> list[tuple[int, int]]:
        """Directed edges between genes (gene i feeds gene j) for graph predictors: a chain unless a
        space knows better (NAS-Bench-201: the cell's data flow between edge operations)."""
        return [(i, i + 1) for i in range(len(self.genes) - 1)]

    def latency_model(self, arch: tuple) -> tuple[nn.Module, tuple[int, ...]]:
        """What a device times for `arch`, and its input shape (the built network, unless a space
        times something else, such as one decoding step)."""
        return self.build(arch), tuple(self.input_shape(arch))

    def example_input(self, arch: tuple) -> torch.Tensor:
        """A random input of `input_shape` the built model accepts."""
        return torch.randn(*self.input_shape(arch))

    def flops(self, arch: tuple) -> int:
        """Multiply-accumulates of one forward pass at batch 1 (what NAS papers call FLOPs)."""
        return self.flops_params(arch)[0]

    def params(self, arch: tuple) -> int:
        return self.flops_params(arch)[1]

    def flops_params(self, arch: tuple) -> tuple[int, int]:
        """Both counts at once, from the operator list (a space without one overrides this)."""
        return totals(self.operators(arch))

    def operators(self, arch: tuple) -> list[Op]:
        """The network's operators with their shapes (FLOPs, params and latency features)."""
        raise NotImplementedError(f"{self.name}: no operator list")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of convolutions and linear layers, counted by running the model."""
    total = 0

    def conv_hook(m: nn.Conv2d, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        kh, kw = m.kernel_size
        total += out.numel() // out.shape[0] * (m.in_channels // m.groups) * kh * kw

    def linear_hook(m: nn.Linear, inp: Any, out: torch.Tensor) -> None:
        nonlocal total
        total += out.numel() // out.shape[0] * m.in_features

    handles = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.Linear):
            handles.append(m.register_forward_hook(linear_hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape[1:]))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return int(total)


@runtime_checkable
class Supernet(Protocol):
    """A weight-sharing network over a space's architectures, what `space.supernet(num_classes)` returns
    and what nas.supernet trains (sandwich rule), evaluates and extracts subnets from. An `nn.Module`."""

    space: SearchSpace
    num_classes: int

    def set_active(self, arch: tuple) -> None:
        """The subnet that `forward` runs from now on."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...

    def extract(self, arch: tuple | None = None) -> nn.Module:
        """The standalone model of `arch` (default: the active one), weights copied; its outputs equal the
        supernet's."""

    def largest(self) -> tuple: ...

    def smallest(self) -> tuple: ...

    def resolution(self, arch: tuple) -> int:
        """The input side length the subnet `arch` is trained and evaluated at."""

    @property
    def resolutions(self) -> tuple[int, ...]:
        """Every input side length of the space."""

    def config(self) -> dict[str, Any]:
        """What a checkpoint records to rebuild it: the space spec and the class count."""
