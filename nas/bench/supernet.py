"""`hwnas bench supernet`: the cost of weight sharing per training step, and what a trained run reaches."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from nas.data import batches, digits
from nas.supernet.train import TrainConfig, sandwich_step
from search_spaces import load_space


def _timed(step: Any) -> float:
    t = time.perf_counter()
    step()
    return time.perf_counter() - t


def bench_throughput(
    space_spec: str, batch_size: int = 64, rounds: int = 10, seed: int = 0, device: str = "cpu"
) -> list[dict]:
    """Images per second of one training step (forward, backward, SGD), interleaved round by round:
    the largest subnet as a standalone timm model, the same subnet inside the supernet, and the
    whole sandwich step (largest + smallest + 2 random subnets, counted per subnet pass)."""
    torch.manual_seed(seed)
    data = digits(max(load_space(space_spec).resolutions))
    net = load_space(space_spec).supernet(num_classes=data.num_classes).to(device)
    standalone = net.extract(net.largest()).to(device).train()
    x, y = next(batches(data.train, batch_size, seed, data))
    x, y = x.to(device), y.to(device)
    opt_net = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    opt_alone = torch.optim.SGD(standalone.parameters(), lr=0.01, momentum=0.9)
    config = TrainConfig(random_subnets=2)
    rng = np.random.default_rng(seed)

    def plain() -> None:
        opt_alone.zero_grad()
        F.cross_entropy(standalone(x), y).backward()
        opt_alone.step()

    def shared_largest() -> None:
        opt_net.zero_grad()
        net.set_active(net.largest())
        F.cross_entropy(net(x), y).backward()
        opt_net.step()

    def sandwich() -> None:
        opt_net.zero_grad()
        sandwich_step(net, x, y, rng, config)
        opt_net.step()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    steps = {
        "standalone largest (timm)": plain,
        "supernet, largest active": shared_largest,
        "supernet sandwich step": sandwich,
    }
    times: dict[str, list[float]] = {k: [] for k in steps}
    for r in range(rounds + 2):
        for name, fn in steps.items():
            t = _timed(lambda: (fn(), sync()))
            if r >= 2:
                times[name].append(t)
    base = float(np.median(times["standalone largest (timm)"]))
    rows = []
    for name, ts in times.items():
        t = float(np.median(ts))
        passes = 2 + config.random_subnets if "sandwich" in name else 1
        rows.append(
            {
                "step": name,
                "ms": t * 1000,
                "images_per_s": batch_size / t,
                "passes": passes,
                "ms_per_pass": t * 1000 / passes,
                "vs_standalone": t / passes / base,
            }
        )
    return rows


def bench_accuracy(run_dir: str) -> list[dict]:
    """Test top-1 of the largest and smallest subnets of a trained run (BN recalibrated)."""
    from nas.supernet.run import load_supernet_run

    run = load_supernet_run(run_dir)
    acc = run.accuracy("test")
    return [
        {"subnet": name, "arch": run.net.space.to_str(a), "test_top1": acc(a)}
        for name, a in (("largest", run.net.largest()), ("smallest", run.net.smallest()))
    ]
