"""Supernet training: it learns, checkpoints, and a stopped run resumes exactly."""
from __future__ import annotations

import torch

from nas.data import Split, TaskData, digits
from nas.spaces import load_space
from nas.supernet import OFASupernet
from nas.supernet.train import TrainConfig, train

SPEC = "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"


def small(data: TaskData, n: int = 256) -> TaskData:
    cut = lambda s, k: Split(s.images[:k], s.labels[:k])  # noqa: E731
    return TaskData(data.name, cut(data.train, n), cut(data.val, 128), cut(data.test, 128), 10, data.mean, data.std)


def test_a_stopped_training_resumes_exactly(tmp_path):
    data = small(digits())
    space = load_space(SPEC)
    cfg = dict(batch_size=32, lr=0.05, random_subnets=1, checkpoint_every=3, seed=1)
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


def test_training_learns_digits(tmp_path):
    data = small(digits(), 512)
    torch.manual_seed(0)
    net = OFASupernet(load_space(SPEC))
    metrics = train(net, data, TrainConfig(epochs=3, batch_size=32, lr=0.1, random_subnets=1, seed=0), tmp_path)
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "metrics.csv").exists()
    assert len(metrics) == 3 and metrics[-1]["loss"] < metrics[0]["loss"]
    assert metrics[-1]["acc_largest"] > 0.5  # chance is 0.1
