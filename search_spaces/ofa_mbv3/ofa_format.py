"""Once-for-All's own checkpoints (the state dict of `ofa`'s `OFAMobileNetV3`, as MIT HAN Lab publishes them)
mapped onto this space's supernet, key by key: OFA's kernel transform matrices are applied as `F.linear`
(x @ M.T), ours as x @ T, so they are transposed on the way in."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from search_spaces.ofa_mbv3.blocks import MAX_DEPTH, NUM_STAGES, STAGE_WIDTHS, STEM_WIDTH, make_divisible

WIDTHS = (1.0, 1.2)  # the widths OFA publishes MobileNetV3 supernets for

_OUTER = {
    "first_conv.conv.": "conv_stem.",
    "first_conv.bn.": "bn1.",
    "blocks.0.conv.depth_conv.conv.": "first.conv_dw.",
    "blocks.0.conv.depth_conv.bn.": "first.bn1.",
    "blocks.0.conv.point_linear.conv.": "first.conv_pw.",
    "blocks.0.conv.point_linear.bn.": "first.bn2.",
    "final_expand_layer.conv.": "final.conv.",
    "final_expand_layer.bn.": "final.bn1.",
    "feature_mix_layer.conv.": "conv_head.",
    "classifier.linear.": "classifier.",
}
_IN_BLOCK = {
    "inverted_bottleneck.conv.conv.": "conv_pw.",
    "inverted_bottleneck.bn.bn.": "bn1.",
    "depth_conv.conv.conv.": "conv_dw.",
    "depth_conv.bn.bn.": "bn2.",
    "depth_conv.se.fc.reduce.": "conv_reduce.",
    "depth_conv.se.fc.expand.": "conv_expand.",
    "point_linear.conv.conv.": "conv_pwl.",
    "point_linear.bn.bn.": "bn3.",
}
_TRANSFORMS = {"depth_conv.conv.7to5_matrix": "transforms.5", "depth_conv.conv.5to3_matrix": "transforms.3"}


def _prefixes() -> tuple[dict[str, str], dict[str, str]]:
    """OFA key prefix -> ours, and OFA's transform matrix keys -> ours."""
    prefixes, transforms = dict(_OUTER), {}
    for s in range(NUM_STAGES):
        for j in range(MAX_DEPTH):
            ofa, ours = f"blocks.{1 + s * MAX_DEPTH + j}.conv.", f"stages.{s}.{j}."
            prefixes.update({ofa + k: ours + v for k, v in _IN_BLOCK.items()})
            transforms.update({ofa + k: ours + v for k, v in _TRANSFORMS.items()})
    return prefixes, transforms


PREFIXES, TRANSFORM_KEYS = _prefixes()


def hwnas_key(ofa_key: str) -> str | None:
    """Our supernet's key for one key of an OFA checkpoint (None when it has no place in ours)."""
    if ofa_key in TRANSFORM_KEYS:
        return TRANSFORM_KEYS[ofa_key]
    prefix = next((p for p in PREFIXES if ofa_key.startswith(p)), None)
    return None if prefix is None else PREFIXES[prefix] + ofa_key[len(prefix) :]


def ofa_key(key: str) -> str:
    """The OFA checkpoint key that fills one key of our supernet."""
    for ofa, ours in TRANSFORM_KEYS.items():
        if ours == key:
            return ofa
    prefix = next(p for p, ours in PREFIXES.items() if key.startswith(ours))
    return prefix + key[len(PREFIXES[prefix]) :]


def unwrap(state: Mapping, source: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint as OFA writes it: a state dict, maybe under "state_dict", maybe with the
    "module." prefix of (Distributed)DataParallel."""
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: not a state dict of tensors (nor one under 'state_dict')")
    if all(str(k).startswith("module.") for k in state):
        state = {str(k)[len("module.") :]: v for k, v in state.items()}
    return {str(k): v for k, v in state.items()}


def detect_width(state: Mapping[str, torch.Tensor], source: str) -> float:
    """The width multiplier a checkpoint was built with, from its stem and first stage widths."""
    stem = state.get("first_conv.conv.weight")
    first = state.get("blocks.1.conv.point_linear.conv.conv.weight")
    if stem is None or first is None:
        missing = "first_conv.conv.weight" if stem is None else "blocks.1.conv.point_linear.conv.conv.weight"
        raise ValueError(f"{source}: no {missing!r}: not a checkpoint of ofa's OFAMobileNetV3")
    found = (int(stem.shape[0]), int(first.shape[0]))
    for w in WIDTHS:
        if found == (make_divisible(STEM_WIDTH * w), make_divisible(STAGE_WIDTHS[0] * w)):
            return w
    raise ValueError(
        f"{source}: stem and first stage widths {found} match none of OFA's MobileNetV3 widths "
        f"{', '.join(map(str, WIDTHS))}"
    )


def to_supernet_state(
    state: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor], source: str, width: float
) -> dict[str, torch.Tensor]:
    """`state` (an OFA checkpoint) as a state dict for a supernet whose own state dict is `target`; a key that
    does not map, one that is missing and a shape that differs are each an error naming the key."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        ours = hwnas_key(key)
        if ours is None or ours not in target:
            raise ValueError(
                f"{source}: key {key!r} has no place in hwnas's ofa_mbv3 supernet (kernels 3/5/7, expand ratios "
                "3/4/6, depths 2/3/4: the layout of OFA's ofa_mbv3_d234_e346_k357 supernets)"
            )
        if key in TRANSFORM_KEYS:
            value = value.t()
        if tuple(value.shape) != tuple(target[ours].shape):
            raise ValueError(
                f"{source}: key {key!r} has shape {list(value.shape)}, but the supernet of width {width} and "
                f"{target['classifier.weight'].shape[0]} classes needs {list(target[ours].shape)}"
            )
        out[ours] = value.detach().clone().to(target[ours].dtype).contiguous()
    for key, value in target.items():
        if key not in out:
            if key.endswith("num_batches_tracked"):  # not every checkpoint keeps the counters
                out[key] = value.clone()
                continue
            raise ValueError(f"{source}: no {ofa_key(key)!r}: the checkpoint lacks a tensor the supernet needs")
    return out
