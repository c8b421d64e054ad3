"""NAS-Bench-201: a cell of 4 nodes, 6 edges, 5 operations; 15,625 architectures."""

from __future__ import annotations

from functools import cache
from typing import Any

from torch import nn

from search_spaces.base import Gene, Op, SearchSpace, at_least
from search_spaces.registry import register

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge i -> (target node, source node), in the order of the canonical string.
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))


class ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(c_out),
        )


class Zero(nn.Module):
    def forward(self, x):
        return x.mul(0.0)


def _op(name: str, c: int) -> nn.Module:
    if name == "none":
        return Zero()
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return ReLUConvBN(c, c, 1, 1)
    if name == "nor_conv_3x3":
        return ReLUConvBN(c, c, 3, 1)
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


@cache
def edge_operators(name: str, c: int, hw: int) -> tuple[Op, ...]:
    """The operators of one cell edge (what `_op` builds)."""
    if name.startswith("nor_conv"):
        return (Op("conv", c, c, 1 if name == "nor_conv_1x1" else 3, 1, hw, hw, 2 * c),)
    if name == "avg_pool_3x3":
        return (Op("pool", c, c, 3, c, hw, hw),)
    return (Op("eltwise", c, c, in_hw=hw, out_hw=hw),) if name == "none" else ()


def _reduction(ch: int, hw: int) -> list[Op]:
    """The operators of `ResidualReduction` into `ch` channels at side `hw` (its addition apart)."""
    c_in = ch // 2
    return [
        Op("conv", c_in, ch, 3, 1, 2 * hw, hw, 2 * ch),
        Op("conv", ch, ch, 3, 1, hw, hw, 2 * ch),
        Op("pool", c_in, c_in, 2, c_in, 2 * hw, hw),
        Op("conv", c_in, ch, 1, 1, hw, hw),
    ]


def live_edges(arch: tuple[str, ...]) -> tuple[bool, ...]:
    """Edges a graph compiler keeps: a non-`none` edge whose source the input reaches and whose target reaches the
    output, both through non-`none` edges (the others compute a constant zero or a value nothing reads). A cell
    without an input-output path keeps none: its output, and so the whole network's, is constant."""
    reach = {0}
    for target in (1, 2, 3):
        if any(arch[i] != "none" and s in reach for i, (t, s) in enumerate(EDGES) if t == target):
            reach.add(target)
    out = _output_nodes(arch)
    if 3 not in reach:
        return (False,) * len(EDGES)
    return tuple(op != "none" and s in reach and t in out for op, (t, s) in zip(arch, EDGES))


def _output_nodes(arch: tuple[str, ...]) -> set[int]:
    """The nodes that reach the cell's output through non-`none` edges (the output among them)."""
    out = {3}
    for source in (2, 1, 0):
        if any(arch[i] != "none" and t in out for i, (t, s) in enumerate(EDGES) if s == source):
            out.add(source)
    return out


def reaching_edges(arch: tuple[str, ...]) -> tuple[tuple[bool, ...], bool]:
    """Edges a runtime that folds no constants keeps (a non-`none` edge whose target reaches the output through
    non-`none` edges, fed by the input or not), and whether the cell reads its input at all."""
    out = _output_nodes(arch)
    return tuple(op != "none" and t in out for op, (t, s) in zip(arch, EDGES)), 0 in out


def _zero_nodes(arch: tuple[str, ...]) -> set[int]:
    """Nodes known to be zero without folding: every input edge is `none`, or a skip from a zero node."""
    zero: set[int] = set()
    for target in (1, 2, 3):
        inputs = [(arch[i], s) for i, (t, s) in enumerate(EDGES) if t == target]
        if all(op == "none" or (op == "skip_connect" and s in zero) for op, s in inputs):
            zero.add(target)
    return zero


def _cell_reaching(arch: tuple[str, ...], c: int, hw: int) -> list[Op]:
    """The operators of one cell that reach its output (`reaching_edges`), and the additions of their results that
    are not known to be zero."""
    keep, _ = reaching_edges(arch)
    zero = _zero_nodes(arch)
    ops = [op for name, k in zip(arch, keep) if k for op in edge_operators(name, c, hw)]
    for target in (1, 2, 3):
        inputs = [
            i
            for i, (t, s) in enumerate(EDGES)
            if t == target and keep[i] and not (arch[i] == "skip_connect" and s in zero)
        ]
        ops += [Op("eltwise", c, c, in_hw=hw, out_hw=hw)] * max(0, len(inputs) - 1)
    return ops


def _cell_execution(arch: tuple[str, ...], c: int, hw: int) -> tuple[list[Op], int]:
    """The live operators of one cell (edge operations, then a node's additions, chained in edge order as `Cell`
    sums them) and its depth."""
    live = live_edges(arch)
    ops = [op for name, keep in zip(arch, live) if keep for op in edge_operators(name, c, hw)]
    depth = {0: 0}
    for target in (1, 2, 3):
        inputs = [i for i, (t, s) in enumerate(EDGES) if t == target and live[i]]
        ops += [Op("eltwise", c, c, in_hw=hw, out_hw=hw)] * max(0, len(inputs) - 1)
        for k, i in enumerate(inputs):
            d = depth[EDGES[i][1]] + (arch[i] != "skip_connect")
            depth[target] = d if k == 0 else max(depth[target], d) + 1
    return ops, depth.get(3, 0)


class Cell(nn.Module):
    def __init__(self, ops: tuple[str, ...], c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(_op(op, c) for op in ops)

    def forward(self, x):
        nodes = [x]
        for target in (1, 2, 3):
            nodes.append(sum(self.edges[i](nodes[src]) for i, (t, src) in enumerate(EDGES) if t == target))
        return nodes[3]


class ResidualReduction(nn.Module):
    """NAS-Bench-201's reduction block: a stride-2 ResNet basic block."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(c_in, c_out, 3, 2)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, stride=2, padding=0), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x):
        return self.downsample(x) + self.conv_b(self.conv_a(x))


class NASBench201Net(nn.Module):
    def __init__(self, ops: tuple[str, ...], channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage > 0:
                layers.append(ResidualReduction(c, c * 2))
                c *= 2
            layers.extend(Cell(ops, c) for _ in range(cells_per_stage))
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.cells = nn.Sequential(*layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(inplace=False))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        x = self.lastact(self.cells(self.stem(x)))
        return self.classifier(self.pool(x).flatten(1))


@register("nasbench201")
class NASBench201(SearchSpace):
    """Architectures are 6-tuples of op names, one per edge in string order."""

    def __init__(
        self,
        channels: int = 16,
        cells_per_stage: int = 5,
        num_classes: int = 10,
        resolution: int = 32,
        spec: str | None = None,
    ):
        self.spec = spec or self.name
        self.channels = channels
        self.cells_per_stage = cells_per_stage
        self.num_classes = at_least("nasbench201", "num_classes", num_classes)
        self.resolution = resolution
        self.genes = tuple(Gene(f"edge{t}{s}", OPS) for t, s in EDGES)

    def to_str(self, arch: tuple) -> str:
        arch = self.validate(arch)
        nodes = []
        for target in (1, 2, 3):
            nodes.append("|".join(f"{arch[i]}~{s}" for i, (t, s) in enumerate(EDGES) if t == target))
        return "|" + "|+|".join(nodes) + "|"

    def from_str(self, s: str) -> tuple:
        text = s.strip()
        if not (text.startswith("|") and text.endswith("|")):
            raise ValueError(f"nasbench201: {s!r} is not of the form |op~0|+|op~0|op~1|+|op~0|op~1|op~2|")
        nodes = text[1:-1].split("|+|")
        if len(nodes) != 3:
            raise ValueError(f"nasbench201: {s!r} must have 3 nodes separated by '+', got {len(nodes)}")
        ops: list[str] = []
        for target, node in enumerate(nodes, start=1):
            edges = node.split("|")
            if len(edges) != target:
                raise ValueError(f"nasbench201: node {target} of {s!r} must have {target} inputs, got {len(edges)}")
            for source, edge in enumerate(edges):
                op, _, src = edge.partition("~")
                if src != str(source):
                    raise ValueError(f"nasbench201: edge {edge!r} of {s!r} must come from node {source}")
                if op not in OPS:
                    raise ValueError(f"nasbench201: unknown op {op!r} in {s!r}; known: {', '.join(OPS)}")
                ops.append(op)
        return tuple(ops)

    def build(self, arch: tuple, num_classes: int | None = None, **_: Any) -> nn.Module:
        arch = self.validate(arch)
        return NASBench201Net(arch, self.channels, self.cells_per_stage, num_classes or self.num_classes)

    def input_shape(self, arch: tuple) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    def _stages(self) -> list[tuple[int, int]]:
        """(channels, spatial size) of each stage."""
        return [(self.channels * 2**i, self.resolution // 2**i) for i in range(3)]

    def gene_graph(self) -> list[tuple[int, int]]:
        """Edge operation i feeds edge operation j when i ends at the node where j starts."""
        return [(i, j) for i, (t, _) in enumerate(EDGES) for j, (_, s) in enumerate(EDGES) if t == s]

    def executed_operators(self, arch: tuple) -> tuple[list[Op], int]:
        """Only live edges execute (`live_edges`), and their nodes' additions (batch norm and activations fused); a
        network whose cells have no input-output path computes a constant and executes nothing."""
        arch = self.validate(arch)
        if not any(live_edges(arch)):
            return [], 0
        ops, depth = [self._stem()], 1
        for i, (ch, hw) in enumerate(self._stages()):
            if i > 0:  # the residual reduction and its addition
                ops += [*_reduction(ch, hw), Op("eltwise", ch, ch, in_hw=hw, out_hw=hw)]
                depth += 3
            cell, d = _cell_execution(arch, ch, hw)
            ops += cell * self.cells_per_stage
            depth += d * self.cells_per_stage
        return ops + self._head()[1:], depth + 2  # batch norm and activation before the pool fused

    def reaching_operators(self, arch: tuple) -> list[Op]:
        """Edges whose result reaches the output execute, zeros or not (`reaching_edges`); a cell that does not read
        its input leaves everything before the last cell unread, so only that cell and the head execute."""
        arch = self.validate(arch)
        _, reads = reaching_edges(arch)
        stages = self._stages()
        if not reads:
            return _cell_reaching(arch, *stages[-1]) + self._head()[1:]
        ops = [self._stem()]
        for i, (ch, hw) in enumerate(stages):
            if i > 0:
                ops += [*_reduction(ch, hw), Op("eltwise", ch, ch, in_hw=hw, out_hw=hw)]
            ops += _cell_reaching(arch, ch, hw) * self.cells_per_stage
        return ops + self._head()[1:]

    def operators(self, arch: tuple) -> list[Op]:
        arch = self.validate(arch)
        ops = [self._stem()]
        for i, (ch, hw) in enumerate(self._stages()):
            if i > 0:
                ops += _reduction(ch, hw)
            cell = [op for name in arch for op in edge_operators(name, ch, hw)]
            ops += cell * self.cells_per_stage
        return ops + self._head()

    def _stem(self) -> Op:
        r, c = self.resolution, self.channels
        return Op("conv", 3, c, 3, 1, r, r, 2 * c)

    def _head(self) -> list[Op]:
        """The last batch norm and activation, the global pool, the classifier."""
        last, hw = self._stages()[-1]
        return [
            Op("eltwise", last, last, in_hw=hw, out_hw=hw, extra_params=2 * last),
            Op("pool", last, last, hw, last, hw, 1),
            Op("linear", last, self.num_classes, extra_params=self.num_classes),
        ]
