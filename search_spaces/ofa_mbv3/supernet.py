"""The Once-for-All MobileNetV3 supernet: elastic kernel (7 -> 5 -> 3 through learned transforms),
elastic expand ratio (the first channels, sorted by importance), elastic depth (the first d blocks)
and any input resolution. `extract(arch)` returns the space's own timm MobileNetV3 with the
subnet's weights, whose outputs equal the supernet's."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.base import SearchSpace
from search_spaces.ofa_mbv3.blocks import (
    DEPTHS,
    EXPANDS,
    KERNELS,
    MAX_DEPTH,
    NUM_STAGES,
    STAGE_RELU,
    STAGE_SE,
    STAGE_STRIDES,
    STAGE_WIDTHS,
    make_divisible,
)

MAX_KERNEL = max(KERNELS)
MAX_EXPAND = max(EXPANDS)


def _bn(x: torch.Tensor, bn: nn.BatchNorm2d, n: int) -> torch.Tensor:
    """BatchNorm over the first n channels of `bn` (running statistics update in place)."""
    momentum = 0.0
    if bn.training:
        bn.num_batches_tracked += 1
        momentum = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
    return F.batch_norm(
        x, bn.running_mean[:n], bn.running_var[:n], bn.weight[:n], bn.bias[:n], bn.training, momentum, bn.eps
    )


def _bn_state(bn: nn.BatchNorm2d, n: int, prefix: str) -> dict[str, torch.Tensor]:
    return {
        f"{prefix}.weight": bn.weight[:n],
        f"{prefix}.bias": bn.bias[:n],
        f"{prefix}.running_mean": bn.running_mean[:n],
        f"{prefix}.running_var": bn.running_var[:n],
        f"{prefix}.num_batches_tracked": bn.num_batches_tracked,
    }


class ElasticBlock(nn.Module):
    """An inverted residual whose kernel size and expand ratio are chosen per forward pass."""

    def __init__(self, c_in: int, c_out: int, stride: int, relu: bool, se: bool) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride, self.relu, self.use_se = c_in, c_out, stride, relu, se
        mid = make_divisible(c_in * MAX_EXPAND)
        self.conv_pw = nn.Conv2d(c_in, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, MAX_KERNEL, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        # kernel transforms: 7x7 centre -> 5x5, 5x5 centre -> 3x3 (identity at start, as in OFA)
        self.transforms = nn.ParameterDict({str(k): nn.Parameter(torch.eye(k * k)) for k in KERNELS if k < MAX_KERNEL})
        if se:
            rd = make_divisible(mid * 0.25)
            self.conv_reduce = nn.Conv2d(mid, rd, 1)
            self.conv_expand = nn.Conv2d(rd, mid, 1)
        self.conv_pwl = nn.Conv2d(mid, c_out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(c_out)

    def mid(self, expand: int) -> int:
        return make_divisible(self.c_in * expand)

    def dw_weight(self, kernel: int, mid: int) -> torch.Tensor:
        w = self.conv_dw.weight[:mid]
        size = MAX_KERNEL
        for k in sorted((k for k in KERNELS if k < MAX_KERNEL), reverse=True):
            if k < kernel:
                break
            start = (size - k) // 2
            w = w[:, :, start : start + k, start : start + k].reshape(mid, k * k) @ self.transforms[str(k)]
            w = w.reshape(mid, 1, k, k)
            size = k
        return w

    def act(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x) if self.relu else F.hardswish(x)

    def forward(self, x: torch.Tensor, kernel: int, expand: int) -> torch.Tensor:
        mid = self.mid(expand)
        y = self.act(_bn(F.conv2d(x, self.conv_pw.weight[:mid]), self.bn1, mid))
        y = F.conv2d(y, self.dw_weight(kernel, mid), stride=self.stride, padding=kernel // 2, groups=mid)
        y = self.act(_bn(y, self.bn2, mid))
        if self.use_se:
            rd = make_divisible(mid * 0.25)
            s = y.mean((2, 3), keepdim=True)
            s = F.relu(F.conv2d(s, self.conv_reduce.weight[:rd, :mid], self.conv_reduce.bias[:rd]))
            s = F.conv2d(s, self.conv_expand.weight[:mid, :rd], self.conv_expand.bias[:mid])
            y = y * F.hardsigmoid(s)
        y = _bn(F.conv2d(y, self.conv_pwl.weight[:, :mid]), self.bn3, self.c_out)
        return y + x if self.stride == 1 and self.c_in == self.c_out else y

    def state(self, kernel: int, expand: int, prefix: str) -> dict[str, torch.Tensor]:
        """The weights of timm's InvertedResidual for this kernel and expand ratio."""
        mid = self.mid(expand)
        out = {
            f"{prefix}.conv_pw.weight": self.conv_pw.weight[:mid],
            f"{prefix}.conv_dw.weight": self.dw_weight(kernel, mid),
            f"{prefix}.conv_pwl.weight": self.conv_pwl.weight[:, :mid],
        }
        out.update(_bn_state(self.bn1, mid, f"{prefix}.bn1"))
        out.update(_bn_state(self.bn2, mid, f"{prefix}.bn2"))
        out.update(_bn_state(self.bn3, self.c_out, f"{prefix}.bn3"))
        if self.use_se:
            rd = make_divisible(mid * 0.25)
            out.update(
                {
                    f"{prefix}.se.conv_reduce.weight": self.conv_reduce.weight[:rd, :mid],
                    f"{prefix}.se.conv_reduce.bias": self.conv_reduce.bias[:rd],
                    f"{prefix}.se.conv_expand.weight": self.conv_expand.weight[:mid, :rd],
                    f"{prefix}.se.conv_expand.bias": self.conv_expand.bias[:mid],
                }
            )
        return out

    @torch.no_grad()
    def sort_channels(self) -> None:
        """Reorder the middle channels (and SE channels) by importance, most important first."""
        order = self.conv_pwl.weight.abs().sum((0, 2, 3)).argsort(descending=True)
        self.conv_pw.weight.copy_(self.conv_pw.weight[order])
        self.conv_dw.weight.copy_(self.conv_dw.weight[order])
        self.conv_pwl.weight.copy_(self.conv_pwl.weight[:, order])
        for bn in (self.bn1, self.bn2):
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[order])
        if self.use_se:
            self.conv_reduce.weight.copy_(self.conv_reduce.weight[:, order])
            self.conv_expand.weight.copy_(self.conv_expand.weight[order])
            self.conv_expand.bias.copy_(self.conv_expand.bias[order])
            rd_order = self.conv_expand.weight.abs().sum((0, 2, 3)).argsort(descending=True)
            self.conv_reduce.weight.copy_(self.conv_reduce.weight[rd_order])
            self.conv_reduce.bias.copy_(self.conv_reduce.bias[rd_order])
            self.conv_expand.weight.copy_(self.conv_expand.weight[:, rd_order])


class OFASupernet(nn.Module):
    """Weight-sharing supernet of an `ofa_mbv3` space; `set_active(arch)` picks the subnet that runs."""

    def __init__(self, space: SearchSpace, num_classes: int | None = None) -> None:
        super().__init__()
        self.space = space
        self.num_classes = num_classes or space.num_classes
        big = space.build(self.largest(), num_classes=self.num_classes)
        self.conv_stem, self.bn1, self.first = big.conv_stem, big.bn1, big.blocks[0][0]
        self.final, self.conv_head, self.act2, self.classifier = (
            big.blocks[-1][0],
            big.conv_head,
            big.act2,
            big.classifier,
        )
        stages, c = [], make_divisible(16 * space.width_mult)
        for s in range(NUM_STAGES):
            c_out = make_divisible(STAGE_WIDTHS[s] * space.width_mult)
            blocks = []
            for j in range(MAX_DEPTH):
                blocks.append(ElasticBlock(c, c_out, STAGE_STRIDES[s] if j == 0 else 1, STAGE_RELU[s], STAGE_SE[s]))
                c = c_out
            stages.append(nn.ModuleList(blocks))
        self.stages = nn.ModuleList(stages)
        self.active: tuple = self.largest()

    def set_active(self, arch: tuple) -> None:
        self.active = self.space.validate(arch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sp, arch = self.space, self.active
        ks, es = sp.kernels(arch), sp.expands(arch)
        x = self.first(self.bn1(self.conv_stem(x)))
        for s, depth in enumerate(sp.depths(arch)):
            for j in range(depth):
                i = s * MAX_DEPTH + j
                x = self.stages[s][j](x, ks[i], es[i])
        x = self.final(x).mean((2, 3), keepdim=True)
        return self.classifier(self.act2(self.conv_head(x)).flatten(1))

    def subnet_state(self, arch: tuple) -> dict[str, torch.Tensor]:
        """A state dict for the space's timm model of `arch`."""
        sp = self.space
        arch = sp.validate(arch)
        ks, es = sp.kernels(arch), sp.expands(arch)
        state: dict[str, torch.Tensor] = {}
        for name, module in (
            ("conv_stem", self.conv_stem),
            ("bn1", self.bn1),
            ("blocks.0.0", self.first),
            ("conv_head", self.conv_head),
            ("classifier", self.classifier),
        ):
            state.update({f"{name}.{k}": v for k, v in module.state_dict().items()})
        for s, depth in enumerate(sp.depths(arch)):
            for j in range(depth):
                i = s * MAX_DEPTH + j
                state.update(self.stages[s][j].state(ks[i], es[i], f"blocks.{s + 1}.{j}"))
        state.update({f"blocks.{NUM_STAGES + 1}.0.{k}": v for k, v in self.final.state_dict().items()})
        return state

    @torch.no_grad()
    def extract(self, arch: tuple | None = None) -> nn.Module:
        """The standalone timm MobileNetV3 of `arch` (default: the active one), weights copied."""
        arch = self.active if arch is None else arch
        model = self.space.build(arch, num_classes=self.num_classes)
        model.load_state_dict({k: v.detach().clone() for k, v in self.subnet_state(arch).items()}, strict=True)
        return model.train(self.training)

    def sort_channels(self) -> None:
        for stage in self.stages:
            for block in stage:
                block.sort_channels()

    def smallest(self) -> tuple:
        sp = self.space
        return sp.make([min(KERNELS)] * 20, [min(EXPANDS)] * 20, [min(DEPTHS)] * NUM_STAGES, min(sp.resolutions))

    def largest(self) -> tuple:
        sp = self.space
        return sp.make([MAX_KERNEL] * 20, [MAX_EXPAND] * 20, [MAX_DEPTH] * NUM_STAGES, max(sp.resolutions))

    def config(self) -> dict[str, Any]:
        return {"space": self.space.spec, "num_classes": self.num_classes}

    def resolution(self, arch: tuple) -> int:
        return self.space.resolution(arch)

    @property
    def resolutions(self) -> tuple[int, ...]:
        return tuple(self.space.resolutions)
