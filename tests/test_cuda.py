"""The CUDA paths, ready for a GPU node (`python -m pytest -m cuda`): torch-cuda timing with events and CUDA graphs,
supernet training in bf16, torchrun with NCCL, the hybrid proxy and train-lm on CUDA, TensorRT export. Each skips
with its reason where there is no GPU (or no TensorRT); each uses small shapes and runs in under a minute."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import devices
from nas.data import Split, TaskData, digits
from search_spaces import load_space

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

TINY_OFA = "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"
FAST = devices.TimingPolicy(warmup_runs=3, warmup_seconds=0.05, runs_per_round=5, min_rounds=3, max_rounds=6)


def _net(width: int) -> torch.nn.Module:
    return torch.nn.Sequential(
        *[torch.nn.Sequential(torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU()) for _ in range(6)]
    )


def _small_digits() -> TaskData:
    d = digits()
    cut = lambda s, k: Split(s.images[:k], s.labels[:k])
    return TaskData(d.name, cut(d.train, 256), cut(d.val, 128), cut(d.test, 128), 10, d.mean, d.std)


@pytest.mark.parametrize("spec", ["torch-cuda", "torch-cuda:graphs=true", "torch-cuda:fp16=true", "ort-cuda"])
def test_cuda_devices_time_more_work_as_slower(spec):
    if spec == "ort-cuda":
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            pytest.skip("onnxruntime has no CUDA execution provider here")
    dev = devices.get(spec)
    small, large = (dev.measure(_net(c), (1, c, 64, 64), policy=FAST) for c in (8, 128))
    assert 0 < small.latency_ms < large.latency_ms and small.p10_ms <= small.median_ms <= small.p90_ms
    assert dev.fingerprint()["gpu"]


def test_supernet_training_in_bf16_on_cuda_learns_and_checkpoints(tmp_path):
    import pandas as pd

    from nas.supernet.train import TrainConfig, train
    from search_spaces.ofa_mbv3 import OFASupernet

    net = OFASupernet(load_space(TINY_OFA))
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.1, random_subnets=1, seed=0, device="cuda", amp=True)
    train(net, _small_digits(), cfg, tmp_path)
    metrics = pd.read_csv(tmp_path / "metrics.csv")
    assert np.isfinite(metrics.filter(like="loss").to_numpy()).all()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["step"] == 16 and all(t.dtype != torch.bfloat16 for t in state["model"].values())


def test_torchrun_with_nccl_trains_one_model(tmp_path):
    worker = Path(__file__).parent / "nas" / "supernet" / "ddp_worker.py"
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(worker)]
        + [str(tmp_path), "cuda"],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["step"] == 16  # 256 images / 16


def test_the_hybrid_proxy_trains_on_cuda():
    from nas.lm.proxy import TextData, load_text, train_proxy
    from nas.recipes import ProxyConfig

    space = load_space("hybrid_lm:dims=[32],heads=[2],max_blocks=4,window=8")
    model = space.build(space.from_str("d32h2f2/attn+mamba2@1:1,f1,x1/-/-"))
    data = TextData.from_bytes(load_text())
    score = train_proxy(model, data, ProxyConfig(steps=20, batch=8, seq_len=32, val_windows=4, device="cuda"))
    assert np.isfinite(score["val_bpb"]) and next(model.parameters()).device.type == "cpu"


def test_train_lm_on_cuda_writes_a_checked_onnx(tmp_path):
    from nas.cli.main import main

    argv = ["train-lm", "--arch", "d32h2f2/attn+mamba2@1:1,f1,x1/-/-", "--space"]
    argv += ["hybrid_lm:dims=[32],heads=[2],max_blocks=4,window=8", "--steps", "20", "--batch", "8"]
    argv += ["--seq-len", "32", "--eval-every", "10", "--val-windows", "4", "--device", "cuda", "--out", str(tmp_path)]
    assert main(argv) == 0
    card = json.loads((tmp_path / "model.json").read_text())
    assert card["onnxruntime_matches"] and card["check"]["onnxruntime"]["max_rel_diff"] <= 1e-3


@pytest.mark.skipif(
    importlib.util.find_spec("tensorrt") is None, reason="TensorRT is not installed (pip install tensorrt)"
)
def test_tensorrt_export_is_checked_against_pytorch(tmp_path):
    from nas.export import ExportConfig, export_model

    space = load_space(TINY_OFA)
    arch = space.sample(np.random.default_rng(0))
    model = space.build(arch).eval()
    inputs = torch.randn(4, 3, 32, 32)
    meta = export_model(model, (1, 3, 32, 32), tmp_path, {"arch": space.to_str(arch)}, inputs, ExportConfig("tensorrt"))
    assert (tmp_path / "model.engine").exists() and meta["check"]["tensorrt"]["max_rel_diff"] <= 1e-3
