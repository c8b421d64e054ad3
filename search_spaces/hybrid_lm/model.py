"""A byte-level hybrid language model: a stack of pre-norm residual blocks, each a token mixer
(attention, sliding-window attention, Mamba2, DeltaNet, gated DeltaNet) or a SwiGLU FFN, with the
256-symbol embedding tied to the output head."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from search_spaces.hybrid_lm.layers import Attention, DeltaNet, Mamba2, RMSNorm, SwiGLU

MIXERS = ("attn", "swa", "mamba2", "deltanet", "gdn")
VOCAB = 256


def make_layer(kind: str, dim: int, heads: int, ffn_ratio: float, window: int) -> nn.Module:
    """One block's body by kind: a mixer name of MIXERS or "ffn"."""
    kv_heads = max(1, heads // 2)
    if kind == "attn":
        return Attention(dim, heads, kv_heads)
    if kind == "swa":
        return Attention(dim, heads, kv_heads, window=window)
    if kind == "mamba2":
        return Mamba2(dim, heads)
    if kind in ("deltanet", "gdn"):
        return DeltaNet(dim, heads, gated=kind == "gdn")
    if kind == "ffn":
        return SwiGLU(dim, ffn_ratio)
    raise ValueError(f"Unknown layer kind {kind!r}; known: {', '.join(MIXERS + ('ffn',))}")


class Block(nn.Module):
    def __init__(self, kind: str, dim: int, heads: int, ffn_ratio: float, window: int) -> None:
        super().__init__()
        self.kind = kind
        self.norm = RMSNorm(dim)
        self.body = make_layer(kind, dim, heads, ffn_ratio, window)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(self.norm(x))

    def step(self, x: torch.Tensor, cache: Any) -> tuple[torch.Tensor, Any]:
        if self.kind == "ffn":
            return self.forward(x), None
        y, cache = self.body.step(self.norm(x), cache)
        return x + y, cache


class HybridLM(nn.Module):
    """Input: byte ids (b, l) (any dtype: cast to int64 and clamped to 0..255, so devices that feed
    random floats can time it); output: next-byte logits (b, l, 256)."""

    def __init__(self, kinds: Sequence[str], dim: int, heads: int, ffn_ratio: float, window: int) -> None:
        super().__init__()
        self.kinds = tuple(kinds)
        self.dim, self.heads, self.ffn_ratio, self.window = dim, heads, ffn_ratio, window
        self.embed = nn.Embedding(VOCAB, dim)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(k, dim, heads, ffn_ratio, window) for k in kinds)
        self.norm = RMSNorm(dim)
        self.head = nn.Linear(dim, VOCAB, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens.long().clamp(0, VOCAB - 1))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))

    def step(self, token: torch.Tensor, caches: list[Any] | None = None) -> tuple[torch.Tensor, list[Any]]:
        """One decoding step: token (b, 1) -> logits (b, 1, 256) and the updated per-block caches."""
        caches = caches or [None] * len(self.blocks)
        x = self.embed(token.long().clamp(0, VOCAB - 1))
        out = []
        for block, cache in zip(self.blocks, caches):
            x, cache = block.step(x, cache)
            out.append(cache)
        return self.head(self.norm(x)), out

    @torch.no_grad()
    def prefill(self, prompt: torch.Tensor) -> tuple[torch.Tensor, list[Any]]:
        """Feed a prompt (b, l) token by token through the caches: last logits and caches."""
        caches: list[Any] | None = None
        for t in range(prompt.shape[1]):
            logits, caches = self.step(prompt[:, t : t + 1], caches)
        return logits, caches or []

    @torch.no_grad()
    def generate(self, prompt: torch.Tensor, n: int) -> torch.Tensor:
        """Greedy decoding of n bytes after `prompt`, one token per step through the caches."""
        logits, caches = self.prefill(prompt)
        out = []
        for _ in range(n):
            token = logits[:, -1:].argmax(-1)
            out.append(token)
            logits, caches = self.step(token, caches)
        return torch.cat(out, 1)


def filled_caches(model: HybridLM, batch: int, context: int, seed: int = 0) -> list[Any]:
    """Per-block caches as they stand after `context` tokens (random contents, deployed sizes):
    a full KV cache, a KV cache of the window, or a convolution window and a recurrent state."""
    g = torch.Generator().manual_seed(seed)
    rand = lambda *shape: torch.randn(*shape, generator=g)
    caches: list[Any] = []
    for block in model.blocks:
        body = block.body
        if block.kind == "ffn":
            caches.append(None)
        elif block.kind in ("attn", "swa"):
            n = context if body.window is None else min(context, body.window)
            caches.append(
                {"k": rand(batch, n, body.kv_heads, body.d), "v": rand(batch, n, body.kv_heads, body.d), "pos": context}
            )
        elif block.kind == "mamba2":
            conv = body.conv.conv.in_channels
            caches.append(
                {"conv": rand(batch, body.conv.kernel - 1, conv), "ssm": rand(batch, body.heads, body.p, body.n)}
            )
        else:
            caches.append(
                {
                    "conv": rand(batch, body.conv.kernel - 1, 3 * body.heads * body.d),
                    "state": rand(batch, body.heads, body.d, body.d) * 0.1,
                }
            )
    return caches


class DecodeStep(nn.Module):
    """One decoding step at a fixed context, as a module of the token alone (the caches are held
    inside), so any device backend can time it: input (b, 1) byte ids, output (b, 1, 256) logits."""

    def __init__(self, model: HybridLM, batch: int, context: int) -> None:
        super().__init__()
        self.model = model
        self.caches = filled_caches(model, batch, context)

    def forward(self, token: torch.Tensor) -> torch.Tensor:
        return self.model.step(token, self.caches)[0]

    def _apply(self, fn: Any, recurse: bool = True) -> DecodeStep:
        """`.to(device / dtype)` moves the caches with the weights (they are plain tensors, not buffers)."""
        super()._apply(fn, recurse)
        self.caches = [
            None if c is None else {k: fn(v) if torch.is_tensor(v) else v for k, v in c.items()} for c in self.caches
        ]
        return self
