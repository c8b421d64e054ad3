"""What a graph compiler executes: each space's fast `executed_operators` agrees with the operators that
`traced_execution` keeps of the model the space builds (constants folded, dead computation dropped)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import search_spaces
from search_spaces.execution import traced_executed_operators, traced_execution
from search_spaces.nasbench201 import live_edges

IMAGE_SPACES = {"nasbench201": {}, "fbnet": {}, "ofa_mbv3": {"resolutions": [128]}}


def _signature(ops) -> list[tuple]:
    return sorted((op.kind, op.c_in, op.c_out, op.kernel, op.groups, op.in_hw, op.out_hw) for op in ops)


def test_nasbench201_executed_operators_are_what_the_traced_model_keeps():
    space = search_spaces.create("nasbench201")
    rng = np.random.default_rng(0)
    archs = [space.sample(rng) for _ in range(25)] + [
        space.from_str("|nor_conv_3x3~0|+|none~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|nor_conv_3x3~2|"),
        space.from_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|"),  # no path to the output
        space.from_str("|none~0|+|nor_conv_3x3~0|nor_conv_1x1~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|"),
    ]
    for arch in archs:
        ops, depth = space.executed_operators(arch)
        traced, traced_depth = traced_executed_operators(space, arch)
        assert _signature(ops) == _signature(traced) and depth == traced_depth, space.to_str(arch)


def test_nasbench201_reaching_operators_are_what_the_traced_model_keeps_without_folding():
    """A runtime that drops dead computation but folds no constants runs a convolution of zeros whose result
    reaches the output, and nothing that does not reach it."""
    space = search_spaces.create("nasbench201")
    rng = np.random.default_rng(2)
    archs = [space.sample(rng) for _ in range(25)] + [
        space.from_str(s)
        for s in (
            "|none~0|+|none~0|nor_conv_3x3~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|",  # convolutions of zeros
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|none~1|none~2|",  # nothing reads them
            "|none~0|+|skip_connect~0|skip_connect~1|+|avg_pool_3x3~0|nor_conv_1x1~1|skip_connect~2|",
            "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|skip_connect~1|none~2|",
            "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|",
        )
    ]
    for arch in archs:
        traced, _ = traced_executed_operators(space, arch, fold_constants=False)
        assert _signature(space.reaching_operators(arch)) == _signature(traced), space.to_str(arch)
    zeros_in = space.reaching_operators(archs[-5])
    # the cell reads no input: only the last cell's three convolutions of zeros and the head run
    assert [op.kind for op in zeros_in] == ["conv"] * 3 + ["eltwise", "pool", "linear"]
    assert space.executed_operators(archs[-5]) == ([], 0)
    fed = space.reaching_operators(archs[-2])  # each cell's 1x1 convolution feeds the output through a skip
    assert sum(op.kind == "conv" and op.kernel == 1 and op.c_in == op.c_out for op in fed) == 15


def test_a_cell_without_an_input_output_path_executes_nothing():
    space = search_spaces.create("nasbench201")
    arch = space.from_str("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|none~0|none~1|none~2|")
    assert not any(live_edges(arch))
    assert space.executed_operators(arch) == ([], 0)
    assert traced_executed_operators(space, arch) == ([], 0)
    # an edge fed only by `none` computes on zeros: folded; one whose result nothing reads: dropped
    dead_in = space.from_str("|none~0|+|skip_connect~0|nor_conv_3x3~1|+|nor_conv_1x1~0|none~1|skip_connect~2|")
    ops, _ = space.executed_operators(dead_in)
    assert not any(
        op.kind == "conv" and op.kernel == 3 and (op.c_in, op.c_out, op.out_hw) == (16, 16, 32) for op in ops
    )


@pytest.mark.parametrize("name", ["fbnet", "ofa_mbv3"])
def test_executed_multiply_adds_match_the_traced_model(name):
    """Chain spaces hold no dead computation: their executed operators are their latency operators, whose
    multiply-adds the traced model confirms."""
    space = search_spaces.create(name, **IMAGE_SPACES[name])
    rng = np.random.default_rng(1)
    for _ in range(3):
        arch = space.sample(rng)
        ops, depth = space.executed_operators(arch)
        traced, traced_depth = traced_executed_operators(space, arch)
        assert sum(op.macs for op in ops) == sum(op.macs for op in traced)
        assert 0 < traced_depth <= depth


def test_tracing_folds_constants_and_drops_dead_branches():
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.dead, self.zeroed = nn.Conv2d(4, 4, 3, padding=1), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 1)

        def forward(self, x):
            self.dead(x)  # nothing reads it
            return self.used(x) + self.zeroed(x.mul(0.0))  # a convolution of zeros: a constant, added as one

    ops, depth = traced_execution(Net(), torch.randn(1, 4, 8, 8))
    assert [(op.kind, op.kernel) for op in ops] == [("conv", 3)] and depth == 1
