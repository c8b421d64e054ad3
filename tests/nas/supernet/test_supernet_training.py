"""Supernet training: it learns, checkpoints, and a stopped run resumes exactly."""

from __future__ import annotations

import pytest
import torch

from nas.data import Split, TaskData, digits
from nas.supernet.train import TrainConfig, train
from search_spaces import load_space
from search_spaces.ofa_mbv3 import OFASupernet

SPEC = "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"


def small(data: TaskData, n: int = 256) -> TaskData:
    cut = lambda s, k: Split(s.images[:k], s.labels[:k])
    return TaskData(data.name, cut(data.train, n), cut(data.val, 128), cut(data.test, 128), 10, data.mean, data.std)


@pytest.mark.slow
def test_a_stopped_training_resumes_exactly(tmp_path):
    data = small(digits())
    space = load_space(SPEC)
    cfg = dict(batch_size=32, lr=0.05, warmup_epochs=0.5, random_subnets=1, checkpoint_every=3, seed=1)
    torch.manual_seed(0)
    straight = OFASupernet(space)
    train(straight, data, TrainConfig(epochs=1, **cfg), tmp_path / "a")  # 8 steps

    torch.manual_seed(0)
    first = OFASupernet(space)
    try:
        train(first, data, TrainConfig(epochs=1, **cfg), tmp_path / "b", progress=_stop_after(7))
    except _Stopped:
        pass
    resumed = OFASupernet(space)  # a fresh process: weights come from the checkpoint only
    train(resumed, data, TrainConfig(epochs=1, **cfg), tmp_path / "b")
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


class _Stopped(Exception):
    pass


def _stop_after(n):
    def stop(step, total):
        if step >= n:  # the checkpoint of step 6 is on disk; step 7 is lost, as in a kill
            raise _Stopped

    return stop


def test_warmup_starts_the_learning_rate_near_zero(tmp_path):
    data = small(digits(), 64)

    def moved(warmup_epochs: float) -> float:
        torch.manual_seed(0)
        net = OFASupernet(load_space(SPEC))
        before = [p.detach().clone() for p in net.parameters()]
        cfg = TrainConfig(epochs=1, batch_size=32, lr=0.5, warmup_epochs=warmup_epochs, random_subnets=0)
        train(net, data, cfg, tmp_path / str(warmup_epochs))
        return max(float((p.detach() - b).abs().max()) for p, b in zip(net.parameters(), before))

    assert moved(1000.0) < 0.01 * moved(0.0)  # two steps at 1/2000 and 2/2000 of the rate


@pytest.mark.slow
def test_training_learns_digits(tmp_path):
    data = small(digits(), 512)
    torch.manual_seed(0)
    net = OFASupernet(load_space(SPEC))
    metrics = train(net, data, TrainConfig(epochs=3, batch_size=32, lr=0.1, random_subnets=1, seed=0), tmp_path)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "metrics.csv").exists()
    assert len(metrics) == 3 and metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[-1]["acc_largest"] > 0.5  # chance is 0.1


@pytest.mark.slow
def test_two_gloo_processes_train_one_model(tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    worker = Path(__file__).with_name("ddp_worker.py")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node=2",
            str(worker),
            str(tmp_path),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    a = torch.load(tmp_path / "rank0.pt", weights_only=True)
    b = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for name, t in a.items():
        if "running" in name or "num_batches" in name:
            continue  # batch-norm statistics are each rank's own, as in DDP without SyncBatchNorm
        torch.testing.assert_close(t, b[name], rtol=0, atol=0, msg=name)
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 8  # 256 images / (16 per rank x 2 ranks)
    assert ckpt["meta"]["mean"] and ckpt["meta"]["num_classes"] == 10
    assert len((tmp_path / "metrics.csv").read_text().splitlines()) == 2  # one header, one epoch, written once


def test_subnet_accuracy_is_cached_by_arch_string_and_checkpoint(tmp_path):
    from nas.supernet.accuracy import SubnetAccuracy
    from nas.supernet.train import evaluate

    data = small(digits(), 128)
    torch.manual_seed(0)
    net = OFASupernet(load_space(SPEC))
    arch = net.space.sample(__import__("numpy").random.default_rng(0))
    cache = tmp_path / "accuracy.jsonl"
    first = SubnetAccuracy(net, data, cache_path=cache, tag="step8")
    value = first(arch)
    assert value == evaluate(net, arch, data) and first.misses == 1
    again = SubnetAccuracy(net, data, cache_path=cache, tag="step8")
    assert again(net.space.from_str(net.space.to_str(arch))) == value and again.misses == 0 and again.hits == 1
    other = SubnetAccuracy(net, data, cache_path=cache, tag="step16")  # a later checkpoint: not the same weights
    other(arch)
    assert other.misses == 1 and len(cache.read_text().splitlines()) == 2


def test_checkpoint_records_normalisation_and_resolution(tmp_path):
    data = small(digits(), 64)
    net = OFASupernet(load_space(SPEC))
    train(net, data, TrainConfig(epochs=1, batch_size=32, random_subnets=0, seed=0), tmp_path)
    meta = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["meta"]
    assert meta["mean"] == list(data.mean) and meta["std"] == list(data.std)
    assert meta["resolutions"] == [32] and meta["num_classes"] == 10 and meta["format"] == "hwnas-supernet/1"


def test_a_batch_larger_than_the_training_split_is_refused_before_training(tmp_path):
    net = OFASupernet(load_space(SPEC))
    data = digits(32)
    with pytest.raises(ValueError, match=r"`1 <= train.batch_size <= \d+` must hold \(digits has \d+ training images"):
        train(net, data, TrainConfig(epochs=1, batch_size=5000), tmp_path)
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.slow
def test_a_kill_after_an_epochs_metrics_row_resumes_without_a_duplicate_row(tmp_path):
    import pandas as pd

    data = small(digits())  # 8 steps an epoch at batch 32
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, random_subnets=1, checkpoint_every=3, seed=1)
    try:  # killed at step 9: epoch 1's row is written, the last checkpoint is step 6's
        train(OFASupernet(load_space(SPEC)), data, cfg, tmp_path, progress=_stop_after(9))
    except _Stopped:
        pass
    assert pd.read_csv(tmp_path / "metrics.csv")["epoch"].tolist() == [1]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 6
    train(OFASupernet(load_space(SPEC)), data, cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert metrics["epoch"].tolist() == [1, 2] and metrics["step"].tolist() == [8, 16]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 16
