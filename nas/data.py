"""Datasets for supernet training: embedded digits, CIFAR-10/100 binary archives, ImageFolder.

Nothing is downloaded and no user file is unpickled: CIFAR is read from the fixed-size records
of the binary archives with numpy."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class Split:
    """Images (N, 3, H, W) float32 in [0, 1], labels (N,) int64; `sources` (N,) numbers the image each was made
    from where several are views of one (`digits-hard`), so a comparison on the split counts them as one sample."""

    images: torch.Tensor
    labels: torch.Tensor
    sources: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class FileSplit:
    """Image files decoded on demand (ImageFolder); `transform` maps a PIL image to a (3, H, W) tensor in [0, 1]."""

    paths: list[str]
    labels: torch.Tensor
    train_transform: Callable[[Any], torch.Tensor]
    eval_transform: Callable[[Any], torch.Tensor]

    def __len__(self) -> int:
        return len(self.labels)

    def load(self, i: int, train: bool) -> torch.Tensor:
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return (self.train_transform if train else self.eval_transform)(im.convert("RGB"))


AUGMENTS = ("none", "crop_flip", "timm")


@dataclass
class TaskData:
    """train / val (from the training part) / test, with what a deployed model must know.

    `augment` applies to training batches: crop_flip is the CIFAR recipe (pad 4, random crop,
    horizontal flip) on tensors; timm is timm's training transform for image files. `re_prob` adds
    timm's random erasing to either."""

    name: str
    train: Split | FileSplit
    val: Split | FileSplit
    test: Split | FileSplit
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    resolution: int = 32
    augment: str = "none"
    re_prob: float = 0.0
    workers: int = 0

    def describe(self) -> dict:
        return {
            "dataset": self.name,
            "num_classes": self.num_classes,
            "mean": list(self.mean),
            "std": list(self.std),
            "resolution": self.resolution,
            "train": len(self.train),
            "val": len(self.val),
            "test": len(self.test),
        }

    def normalisation(self) -> dict:
        """What a deployed model needs to prepare its input: RGB in [0, 1], then (x - mean) / std."""
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "resolution": self.resolution,
            "num_classes": self.num_classes,
            "input": "RGB, NCHW, float32 in [0, 1], then (x - mean) / std",
        }


def resize(x: torch.Tensor, r: int) -> torch.Tensor:
    """Images (N, C, H, W) at r x r (bilinear), unchanged when they already are."""
    return x if x.shape[-1] == r else F.interpolate(x, size=(r, r), mode="bilinear", align_corners=False)


def _normalise(x: torch.Tensor, data: TaskData) -> torch.Tensor:
    mean = torch.tensor(data.mean, dtype=x.dtype).view(1, -1, 1, 1)
    std = torch.tensor(data.std, dtype=x.dtype).view(1, -1, 1, 1)
    return (x - mean) / std


def _crop_flip(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4), mode="reflect")
    dy, dx = torch.randint(0, 9, (n,), generator=g), torch.randint(0, 9, (n,), generator=g)
    flip = torch.rand(n, generator=g) < 0.5
    out = torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])
    out[flip] = out[flip].flip(-1)
    return out


class _Files(torch.utils.data.Dataset):
    def __init__(self, split: FileSplit, train: bool) -> None:
        self.split, self.train = split, train

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.split.load(i, self.train)


def batches(
    split: Split | FileSplit,
    batch_size: int,
    seed: int | None,
    data: TaskData,
    rank: int = 0,
    world: int = 1,
    augment: bool | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised (images, labels) batches. Shuffled with `seed` and augmented (training), or in order
    (evaluation) when seed is None. With `world` > 1 each rank takes its own share of every global batch."""
    n = len(split)
    train = seed is not None if augment is None else augment
    if seed is not None:
        order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        step = batch_size * world
        groups = [order[i + rank : i + step : world] for i in range(0, n - step + 1, step)]
    else:
        order = torch.arange(n)
        groups = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if isinstance(split, FileSplit):
        loader = torch.utils.data.DataLoader(
            _Files(split, train), batch_sampler=[g.tolist() for g in groups], num_workers=data.workers
        )
        images = iter(loader)
    for k, idx in enumerate(groups):
        x = next(images) if isinstance(split, FileSplit) else split.images[idx]
        if train:
            g = torch.Generator().manual_seed((seed or 0) * 7919 + k)
            if data.augment == "crop_flip":
                x = _crop_flip(x, g)
        x = _normalise(x, data)
        if train and data.re_prob > 0:
            from timm.data.random_erasing import RandomErasing

            with torch.random.fork_rng(devices=[]):
                random.seed((seed or 0) * 7919 + k)
                torch.manual_seed((seed or 0) * 7919 + k)
                x = RandomErasing(data.re_prob, mode="pixel", device="cpu")(x)
        yield x, split.labels[idx]


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
    pick = lambda i: Split(X[i], y[i])
    return TaskData("digits", pick(fit), pick(val), pick(test_idx), 10, mean, std, resolution)


def _distort(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Rotated, scaled, sheared and shifted digits, each over a fainter fragment of another digit of the
    batch, tinted per channel, with pixel noise: what makes `digits-hard` hard."""
    n = len(x)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)
    angle, scale, shear = u(-0.5, 0.5), u(0.75, 1.1), u(-0.3, 0.3)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos, -sin + shear, u(-0.2, 0.2)], 1), torch.stack([sin, cos, u(-0.2, 0.2)], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")
    other = x[torch.randperm(n, generator=g)]
    offset = torch.stack(
        [
            torch.stack([torch.ones(n), torch.zeros(n), u(-1.0, 1.0)], 1),
            torch.stack([torch.zeros(n), torch.ones(n), u(-1.0, 1.0)], 1),
        ],
        1,
    )
    clutter = F.grid_sample(other, F.affine_grid(offset, list(x.shape), align_corners=False), align_corners=False)
    out = torch.maximum(out, u(0.3, 0.6).view(-1, 1, 1, 1) * clutter)
    tint = 0.4 + 0.6 * torch.rand(n, 3, 1, 1, generator=g)
    out = out * tint + 0.15 * torch.randn(out.shape, generator=g)
    return out.clamp(0, 1)


def digits_hard(resolution: int = 32, variants: int = 4, val_fraction: float = 0.2, seed: int = 0) -> TaskData:
    """`digits` made hard enough for precision to cost accuracy: every image of each split (the same
    split as `digits`) in `variants` fixed distortions (`_distort`), so the test split has 4x as many
    images (1,440) and a point is 14 images. Nothing is downloaded."""
    if variants < 1:
        raise ValueError(f"`variants >= 1` must hold, but got variants={variants}")
    base = digits(resolution, val_fraction)
    g = torch.Generator().manual_seed(seed)

    def expand(split: Split) -> Split:
        images = torch.cat([_distort(split.images, g) for _ in range(variants)])
        return Split(images, split.labels.repeat(variants), np.tile(np.arange(len(split)), variants))

    fit, val, test = expand(base.train), expand(base.val), expand(base.test)
    mean = tuple(float(m) for m in fit.images.mean((0, 2, 3)))
    std = tuple(float(s) for s in fit.images.std((0, 2, 3)))
    return TaskData("digits-hard", fit, val, test, 10, mean, std, resolution)


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
        train_files, test_files, lb, li = (
            [base / f"data_batch_{i}.bin" for i in range(1, 6)],
            [base / "test_batch.bin"],
            1,
            0,
        )
    elif classes == 100:
        base = root / "cifar-100-binary" if (root / "cifar-100-binary").is_dir() else root
        train_files, test_files, lb, li = [base / "train.bin"], [base / "test.bin"], 2, 1
    else:
        raise ValueError(f"CIFAR has 10 or 100 classes, but got {classes}")
    missing = [str(p) for p in train_files + test_files if not p.is_file()]
    if missing:
        raise ValueError(
            f"CIFAR-{classes} binary files not found: {missing[0]} (hwnas never downloads; give the local path)"
        )

    def load(files: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
        parts = [_read_records(f, lb, li) for f in files]
        x = np.concatenate([p[0] for p in parts])
        return torch.tensor(x, dtype=torch.float32) / 255.0, torch.tensor(np.concatenate([p[1] for p in parts]))

    X, y = load(train_files)
    Xt, yt = load(test_files)
    fit, val = _stratified(y.numpy(), val_fraction) if len(y) >= 10 * classes else (np.arange(len(y)), np.arange(0))
    return TaskData(
        f"cifar{classes}",
        Split(X[fit], y[fit]),
        Split(X[val], y[val]),
        Split(Xt, yt),
        classes,
        CIFAR_MEAN,
        CIFAR_STD,
        32,
    )


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".tif", ".tiff")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _scan(folder: Path, classes: list[str] | None = None) -> tuple[list[str], list[int], list[str]]:
    found = sorted(d.name for d in folder.iterdir() if d.is_dir()) if classes is None else classes
    if not found:
        raise ValueError(f"ImageFolder {str(folder)!r} has no class subfolders (expected {folder}/<class>/<image>)")
    paths, labels = [], []
    for k, c in enumerate(found):
        sub = folder / c
        if not sub.is_dir():
            continue
        for f in sorted(sub.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                paths.append(str(f))
                labels.append(k)
    if not paths:
        raise ValueError(f"ImageFolder {str(folder)!r} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return paths, labels, found


def imagefolder(
    root: str | Path,
    resolution: int = 224,
    val_fraction: float = 0.1,
    auto_augment: str | None = None,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> TaskData:
    """Images in root/train/<class>/ (and root/val/<class>/ as the test split, when present; otherwise
    a stratified fifth of train is held out as test). Training images get timm's training transform."""
    from timm.data import create_transform

    root = Path(root)
    if not root.is_dir():
        raise ValueError(
            f"ImageFolder root {str(root)!r} is not a directory (hwnas never downloads; give the local path)"
        )
    train_dir = root / "train" if (root / "train").is_dir() else root
    paths, labels, classes = _scan(train_dir)
    y = np.array(labels)
    if (root / "val").is_dir():
        test_paths, test_labels, _ = _scan(root / "val", classes)
        keep = np.arange(len(y))
    else:
        keep, held = _stratified(y, 0.2)
        test_paths, test_labels = [paths[i] for i in held], y[held].tolist()
    fit, val = _stratified(y[keep], val_fraction)
    fit, val = keep[fit], keep[val]
    unit = dict(mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
    train_tf = create_transform(resolution, is_training=True, auto_augment=auto_augment, **unit)
    eval_tf = create_transform(resolution, is_training=False, crop_pct=0.875 if resolution >= 128 else 1.0, **unit)
    pick = lambda ps, ls: FileSplit(list(ps), torch.tensor(ls, dtype=torch.int64), train_tf, eval_tf)
    return TaskData(
        f"imagefolder:{root.name}",
        pick([paths[i] for i in fit], y[fit].tolist()),
        pick([paths[i] for i in val], y[val].tolist()),
        pick(test_paths, list(test_labels)),
        len(classes),
        tuple(mean),
        tuple(std),
        resolution,
        "timm",
    )
