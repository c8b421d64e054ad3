"""FBNet (v1) space as HW-NAS-Bench and HELP use it: 22 searchable layers, 9 candidate blocks."""

from __future__ import annotations

from functools import cache
from typing import Any

from torch import nn

from search_spaces.base import Gene, Op, SearchSpace, at_least
from search_spaces.registry import register

OPS = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3", "k5_e6", "skip")
STAGE_LAYERS = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS = (16, 24, 32, 64, 112, 184, 352)
STRIDES = {"cifar": (1, 1, 2, 2, 1, 2, 1), "imagenet": (1, 2, 2, 2, 1, 2, 1)}
STEM = 16
HEAD = {"cifar": 1504, "imagenet": 1984}


def parse_op(op: str) -> tuple[int, int, int]:
    """'k5_e1_g2' -> (kernel 5, expansion 1, groups 2)."""
    parts = op.split("_")
    return int(parts[0][1:]), int(parts[1][1:]), int(parts[2][1:]) if len(parts) > 2 else 1


class ChannelShuffle(nn.Module):
    def __init__(self, groups: int) -> None:
        super().__init__()
        self.groups = groups

    def forward(self, x):
        n, c, h, w = x.shape
        return x.reshape(n, self.groups, c // self.groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class ConvBNReLU(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True):
        layers: list[nn.Module] = [
            nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
            nn.BatchNorm2d(c_out),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class FBNetBlock(nn.Module):
    """Inverted bottleneck: grouped 1x1, (shuffle), depthwise kxk, grouped 1x1; residual when shapes match."""

    def __init__(self, op: str, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        kernel, expansion, groups = parse_op(op)
        mid = c_in * expansion
        self.residual = c_in == c_out and stride == 1
        self.body = nn.Sequential(
            ConvBNReLU(c_in, mid, 1, groups=groups),
            *([ChannelShuffle(groups)] if groups > 1 else []),
            ConvBNReLU(mid, mid, kernel, stride, groups=mid),
            ConvBNReLU(mid, c_out, 1, groups=groups, relu=False),
        )

    def forward(self, x):
        y = self.body(x)
        return y + x if self.residual else y


def _layer(op: str, c_in: int, c_out: int, stride: int) -> nn.Module:
    if op == "skip":
        return nn.Identity() if stride == 1 and c_in == c_out else ConvBNReLU(c_in, c_out, 1, stride)
    return FBNetBlock(op, c_in, c_out, stride)


@cache
def block_operators(op: str, c_in: int, c_out: int, stride: int, hw: int) -> tuple[Op, ...]:
    """The operators of one searchable layer (what `_layer` builds) at input size hw."""
    out_hw = (hw + stride - 1) // stride
    if op == "skip":
        return (Op("conv", c_in, c_out, 1, 1, hw, out_hw, 2 * c_out),) if stride != 1 or c_in != c_out else ()
    k, e, g = parse_op(op)
    mid = c_in * e
    return (
        Op("conv", c_in, mid, 1, g, hw, hw, 2 * mid),
        *([Op("eltwise", mid, mid, in_hw=hw, out_hw=hw)] if g > 1 else []),  # channel shuffle
        Op("conv", mid, mid, k, mid, hw, out_hw, 2 * mid),
        Op("conv", mid, c_out, 1, g, out_hw, out_hw, 2 * c_out),
        *([Op("eltwise", c_out, c_out, in_hw=hw, out_hw=hw)] if out_hw == hw and c_in == c_out else []),
    )


@cache
def layer_plan(dataset: str) -> tuple[tuple[int, int, int], ...]:
    """(c_in, c_out, stride) of each of the 22 searchable layers."""
    plan, c_in = [], STEM
    for n, c_out, stride in zip(STAGE_LAYERS, STAGE_CHANNELS, STRIDES[dataset]):
        for i in range(n):
            plan.append((c_in, c_out, stride if i == 0 else 1))
            c_in = c_out
    return tuple(plan)


class FBNetNet(nn.Module):
    def __init__(self, ops: tuple[str, ...], num_classes: int, dataset: str) -> None:
        super().__init__()
        self.stem = ConvBNReLU(3, STEM, 3, 1 if dataset == "cifar" else 2)
        self.layers = nn.Sequential(*(_layer(op, *p) for op, p in zip(ops, layer_plan(dataset))))
        self.head = ConvBNReLU(STAGE_CHANNELS[-1], HEAD[dataset], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(HEAD[dataset], num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.head(self.layers(self.stem(x)))).flatten(1))


@register("fbnet")
class FBNet(SearchSpace):
    """Architectures are 22-tuples of block names; the CIFAR-100 macro structure by default."""

    def __init__(
        self, dataset: str = "cifar", num_classes: int = 100, resolution: int | None = None, spec: str | None = None
    ):
        self.spec = spec or self.name
        if dataset not in STRIDES:
            raise ValueError(f"fbnet: dataset must be one of {sorted(STRIDES)}, but got {dataset!r}")
        self.dataset = dataset
        self.num_classes = at_least("fbnet", "num_classes", num_classes)
        self.resolution = resolution or (32 if dataset == "cifar" else 224)
        self.genes = tuple(Gene(f"layer{i}", OPS) for i in range(sum(STAGE_LAYERS)))

    def to_str(self, arch: tuple) -> str:
        return "-".join(self.validate(arch))

    def from_str(self, s: str) -> tuple:
        ops = tuple(s.strip().split("-"))
        if len(ops) != len(self.genes):
            raise ValueError(f"fbnet: {s!r} must name {len(self.genes)} layers joined by '-', got {len(ops)}")
        for op in ops:
            if op not in OPS:
                raise ValueError(f"fbnet: unknown block {op!r} in {s!r}; known: {', '.join(OPS)}")
        return ops

    def build(self, arch: tuple, num_classes: int | None = None, **_: Any) -> nn.Module:
        return FBNetNet(self.validate(arch), num_classes or self.num_classes, self.dataset)

    def input_shape(self, arch: tuple) -> tuple[int, int, int, int]:
        return (1, 3, self.resolution, self.resolution)

    def operators(self, arch: tuple) -> list[Op]:
        arch = self.validate(arch)
        hw = self.resolution // (1 if self.dataset == "cifar" else 2)
        ops = [Op("conv", 3, STEM, 3, 1, self.resolution, hw, 2 * STEM)]
        for op, (c_in, c_out, stride) in zip(arch, layer_plan(self.dataset)):
            ops.extend(block_operators(op, c_in, c_out, stride, hw))
            hw = (hw + stride - 1) // stride
        head = HEAD[self.dataset]
        ops += [
            Op("conv", STAGE_CHANNELS[-1], head, 1, 1, hw, hw, 2 * head),
            Op("pool", head, head, hw, head, hw, 1),
            Op("linear", head, self.num_classes, extra_params=self.num_classes),
        ]
        return ops
