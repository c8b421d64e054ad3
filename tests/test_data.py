"""Datasets: the fixed digits split, CIFAR binary records read without unpickling."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import cifar, digits


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = digits(), digits()
    assert len(a.test) == 360 and len(a.train) + len(a.val) == 1437
    torch.testing.assert_close(a.test.images, b.test.images)
    assert a.train.images.shape[1:] == (3, 32, 32) and 0 <= a.train.images.min() and a.train.images.max() <= 1
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35  # stratified: every class about a tenth of the test split
    rows = lambda s: {tuple(r) for r in s.images[:, 0].flatten(1).numpy().round(5).tolist()}  # noqa: E731
    assert not rows(a.test) & rows(a.train)


def _records(n, label_bytes, rng):
    labels = rng.integers(0, 10, (n, label_bytes)).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    return np.concatenate([labels, pixels], axis=1), labels, pixels


@pytest.mark.parametrize("classes, label_bytes", [(10, 1), (100, 2)])
def test_cifar_binary_records_are_read_channel_major(classes, label_bytes, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / ("cifar-10-batches-bin" if classes == 10 else "cifar-100-binary")
    folder.mkdir()
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"] if classes == 10 else ["train.bin", "test.bin"]
    written = {}
    for name in names:
        rec, labels, pixels = _records(4, label_bytes, rng)
        rec.tofile(folder / name)
        written[name] = (labels, pixels)
    data = cifar(tmp_path, classes)
    test_name = "test_batch.bin" if classes == 10 else "test.bin"
    labels, pixels = written[test_name]
    assert data.test.labels.tolist() == labels[:, label_bytes - 1].tolist()
    assert data.test.images[2, 1, 3, 4].item() == pytest.approx(pixels[2, 1024 + 3 * 32 + 4] / 255)
    assert len(data.train) + len(data.val) == (20 if classes == 10 else 4)


def test_cifar_errors_name_the_file(tmp_path):
    with pytest.raises(ValueError, match="never downloads"):
        cifar(tmp_path, 10)
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    (folder / "train.bin").write_bytes(b"x" * 100)
    (folder / "test.bin").write_bytes(b"x" * 3074)
    with pytest.raises(ValueError, match="train.bin' is not a CIFAR binary file"):
        cifar(tmp_path, 100)
