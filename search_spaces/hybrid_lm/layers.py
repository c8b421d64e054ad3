"""Hybrid LM layers: each mixer runs a whole sequence (chunked, exportable) or one token with a cache
(`step`), which is how it is deployed for decoding. Caches: a KV cache (attention), a windowed KV
cache (sliding-window attention), and a convolution window plus a recurrent state (Mamba2, DeltaNet)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.hybrid_lm.ops import (
    attend_one,
    causal_attention,
    delta_rule_chunked,
    delta_step,
    ssd_chunked,
    ssd_step,
)


def _pad_to(x: torch.Tensor, chunk: int) -> tuple[torch.Tensor, int]:
    l = x.shape[1]
    pad = (-l) % chunk
    return (F.pad(x, (0, 0) * (x.dim() - 2) + (0, pad)) if pad else x), l


def rope(x: torch.Tensor, start: int = 0, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding over the last dimension of x (b, l, h, d), positions start.. ."""
    d = x.shape[-1]
    inv = 1.0 / base ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    pos = torch.arange(start, start + x.shape[1], device=x.device, dtype=torch.float32)
    ang = pos[:, None] * inv[None, :]
    cos, sin = ang.cos()[None, :, None, :], ang.sin()[None, :, None, :]
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x1 * sin + x2 * cos], -1).flatten(-2)


class RMSNorm(nn.Module):
    """RMS normalisation from plain operators (the TorchScript ONNX exporter has no aten::rms_norm)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class SwiGLU(nn.Module):
    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(dim * ratio)
        self.up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.up(x).chunk(2, -1)
        return self.down(F.silu(a) * b)


class Attention(nn.Module):
    """Grouped-query causal attention with rotary positions; `window` makes it sliding-window."""

    def __init__(self, dim: int, heads: int, kv_heads: int, window: int | None = None) -> None:
        super().__init__()
        if dim % heads or heads % kv_heads:
            raise ValueError(
                f"`dim % heads == 0 and heads % kv_heads == 0` must hold, but got dim={dim}, heads={heads}, "
                f"kv_heads={kv_heads}"
            )
        self.heads, self.kv_heads, self.window, self.d = heads, kv_heads, window, dim // heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(dim, 2 * kv_heads * self.d, bias=False)
        self.o = nn.Linear(dim, dim, bias=False)

    def _qkv(self, x: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l, _ = x.shape
        q = self.q(x).view(b, l, self.heads, self.d)
        k, v = self.kv(x).view(b, l, 2, self.kv_heads, self.d).unbind(2)
        return rope(q, start), rope(k, start), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self._qkv(x, 0)
        return self.o(causal_attention(q, k, v, self.window).flatten(2))

    def step(self, x: torch.Tensor, cache: dict[str, Any] | None) -> tuple[torch.Tensor, dict[str, Any]]:
        pos = 0 if cache is None else cache["pos"]
        q, k, v = self._qkv(x, pos)
        if cache is not None:
            k, v = torch.cat([cache["k"], k], 1), torch.cat([cache["v"], v], 1)
        if self.window is not None:
            k, v = k[:, -self.window :], v[:, -self.window :]
        out = attend_one(q[:, 0], k, v).reshape(x.shape[0], 1, -1)
        return self.o(out), {"k": k, "v": v, "pos": pos + 1}


class _ShortConv(nn.Module):
    """Causal depthwise convolution over time, with a window cache for decoding."""

    def __init__(self, channels: int, kernel: int = 4) -> None:
        super().__init__()
        self.kernel = kernel
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, padding=kernel - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.silu(self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2))

    def step(self, x: torch.Tensor, window: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if window is None:
            window = x.new_zeros(x.shape[0], self.kernel - 1, x.shape[2])
        full = torch.cat([window, x], 1)  # (b, kernel, c)
        y = (full * self.conv.weight[:, 0].T).sum(1) + self.conv.bias
        return F.silu(y)[:, None], full[:, 1:]


class Mamba2(nn.Module):
    """Mamba2 mixer: input projection, short convolution, SSD with per-head scalar decay, gated output."""

    def __init__(self, dim: int, heads: int, state: int = 16, expand: int = 2, chunk: int = 16) -> None:
        super().__init__()
        inner = expand * dim
        if inner % heads:
            raise ValueError(
                f"`expand * dim % heads == 0` must hold, but got expand={expand}, dim={dim}, heads={heads}"
            )
        self.heads, self.p, self.n, self.inner, self.chunk = heads, inner // heads, state, inner, chunk
        self.in_proj = nn.Linear(dim, 2 * inner + 2 * state + heads, bias=False)
        self.conv = _ShortConv(inner + 2 * state)
        self.a_log = nn.Parameter(torch.log(torch.linspace(1, 16, heads)))
        self.dt_bias = nn.Parameter(torch.zeros(heads))
        self.d_skip = nn.Parameter(torch.ones(heads))
        self.norm = RMSNorm(inner)
        self.out_proj = nn.Linear(inner, dim, bias=False)

    def _split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        zxbc_dt = self.in_proj(x)
        z, xbc, dt = zxbc_dt.split([self.inner, self.inner + 2 * self.n, self.heads], -1)
        return z, xbc, dt

    def _out(self, y: torch.Tensor, xs: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        y = y + xs * self.d_skip[:, None]
        return self.out_proj(self.norm(y.flatten(2) * F.silu(z)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, l, _ = x.shape
        z, xbc, dt = self._split(x)
        xbc = self.conv(xbc)
        xs, bb, cc = xbc.split([self.inner, self.n, self.n], -1)
        xs = xs.view(b, l, self.heads, self.p)
        dt = F.softplus(dt + self.dt_bias)
        expand = lambda t: t[:, :, None, :].expand(b, t.shape[1], self.heads, self.n)
        args = [_pad_to(t, self.chunk)[0] for t in (xs, dt, expand(bb), expand(cc))]
        y, _ = ssd_chunked(args[0], args[1], -torch.exp(self.a_log), args[2], args[3], self.chunk)
        return self._out(y[:, :l], xs, z)

    def step(self, x: torch.Tensor, cache: dict[str, Any] | None) -> tuple[torch.Tensor, dict[str, Any]]:
        b = x.shape[0]
        z, xbc, dt = self._split(x)
        xbc, window = self.conv.step(xbc, None if cache is None else cache["conv"])
        xs, bb, cc = xbc.split([self.inner, self.n, self.n], -1)
        xs = xs.view(b, 1, self.heads, self.p)
        dt = F.softplus(dt + self.dt_bias)[:, 0]
        state = xs.new_zeros(b, self.heads, self.p, self.n) if cache is None else cache["ssm"]
        per_head = lambda t: t[:, 0, None, :].expand(b, self.heads, self.n)
        y, state = ssd_step(state, xs[:, 0], dt, -torch.exp(self.a_log), per_head(bb), per_head(cc))
        return self._out(y[:, None], xs, z), {"conv": window, "ssm": state}


class DeltaNet(nn.Module):
    """DeltaNet mixer (gated DeltaNet with `gated`): q/k/v with short convolutions, L2-normalised keys
    and queries, a learned write strength beta (and decay gate), normalised and gated output."""

    def __init__(self, dim: int, heads: int, gated: bool = False, chunk: int = 16) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"`dim % heads == 0` must hold, but got dim={dim}, heads={heads}")
        self.heads, self.d, self.gated, self.chunk = heads, dim // heads, gated, chunk
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.conv = _ShortConv(3 * dim)
        self.beta = nn.Linear(dim, heads, bias=True)
        self.gate = nn.Linear(dim, heads, bias=True) if gated else None
        self.out_gate = nn.Linear(dim, dim, bias=False)
        self.norm = RMSNorm(self.d)
        self.o = nn.Linear(dim, dim, bias=False)

    def _heads(self, qkv: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        b, l, _ = qkv.shape
        q, k, v = qkv.view(b, l, 3, self.heads, self.d).unbind(2)
        return F.normalize(q, dim=-1), F.normalize(k, dim=-1), v

    def _gates(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        beta = torch.sigmoid(self.beta(x))
        return beta, (F.logsigmoid(self.gate(x) + 3.0) if self.gated else None)

    def _out(self, o: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.o(self.norm(o).flatten(2) * F.silu(self.out_gate(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        l = x.shape[1]
        q, k, v = self._heads(self.conv(self.qkv(x)))
        beta, g = self._gates(x)
        padded = [_pad_to(t, self.chunk)[0] if t is not None else None for t in (q, k, v, beta, g)]
        o, _ = delta_rule_chunked(*padded, chunk=self.chunk)
        return self._out(o[:, :l], x)

    def step(self, x: torch.Tensor, cache: dict[str, Any] | None) -> tuple[torch.Tensor, dict[str, Any]]:
        qkv, window = self.conv.step(self.qkv(x), None if cache is None else cache["conv"])
        q, k, v = (t[:, 0] for t in self._heads(qkv))
        beta, g = self._gates(x)
        state = q.new_zeros(x.shape[0], self.heads, self.d, self.d) if cache is None else cache["state"]
        o, state = delta_step(state, q, k, v, beta[:, 0], None if g is None else g[:, 0])
        return self._out(o[:, None], x), {"conv": window, "state": state}
