"""Datasets for supernet training: embedded digits, CIFAR-10/100 binary archives, ImageFolder.

Nothing is downloaded and no user file is unpickled: CIFAR is read from the fixed-size records
of the binary archives with numpy."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class Split:
    """Images (N, 3, H, W) float32 in [0, 1], labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class TaskData:
    """train / val (from the training part) / test, with what a deployed model must know."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def describe(self) -> dict:
        return {"dataset": self.name, "num_classes": self.num_classes, "mean": list(self.mean), "std": list(self.std),
                "train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _stratified(labels: np.ndarray, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    a, b = train_test_split(idx, test_size=fraction, random_state=seed, stratify=labels)
    return np.sort(a), np.sort(b)


def digits(resolution: int = 32, val_fraction: float = 0.2) -> TaskData:
    """scikit-learn's bundled digits (1,797 real 8x8 images), upsampled to RGB; the test split is
    train_test_split(test_size=0.2, random_state=0, stratify=y) and never used for training or search."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    X = torch.tensor(d.images / 16.0, dtype=torch.float32)[:, None]
    X = F.interpolate(X, size=(resolution, resolution), mode="bilinear", align_corners=False).repeat(1, 3, 1, 1)
    y = torch.tensor(d.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(np.arange(len(y)), test_size=0.2, random_state=0, stratify=d.target)
    fit, val = _stratified(d.target[train_idx], val_fraction)
    fit, val = train_idx[fit], train_idx[val]
    mean = tuple(float(X[fit].mean()) for _ in range(3))
    std = tuple(float(X[fit].std()) for _ in range(3))
    pick = lambda i: Split(X[i], y[i])  # noqa: E731
    return TaskData("digits", pick(fit), pick(val), pick(test_idx), 10, mean, std)


def _read_records(path: Path, label_bytes: int, label_index: int) -> tuple[np.ndarray, np.ndarray]:
    record = label_bytes + 3072
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ValueError(f"cannot read CIFAR file {str(path)!r}: {err.strerror}") from None
    if raw.size == 0 or raw.size % record:
        raise ValueError(f"{str(path)!r} is not a CIFAR binary file ({raw.size} bytes is not a multiple of {record})")
    raw = raw.reshape(-1, record)
    return raw[:, label_bytes:].reshape(-1, 3, 32, 32), raw[:, label_index].astype(np.int64)


def cifar(root: str | Path, classes: int = 10, val_fraction: float = 0.1) -> TaskData:
    """CIFAR-10 (`cifar-10-batches-bin`) or CIFAR-100 (`cifar-100-binary`, fine labels) from a local path."""
    root = Path(root)
    if classes == 10:
        base = root / "cifar-10-batches-bin" if (root / "cifar-10-batches-bin").is_dir() else root
        train_files, test_files, lb, li = [base / f"data_batch_{i}.bin" for i in range(1, 6)], [base / "test_batch.bin"], 1, 0
    elif classes == 100:
        base = root / "cifar-100-binary" if (root / "cifar-100-binary").is_dir() else root
        train_files, test_files, lb, li = [base / "train.bin"], [base / "test.bin"], 2, 1
    else:
        raise ValueError(f"CIFAR has 10 or 100 classes, but got {classes}")
    missing = [str(p) for p in train_files + test_files if not p.is_file()]
    if missing:
        raise ValueError(f"CIFAR-{classes} binary files not found: {missing[0]} (hwnas never downloads; give the local path)")

    def load(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_records(f, lb, li) for f in files]
        x = np.concatenate([p[0] for p in parts])
        return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(np.concatenate([p[1] for p in parts]))

    X, y = load(train_files)
    Xt, yt = load(test_files)
    fit, val = _stratified(y.numpy(), val_fraction) if len(y) >= 10 * classes else (np.arange(len(y)), np.arange(0))
    return TaskData(f"cifar{classes}", Split(X[fit], y[fit]), Split(X[val], y[val]), Split(Xt, yt), classes, CIFAR_MEAN, CIFAR_STD)
