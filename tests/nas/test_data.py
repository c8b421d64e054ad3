"""Datasets: the fixed digits split, CIFAR binary records read without unpickling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nas.data import cifar, digits, digits_hard


def test_digits_split_is_fixed_stratified_and_disjoint():
    a, b = digits(), digits()
    assert len(a.test) == 360 and len(a.train) + len(a.val) == 1437
    torch.testing.assert_close(a.test.images, b.test.images)
    assert a.train.images.shape[1:] == (3, 32, 32) and 0 <= a.train.images.min() and a.train.images.max() <= 1
    counts = torch.bincount(a.test.labels, minlength=10)
    assert counts.min() >= 35  # stratified: every class about a tenth of the test split
    rows = lambda s: {tuple(r) for r in s.images[:, 0].flatten(1).numpy().round(5).tolist()}
    assert not rows(a.test) & rows(a.train)


def _records(n, label_bytes, rng):
    labels = rng.integers(0, 10, (n, label_bytes)).astype(np.uint8)
    pixels = rng.integers(0, 256, (n, 3072)).astype(np.uint8)
    return np.concatenate([labels, pixels], axis=1), labels, pixels


def test_digits_hard_is_four_fixed_distortions_of_each_digits_split():
    plain, hard = digits(16), digits_hard(16)
    assert hard.name == "digits-hard" and len(hard.test) == 4 * len(plain.test) == 1440
    assert len(hard.train) == 4 * len(plain.train) and len(hard.val) == 4 * len(plain.val)
    assert torch.equal(hard.test.labels, plain.test.labels.repeat(4))  # the test split stays the test split
    again = digits_hard(16)
    assert torch.equal(again.test.images, hard.test.images)  # fixed, not random per call
    x = hard.test.images
    assert 0 <= float(x.min()) and float(x.max()) <= 1 and x.shape[1:] == (3, 16, 16)
    assert not torch.allclose(x[:, 0], x[:, 1])  # tinted per channel: colour carries no label
    assert float((x[: len(plain.test)] - plain.test.images).abs().mean()) > 0.1
    with pytest.raises(ValueError, match="variants=0"):
        digits_hard(16, variants=0)


@pytest.mark.parametrize("classes, label_bytes", [(10, 1), (100, 2)])
def test_cifar_binary_records_are_read_channel_major(classes, label_bytes, tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / ("cifar-10-batches-bin" if classes == 10 else "cifar-100-binary")
    folder.mkdir()
    names = (
        [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
        if classes == 10
        else ["train.bin", "test.bin"]
    )
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


def _write_folder(root, classes=("cat", "dog"), per_class=10, size=20):
    from PIL import Image

    rng = np.random.default_rng(0)
    for k, c in enumerate(classes):
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((size, size + 4, 3), 40 + 150 * k, np.uint8) + rng.integers(
                0, 20, (size, size + 4, 3), dtype=np.uint8
            )
            Image.fromarray(pixels).save(root / c / f"{i}.png")


def test_imagefolder_reads_classes_splits_and_transforms(tmp_path):
    from nas.data import batches, imagefolder

    _write_folder(tmp_path / "train")
    _write_folder(tmp_path / "val", per_class=3)
    data = imagefolder(tmp_path, resolution=16)
    assert data.num_classes == 2 and len(data.test) == 6
    assert len(data.train) + len(data.val) == 20 and len(data.val) == 2
    assert set(data.train.paths).isdisjoint(data.val.paths)
    x, y = next(batches(data.test, 6, None, data))
    assert x.shape == (6, 3, 16, 16) and y.tolist() == [0, 0, 0, 1, 1, 1]
    raw = x * torch.tensor(data.std).view(1, 3, 1, 1) + torch.tensor(data.mean).view(1, 3, 1, 1)
    assert raw[:3].mean() < 0.35 < raw[3:].mean()  # class 1 is the bright one, in [0, 1] before normalisation
    xt, _ = next(batches(data.train, 4, 0, data))
    assert xt.shape == (4, 3, 16, 16)


def test_imagefolder_errors_name_the_folder(tmp_path):
    from nas.data import imagefolder

    with pytest.raises(ValueError, match="not a directory"):
        imagefolder(tmp_path / "missing")
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds no images"):
        imagefolder(tmp_path / "empty")


def test_training_batches_are_augmented_reproducibly_and_sharded():
    from nas.data import batches

    data = digits()
    data.augment, data.re_prob = "crop_flip", 0.5
    a = list(batches(data.train, 32, 7, data))
    b = list(batches(data.train, 32, 7, data))
    plain = list(batches(data.train, 32, 7, data, augment=False))
    assert all(torch.equal(x, y) for (x, _), (y, _) in zip(a, b))
    assert not torch.equal(a[0][0], plain[0][0])
    assert torch.equal(a[0][1], plain[0][1])
    r0 = list(batches(data.train, 16, 7, data, rank=0, world=2, augment=False))
    r1 = list(batches(data.train, 16, 7, data, rank=1, world=2, augment=False))
    joined = torch.cat([torch.stack([r0[0][1], r1[0][1]], 1).reshape(-1)])
    assert torch.equal(joined, plain[0][1])  # the two ranks share the single-process batch between them
