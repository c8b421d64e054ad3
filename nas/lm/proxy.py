"""The hybrid_lm accuracy proxy: short next-byte training, scored in validation bits per byte.

Text comes from a local file or directory (every *.txt / *.md / *.py under it), or, by default, from
Python's own bundled documentation (`pydoc_data.topics`: about 0.5 MB of English and code), so
nothing is downloaded. The last `val_fraction` of the bytes is held out."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.recipes import ProxyConfig
from nas.training.schedules import cosine

TEXT_SUFFIXES = (".txt", ".md", ".py", ".rst")


def load_text(path: str | Path | None = None) -> bytes:
    """The corpus as bytes: a file, every text file under a directory, or the bundled pydoc topics."""
    if path is None or str(path) == "pydoc":
        from pydoc_data.topics import topics

        return "\n\n".join(topics[k] for k in sorted(topics)).encode("utf-8")
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES)
        if not files:
            raise ValueError(f"text directory {str(p)!r} holds no {', '.join(TEXT_SUFFIXES)} files")
        return b"\n\n".join(f.read_bytes() for f in files)
    try:
        data = p.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read text {str(p)!r}: {err.strerror}") from None
    if not data:
        raise ValueError(f"text file {str(p)!r} is empty")
    return data


@dataclass
class TextData:
    train: np.ndarray
    val: np.ndarray

    @classmethod
    def from_bytes(cls, data: bytes, val_fraction: float = 0.1) -> TextData:
        if not 0 < val_fraction < 1:
            raise ValueError(f"`0 < val_fraction < 1` must hold, but got val_fraction={val_fraction}")
        arr = np.frombuffer(data, dtype=np.uint8)
        cut = int(len(arr) * (1 - val_fraction))
        return cls(arr[:cut], arr[cut:])

    def batch(self, rng: np.random.Generator, batch: int, seq_len: int) -> torch.Tensor:
        """(batch, seq_len + 1) random training windows."""
        if len(self.train) <= seq_len + 1:
            raise ValueError(f"the training text ({len(self.train)} bytes) is shorter than one window of {seq_len + 1}")
        starts = rng.integers(0, len(self.train) - seq_len - 1, batch)
        return torch.from_numpy(np.stack([self.train[s : s + seq_len + 1] for s in starts]).astype(np.int64))


def next_byte_loss(model: torch.nn.Module, window: torch.Tensor) -> torch.Tensor:
    logits = model(window[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), window[:, 1:].reshape(-1))


@torch.no_grad()
def bits_per_byte(
    model: torch.nn.Module, data: np.ndarray, seq_len: int, max_windows: int = 64, batch: int = 16, device: str = "cpu"
) -> float:
    """Mean next-byte cross-entropy in bits over consecutive windows of `data` (up to max_windows)."""
    model.eval()
    n = min(max_windows, (len(data) - 1) // seq_len)
    if n < 1:
        raise ValueError(f"the validation text ({len(data)} bytes) is shorter than one window of {seq_len + 1}")
    windows = torch.from_numpy(
        np.stack([data[i * seq_len : i * seq_len + seq_len + 1] for i in range(n)]).astype(np.int64)
    )
    total = 0.0
    for i in range(0, n, batch):
        total += next_byte_loss(model, windows[i : i + batch].to(device)).item() * len(windows[i : i + batch])
    return total / n / math.log(2)


def train_proxy(
    model: torch.nn.Module,
    data: TextData,
    config: ProxyConfig,
    seed: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> dict[str, Any]:
    """Train `model` for `config.steps` AdamW steps (cosine schedule, warm-up; bf16 autocast on CUDA) and
    score it: validation bits per byte after training, and the training loss curve. `seed` (default: the
    config's) seeds the batches. The model is left on the CPU."""
    steps, batch, seq_len, lr, device = config.steps, config.batch, config.seq_len, config.lr, config.device
    seed = config.seed if seed is None else seed
    torch.manual_seed(seed)
    cuda = device.startswith("cuda")
    model.to(device)
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.95))
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine(s, steps, warm))
    losses = []
    model.train()
    for step in range(steps):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = next_byte_loss(model, data.batch(rng, batch, seq_len).to(device))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None:
            progress(step, losses[-1])
    bpb = bits_per_byte(model, data.val, seq_len, config.val_windows, device=device)
    model.to("cpu")
    return {"val_bpb": bpb, "train_loss": losses, "steps": steps, "batch": batch, "seq_len": seq_len}
