"""The layers a precision is chosen for (Conv2d and Linear, in forward order), and their ONNX nodes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

QUANTIZABLE = (nn.Conv2d, nn.Linear)
ONNX_OPS = ("Conv", "Gemm", "MatMul")


def trace_layers(model: nn.Module, example: torch.Tensor) -> dict[str, tuple[nn.Module, torch.Size]]:
    """The model's Conv2d / Linear modules in the order the forward pass runs them (first call), with
    their output shapes for one example."""
    seen: dict[str, tuple[nn.Module, torch.Size]] = {}
    names = {m: n for n, m in model.named_modules() if isinstance(m, QUANTIZABLE)}

    def record(mod: nn.Module, _inp: tuple, y: torch.Tensor) -> None:
        seen.setdefault(names[mod], (mod, y.shape))

    hooks = [m.register_forward_hook(record) for m in names]
    try:
        with torch.no_grad():
            model.eval()(example[:1])
    finally:
        for h in hooks:
            h.remove()
    return seen


def quantizable_layers(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the model's Conv2d / Linear modules in the order the forward pass runs them."""
    return list(trace_layers(model, example))


def module_of_node(node_name: str) -> str:
    """`/blocks/blocks.1/blocks.1.0/conv_pw/Conv` -> `blocks.1.0.conv_pw` (the TorchScript exporter's scopes:
    a Sequential's children carry the Sequential's scope name as a prefix)."""
    names: list[str] = []
    prev = ""
    for part in node_name.strip("/").split("/")[:-1]:
        names.append(part[len(prev) + 1 :] if prev and part.startswith(prev + ".") else part)
        prev = part
    return ".".join(names)


def onnx_nodes(proto: Any, layers: list[str]) -> dict[str, str]:
    """Layer name -> ONNX node name; raises if a layer has no node (an exporter that renamed scopes)."""
    found: dict[str, str] = {}
    for node in proto.graph.node:
        if node.op_type in ONNX_OPS:
            found.setdefault(module_of_node(node.name), node.name)
    missing = [name for name in layers if name not in found]
    if missing:
        raise ValueError(
            f"no ONNX node for layer(s) {', '.join(missing[:3])}; the ONNX graph names "
            f"{', '.join(sorted(found)[:5])} ..."
        )
    return {name: found[name] for name in layers}


def blocks(layers: list[str]) -> list[list[str]]:
    """Layers grouped by their parent module (a residual block), in order: the unit of the latency-aware search."""
    groups: dict[str, list[str]] = {}
    for name in layers:
        groups.setdefault(name.rsplit(".", 1)[0] if "." in name else name, []).append(name)
    return list(groups.values())


# (producer, consumer, elements); producer None: the model input, consumer None: its output
Edge = tuple[Any, Any, float]
JOINS = ("Add", "Mul", "Concat")
JOIN = "*"  # a join as a producer: (JOIN, the layers it touches); it runs in int8 when one of them does


def layer_edges(proto: Any, nodes: dict[str, str]) -> list[Edge]:
    """The data flow between quantizable layers through the ONNX graph (activations, pooling, residual
    reshapes in between), with the number of elements each layer reads: where two ends of an edge differ
    in precision, the deployed model quantizes or dequantizes that tensor. A join (residual add, gate,
    concatenation) is a producer of its own, `(JOIN, layers it touches)`: the deployment quantizes it
    when one of those layers is int8 (`neighbour_layers`)."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto)
    sizes: dict[str, float] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output):
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim]
        sizes[vi.name] = float(np.prod(dims)) if dims else 0.0
    layer_of = {node: layer for layer, node in nodes.items()}
    touches = neighbour_layers(proto, nodes)
    producer = {out: n for n in proto.graph.node for out in n.output}
    graph_inputs = {i.name for i in proto.graph.input}

    def sources(tensor: str) -> set[Any]:
        found: set[Any] = set()
        stack, seen = [tensor], set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in graph_inputs:
                found.add(None)
                continue
            node = producer.get(t)
            if node is None:
                continue  # an initializer
            if node.name in layer_of:
                found.add(layer_of[node.name])
            elif node.op_type in JOINS:
                found.add((JOIN, frozenset(touches[node.name])))
            else:
                stack.extend(node.input)
        return found

    edges: list[Edge] = []
    nodes_by_name = {n.name: n for n in proto.graph.node}
    for layer, name in nodes.items():
        x = nodes_by_name[name].input[0]
        edges += [(src, layer, sizes.get(x, 0.0)) for src in sorted(sources(x), key=str)]
    for out in proto.graph.output:
        for src in sorted(s for s in sources(out.name) if isinstance(s, str)):
            edges.append((src, None, sizes.get(nodes_by_name[nodes[src]].output[0], 0.0)))
    return edges


def neighbour_layers(proto: Any, nodes: dict[str, str]) -> dict[str, set[str]]:
    """For every other node of the graph (activations, adds, gates, pooling), the layers it touches:
    reached through chains of single-input nodes, up and down, stopping at layers and at other
    multi-input nodes. onnxruntime quantizes such a node whenever it is not excluded, so a node that
    touches no int8 layer must be excluded for a float island to stay float."""
    layer_of = {node: layer for layer, node in nodes.items()}
    inits = {i.name for i in proto.graph.initializer}
    producer = {out: n for n in proto.graph.node for out in n.output}
    consumers: dict[str, list] = {}
    for n in proto.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    data_inputs = lambda n: [i for i in n.input if i and i not in inits and i in producer]

    def up(tensor: str, found: set[str]) -> None:
        node = producer.get(tensor)
        if node is None:
            return
        if node.name in layer_of:
            found.add(layer_of[node.name])
        elif len(data_inputs(node)) == 1:
            up(data_inputs(node)[0], found)

    def down(tensor: str, found: set[str]) -> None:
        for node in consumers.get(tensor, []):
            if node.name in layer_of:
                found.add(layer_of[node.name])
            elif len(data_inputs(node)) == 1:
                for out in node.output:
                    down(out, found)

    out: dict[str, set[str]] = {}
    for node in proto.graph.node:
        if node.name in layer_of:
            continue
        found: set[str] = set()
        for t in data_inputs(node):
            up(t, found)
        for t in node.output:
            down(t, found)
        out[node.name] = found
    return out
