"""What a graph-compiling runtime executes of a built model, derived from the model itself (torch.fx).

Runtimes such as LiteRT, ONNX Runtime or OpenVINO fold computation whose input is always zero and drop
computation whose result cannot reach the output. `traced_execution` does the same on a traced model: a value is
constant when it is a multiplication by a literal zero or computed from constants only; an operation executes when
its input is not constant and a live, executing operation (or the output) reads it. Spaces can check their fast
`executed_operators` against it (tests/search_spaces/test_conformance.py), and a new space gets its executed
operators from its builder alone."""

from __future__ import annotations

import operator
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from search_spaces.base import Op

_ADDS = (operator.add, torch.add, "add")
_MULS = (operator.mul, torch.mul, "mul")
# modules a runtime fuses into the operation before them (batch norm into a convolution, activations into it)
_FUSED = (
    nn.BatchNorm2d,
    nn.BatchNorm1d,
    nn.ReLU,
    nn.ReLU6,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.SiLU,
    nn.GELU,
    nn.Identity,
    nn.Dropout,
    nn.Flatten,
)


def _is_zero_mul(node: fx.Node) -> bool:
    return node.target in _MULS and any(isinstance(a, (int, float)) and a == 0 for a in node.args)


def _shape(node: fx.Node) -> tuple[int, ...]:
    meta = node.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else ()


def _hw(shape: tuple[int, ...]) -> int:
    return int(shape[-1]) if len(shape) == 4 else 1


def _op(node: fx.Node, module: nn.Module | None) -> Op | None:
    """The operator a node executes, or None where a runtime fuses it away or it moves no data."""
    out = _shape(node)
    inp = _shape(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else ()
    if isinstance(module, nn.Conv2d):
        extra = module.out_channels if module.bias is not None else 0
        return Op(
            "conv",
            module.in_channels,
            module.out_channels,
            module.kernel_size[0],
            module.groups,
            _hw(inp),
            _hw(out),
            extra,
        )
    if isinstance(module, nn.Linear):
        return Op(
            "linear",
            module.in_features,
            module.out_features,
            extra_params=module.out_features * (module.bias is not None),
        )
    if isinstance(module, (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)):
        c = int(inp[1]) if len(inp) > 1 else 1
        kernel = module.kernel_size if isinstance(getattr(module, "kernel_size", None), int) else _hw(inp)
        return Op("pool", c, c, int(kernel), c, _hw(inp), _hw(out))
    if module is None and node.target in _ADDS:
        c = int(out[1]) if len(out) > 1 else 1
        return Op("eltwise", c, c, in_hw=_hw(out), out_hw=_hw(out))
    return None


class _Tracer(fx.Tracer):
    """Keeps every convolution, linear layer and pool a leaf, subclasses (timm's) included."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        leaf = (nn.Conv2d, nn.Linear, nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d) + _FUSED
        return isinstance(m, leaf) or super().is_leaf_module(m, qualname)


def traced_execution(
    model: nn.Module, example_input: torch.Tensor, fold_constants: bool = True
) -> tuple[list[Op], int]:
    """(executed operators, depth): the convolutions, linear layers, pools and additions a graph compiler keeps of
    `model` run on `example_input`, and the most of them on one input-output path. With `fold_constants` off,
    only what is known to be zero is folded (a multiplication by zero, a sum or pass-through of zeros): an
    operation computed from zeros executes, as on a runtime that only drops dead computation."""
    graph_module = fx.GraphModule(model, _Tracer().trace(model.eval()))
    with torch.no_grad():
        ShapeProp(graph_module).propagate(example_input)
    modules = dict(graph_module.named_modules())
    nodes = list(graph_module.graph.nodes)
    calls = ("call_module", "call_function", "call_method")
    op_of = {n: _op(n, modules.get(n.target) if n.op == "call_module" else None) for n in nodes if n.op in calls}
    constant: dict[fx.Node, bool] = {}
    for node in nodes:
        inputs = [a for a in node.all_input_nodes]
        if node.op == "placeholder":
            constant[node] = False
        elif node.op == "get_attr":
            constant[node] = True
        else:
            derived = bool(inputs) and all(constant[a] for a in inputs)
            if not fold_constants:  # zeros stay zeros through a sum or a module that computes nothing
                derived = derived and (node.target in _ADDS or (node.op == "call_module" and op_of[node] is None))
            constant[node] = _is_zero_mul(node) or derived
    live: set[fx.Node] = set()
    for node in reversed(nodes):
        if node.op == "output" or any(u in live and not constant[u] for u in node.users):
            live.add(node)
    ops: list[Op] = []
    depth: dict[fx.Node, int] = {}
    for node in nodes:
        op = op_of[node] if node in op_of and node in live and not constant[node] else None
        if op is not None and op.kind == "eltwise" and sum(not constant[a] for a in node.all_input_nodes) < 2:
            op = None  # adding a constant zero: folded
        if op is not None:
            ops.append(op)
        before = [depth[a] for a in node.all_input_nodes if a in depth and not constant[a]]
        depth[node] = max(before, default=0) + (op is not None)
    output = next(n for n in nodes if n.op == "output")
    return ops, 0 if constant[output.all_input_nodes[0]] else depth[output]


def traced_executed_operators(space: Any, arch: tuple, fold_constants: bool = True) -> tuple[list[Op], int]:
    """`traced_execution` of what a device times for `arch`."""
    model, shape = space.latency_model(arch)
    return traced_execution(model, torch.randn(*shape), fold_constants)
