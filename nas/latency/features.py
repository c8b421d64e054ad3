"""Predictor features of architectures: one-hot encoding, per-operation counts, FLOPs and params."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix

from search_spaces.base import Op


def _count_groups(space: Any) -> list[list[int]]:
    """Encoding columns to sum per (gene option set, option): genes sharing options are counted together."""
    offsets = np.cumsum([0] + [len(g.options) for g in space.genes])
    groups: dict[tuple, list[int]] = {}
    for i, gene in enumerate(space.genes):
        groups.setdefault(gene.options, []).append(i)
    cols = []
    for options, genes in groups.items():
        if len(genes) > 1:
            cols.extend([int(offsets[g] + k) for g in genes] for k in range(len(options)))
    return cols


def _encode_as(space: Any, like: Any, arch: tuple) -> np.ndarray:
    """`arch`'s one-hot in the columns of `like` (a variant of the same space: other resolutions,
    classes or widths): genes match by name, and a value `like` does not know sets no column."""
    values = dict(zip((g.name for g in space.genes), arch))
    active = dict(zip((g.name for g in space.genes), space.active(arch)))
    out = []
    for gene in like.genes:
        col = np.zeros(len(gene.options), np.float32)
        v = values.get(gene.name)
        if active.get(gene.name, False) and v in gene.options:
            col[gene.options.index(v)] = 1.0
        out.append(col)
    return np.concatenate(out)


COSTS = (
    "dense_macs",
    "pointwise_macs",
    "grouped_macs",
    "depthwise_macs",
    "matmul_macs",
    "activations",
    "weights",
    "operators",
)


def _op_cost(op: Op) -> list[float]:
    out = [0.0] * (len(COSTS) + 2)
    kind = 0 if op.kind == "conv" and op.kernel > 1 and op.groups == 1 else 4 if op.kind == "matmul" else 1
    if op.kind == "conv" and op.groups > 1:
        kind = 3 if op.groups == op.c_in else 2
    out[kind] = op.work / 1e6
    out[5] = op.positions * (op.in_hw * op.in_hw * op.c_in + op.out_hw * op.out_hw * op.c_out) / 1e6
    out[6] = op.weights / 1e6
    out[7] = 1.0
    out[8:] = op.macs / 1e6, (op.weights + op.extra_params) / 1e6
    return out


def op_costs(op_lists: Sequence[Sequence[Op]]) -> np.ndarray:
    """Per network, roofline-style totals named by COSTS (millions; operators counted), then MFLOPs
    and M params."""
    flat = list(chain.from_iterable(op_lists))
    ids = {op: i for i, op in enumerate(dict.fromkeys(flat))}
    cols = np.fromiter(map(ids.__getitem__, flat), dtype=np.int64, count=len(flat))
    rows = np.repeat(np.arange(len(op_lists)), [len(ops) for ops in op_lists])
    table = np.array([_op_cost(op) for op in ids]).reshape(len(ids), len(COSTS) + 2)
    counts = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(op_lists), len(ids))).tocsr()
    return np.asarray(counts @ table)


# executed operators counted by kind: what a runtime launches, each with its own per-operator overhead
KINDS = ("conv_1x1", "conv_kxk", "grouped", "depthwise", "pool", "eltwise", "linear", "matmul")


def _kind(op: Op) -> int:
    if op.kind == "conv":
        return 3 if op.groups > 1 and op.groups == op.c_in else 2 if op.groups > 1 else 0 if op.kernel == 1 else 1
    return KINDS.index(op.kind) if op.kind in KINDS else KINDS.index("eltwise")


def executed_costs(space: Any, archs: Sequence[tuple]) -> np.ndarray:
    """Per network, the COSTS of what a graph-compiling runtime executes (`SearchSpace.executed_operators`: no
    computation on constants, none whose result cannot reach the output), the depth of that graph, then its
    operators counted by KINDS."""
    runs = [space.executed_operators(a) for a in archs]
    kinds = np.zeros((len(runs), len(KINDS)))
    for i, (ops, _) in enumerate(runs):
        np.add.at(kinds[i], [_kind(op) for op in ops], 1.0)
    return np.column_stack([op_costs([ops for ops, _ in runs])[:, :-2], [depth for _, depth in runs], kinds])


def reaching_costs(space: Any, archs: Sequence[tuple]) -> np.ndarray | None:
    """Per network, the COSTS of what a runtime that drops dead computation but folds no constants executes
    (`SearchSpace.reaching_operators`); None for a space without dead computation."""
    runs = [space.reaching_operators(a) for a in archs]
    return None if any(ops is None for ops in runs) else op_costs(runs)[:, :-2]


def _agnostic_and_costs(space: Any, archs: Sequence[tuple]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    try:
        C = op_costs([space.latency_operators(a) for a in archs])
    except NotImplementedError:
        return np.array([space.flops_params(a) for a in archs], dtype=np.float64) / 1e6, None, None
    return C[:, -2:], C[:, :-2], executed_costs(space, archs)


def features(space: Any, archs: Sequence[tuple], like: Any = None) -> tuple[np.ndarray, dict[str, list[int]]]:
    """(X, layout): X rows are [onehot | counts | MFLOPs, M params | costs | executed | reaching (where the space
    lists its operators: COSTS of every operator, then of the executed ones and the executed graph's depth, then,
    where the space has dead computation, of the operators that reach the output)]. With `like`
    (the space a base predictor was meta-trained on), the encoding takes that space's columns; FLOPs stay
    `space`'s own."""
    enc = space if like is None or like.genes == space.genes else like
    onehot = (
        space.encode_many(archs) if enc is space else np.stack([_encode_as(space, enc, a) for a in archs])
    ).astype(np.float64)
    counts = np.column_stack([onehot[:, c].sum(1) for c in _count_groups(enc)])
    agnostic, costs, executed = _agnostic_and_costs(space, archs)
    a, b = onehot.shape[1], onehot.shape[1] + counts.shape[1]
    layout = {
        "onehot": [0, a],
        "counts": [a, b],
        "agnostic": [b, b + 2],
        "gene_sizes": [len(g.options) for g in enc.genes],  # the graph predictor's nodes and edges
        "gene_edges": [int(v) for edge in enc.gene_graph() for v in edge],
    }
    blocks = [onehot, counts, agnostic]
    if costs is not None:
        layout["costs"] = [b + 2, b + 2 + costs.shape[1]]
        layout["executed"] = [b + 2 + costs.shape[1], b + 2 + 2 * costs.shape[1] + 1 + len(KINDS)]
        blocks += [costs, executed]
        reaching = reaching_costs(space, archs)
        if reaching is not None:
            start = layout["executed"][1]
            layout["reaching"] = [start, start + reaching.shape[1]]
            blocks.append(reaching)
    return np.column_stack(blocks), layout
