"""Parameter-matched baselines of a hybrid stack: every mixer made one type at the same width, heads and depth,
the FFN hidden size set so the parameter count is the original's."""

from __future__ import annotations

from typing import Any

import torch

from search_spaces.base import count_params
from search_spaces.hybrid_lm.model import MIXERS, HybridLM


def matched_model(model: Any, mixer: str) -> Any:
    """`model` (a HybridLM) with every mixer made `mixer`, the FFN hidden size chosen to match its parameter count."""
    if mixer not in MIXERS:
        raise ValueError(f"Unknown mixer {mixer!r}; known: {', '.join(MIXERS)}")
    kinds = [k if k == "ffn" else mixer for k in model.kinds]
    ffns, ratio = kinds.count("ffn"), model.ffn_ratio
    if ffns:
        hidden = int(model.dim * ratio)
        # the weights depend on the seed the caller set, not on this trial build
        with torch.random.fork_rng(devices=[]):
            trial = HybridLM(kinds, model.dim, model.heads, ratio, model.window)
        # SwiGLU: 3 x dim x hidden parameters per FFN
        hidden = max(1, round(hidden + (count_params(model) - count_params(trial)) / (3 * model.dim * ffns)))
        ratio = (hidden + 0.5) / model.dim
    return HybridLM(kinds, model.dim, model.heads, ratio, model.window)


def build_key(space: Any, key: str) -> Any:
    """The network of a space string, or of `STRING|MIXER-only`: its blocks' mixers all made MIXER, at the
    same width, heads and depth, with the FFNs' hidden size set so the parameter count is the original's
    (as close as whole units allow; unchanged where there are no FFNs)."""
    text, _, variant = key.partition("|")
    arch = space.from_str(text)
    if not variant:
        return space.build(arch)
    if not variant.endswith("-only"):
        raise ValueError(f"unknown variant {variant!r} of {text!r}; known: MIXER-only")
    with torch.random.fork_rng(devices=[]):  # the weights depend on the seed the caller set, not on this build
        original = space.build(arch)
    return matched_model(original, variant.removesuffix("-only"))
