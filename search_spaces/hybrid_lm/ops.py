"""Token mixers in pure PyTorch: exportable to ONNX at a fixed sequence length, each with a
per-token recurrent reference that the chunked form must equal.

Shapes: x (batch, length, heads, head_dim). Mamba2's SSD follows the minimal chunked algorithm of
the Mamba2 paper (state space duality); DeltaNet and gated DeltaNet follow the chunked WY form of
the delta rule (Yang et al. 2024, "Parallelizing Linear Transformers with the Delta Rule")."""

from __future__ import annotations

import torch
import torch.nn.functional as F


# ---- attention ---------------------------------------------------------------------------------
def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None) -> torch.Tensor:
    """Grouped-query causal attention; q (b, l, h, d), k/v (b, l, g, d) with h a multiple of g; a
    sliding window of `window` tokens (the token itself included) when given."""
    b, l, h, d = q.shape
    rep = h // k.shape[2]
    k, v = k.repeat_interleave(rep, dim=2), v.repeat_interleave(rep, dim=2)
    i = torch.arange(l, device=q.device)
    allowed = i[None, :] <= i[:, None]
    if window is not None:
        allowed = allowed & (i[:, None] - i[None, :] < window)
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=allowed)
    return out.transpose(1, 2)


def attend_one(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """One decoding step: q (b, h, d) over the cached k/v (b, s, g, d), g dividing h."""
    rep = q.shape[1] // k.shape[2]
    # (b, h, s, d)
    k, v = k.repeat_interleave(rep, dim=2).transpose(1, 2), v.repeat_interleave(rep, dim=2).transpose(1, 2)
    scores = (q[:, :, None] @ k.transpose(-1, -2)) / q.shape[
        -1
    ] ** 0.5  # matmuls, not einsum: onnxruntime's Einsum is slow
    return (scores.softmax(-1) @ v)[:, :, 0]


def causal_attention_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: int | None = None
) -> torch.Tensor:
    """Token by token, as decoding with a (windowed) KV cache does it."""
    outs = []
    for t in range(q.shape[1]):
        start = 0 if window is None else max(0, t - window + 1)
        outs.append(attend_one(q[:, t], k[:, start : t + 1], v[:, start : t + 1]))
    return torch.stack(outs, 1)


# ---- Mamba2 (SSD) --------------------------------------------------------------------------------
def _segsum(x: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = sum(x[..., j+1 : i+1]) for j <= i, -inf above the diagonal."""
    t = x.shape[-1]
    x = x[..., None].expand(*x.shape, t)
    x = x.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), -1), 0)
    s = torch.cumsum(x, dim=-2)
    return s.masked_fill(~torch.tril(torch.ones(t, t, dtype=torch.bool, device=x.device), 0), float("-inf"))


def ssd_chunked(
    x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, chunk: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mamba2's selective state space, chunked. x (B, L, H, P), dt (B, L, H) > 0, a (H,) < 0,
    b/c (B, L, H, N); L a multiple of `chunk`. Returns y (B, L, H, P) and the final state (B, H, P, N)."""
    bs, l, h, p = x.shape
    n = b.shape[-1]
    nc = l // chunk
    X = (x * dt[..., None]).reshape(bs, nc, chunk, h, p)
    A = (a[None, None, :] * dt).reshape(bs, nc, chunk, h).permute(0, 3, 1, 2)  # (B, H, C, chunk)
    Bc, Cc = b.reshape(bs, nc, chunk, h, n), c.reshape(bs, nc, chunk, h, n)
    a_cum = torch.cumsum(A, dim=-1)
    decay = torch.exp(_segsum(A))
    # batched matmuls over (B, C, H), not einsum: onnxruntime's Einsum is several times slower
    Ch, Bh, Xh = Cc.permute(0, 1, 3, 2, 4), Bc.permute(0, 1, 3, 2, 4), X.permute(0, 1, 3, 2, 4)  # (B, C, H, chunk, .)
    y_diag = ((Ch @ Bh.transpose(-1, -2)) * decay.permute(0, 2, 1, 3, 4)) @ Xh  # (B, C, H, chunk, P)
    to_end = torch.exp(a_cum[..., -1:] - a_cum).permute(0, 2, 1, 3)  # (B, C, H, chunk)
    states = (Xh * to_end[..., None]).transpose(-1, -2) @ Bh  # (B, C, H, P, N)
    states = torch.cat([torch.zeros_like(states[:, :1]), states], dim=1)
    across = torch.exp(_segsum(F.pad(a_cum[..., -1], (1, 0))))  # (B, H, C+1, C+1)
    states = (across @ states.permute(0, 2, 1, 3, 4).reshape(bs, h, nc + 1, p * n)).reshape(bs, h, nc + 1, p, n)
    states = states.permute(0, 2, 1, 3, 4)  # (B, C+1, H, P, N)
    y_off = (Ch @ states[:, :-1].transpose(-1, -2)) * torch.exp(a_cum).permute(0, 2, 1, 3)[..., None]
    return (y_diag + y_off).permute(0, 1, 3, 2, 4).reshape(bs, l, h, p), states[:, -1]


def ssd_step(
    state: torch.Tensor, x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: h = exp(dt a) h + dt x b^T; y = h c. state (B, H, P, N), x (B, H, P), dt (B, H), b/c (B, H, N)."""
    state = torch.exp(dt * a)[..., None, None] * state + (dt[..., None, None] * x[..., :, None]) * b[..., None, :]
    return (state @ c[..., :, None])[..., 0], state  # no einsum: onnxruntime's Einsum made this step twice as slow


def ssd_recurrent(
    x: torch.Tensor, dt: torch.Tensor, a: torch.Tensor, b: torch.Tensor, c: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The selective state space one token at a time (the decoding step)."""
    bs, l, h, p = x.shape
    state = x.new_zeros(bs, h, p, b.shape[-1])
    ys = []
    for t in range(l):
        y, state = ssd_step(state, x[:, t], dt[:, t], a, b[:, t], c[:, t])
        ys.append(y)
    return torch.stack(ys, 1), state


# ---- DeltaNet and gated DeltaNet -----------------------------------------------------------------
def delta_rule_chunked(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
    chunk: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """S_t = a_t (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T, o_t = S_t^T q_t, with a_t = exp(g_t)
    (gated DeltaNet) or 1 (DeltaNet). q/k (B, L, H, K) (k L2-normalised), v (B, L, H, V), beta/g (B, L, H).
    Returns o (B, L, H, V) and the final state (B, H, K, V)."""
    bs, l, h, dk = q.shape
    dv = v.shape[-1]
    nc = l // chunk
    to_chunks = lambda t: t.transpose(1, 2).reshape(bs, h, nc, chunk, *t.shape[3:])
    q, k, v, beta = to_chunks(q), to_chunks(k), to_chunks(v), to_chunks(beta)
    gc = torch.cumsum(to_chunks(g), dim=-1) if g is not None else torch.zeros_like(beta)
    k_beta, v_beta = k * beta[..., None], v * beta[..., None]
    decay = torch.exp((gc[..., :, None] - gc[..., None, :]).tril()).tril()  # a_{j+1..i} for j <= i
    strict = torch.triu(torch.ones(chunk, chunk, dtype=torch.bool, device=q.device), 0)
    t_mat = -((k_beta @ k.transpose(-1, -2)) * decay).masked_fill(strict, 0)
    rows = [t_mat[..., 0, :]]
    for i in range(1, chunk):  # forward substitution: (I - T)^-1 of the strictly lower T, row by row
        prev = torch.stack(rows, -2)  # (..., i, chunk)
        rows.append(t_mat[..., i, :] + (t_mat[..., i, :i, None] * prev[..., :i, :]).sum(-2))
    t_inv = torch.stack(rows, -2) + torch.eye(chunk, device=q.device)
    u = t_inv @ v_beta
    w = t_inv @ (k_beta * torch.exp(gc)[..., None])
    upper = torch.triu(torch.ones(chunk, chunk, dtype=torch.bool, device=q.device), 1)
    state = q.new_zeros(bs, h, dk, dv)
    outs = []
    for i in range(nc):
        qi, ki, gi = q[:, :, i], k[:, :, i], gc[:, :, i]
        attn = (qi @ ki.transpose(-1, -2) * decay[:, :, i]).masked_fill(upper, 0)
        new_v = u[:, :, i] - w[:, :, i] @ state
        outs.append((qi * torch.exp(gi)[..., None]) @ state + attn @ new_v)
        last = gi[..., -1:]
        state = state * torch.exp(last)[..., None] + (ki * torch.exp(last - gi)[..., None]).transpose(-1, -2) @ new_v
    o = torch.stack(outs, 2).reshape(bs, h, l, dv).transpose(1, 2)
    return o, state


def delta_step(
    state: torch.Tensor,
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    beta: torch.Tensor,
    g: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token of the delta rule: state (B, H, K, V), q/k (B, H, K), v (B, H, V), beta/g (B, H)."""
    if g is not None:
        state = state * torch.exp(g)[..., None, None]
    pred = (k[..., None, :] @ state)[..., 0, :]  # no einsum: onnxruntime's Einsum made this step three times as slow
    state = state + k[..., :, None] * (beta[..., None] * (v - pred))[..., None, :]
    return (q[..., None, :] @ state)[..., 0, :], state


def delta_rule_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, beta: torch.Tensor, g: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The delta rule one token at a time (the decoding step)."""
    bs, l, h, dk = q.shape
    state = q.new_zeros(bs, h, dk, v.shape[-1])
    outs = []
    for t in range(l):
        o, state = delta_step(state, q[:, t], k[:, t], v[:, t], beta[:, t], None if g is None else g[:, t])
        outs.append(o)
    return torch.stack(outs, 1), state
