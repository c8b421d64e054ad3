"""`hwnas bench quantize`: fp32, uniform int8, Hessian-only and Hessian + inter-layer bisection,
the latency-aware search and HAWQ-V3's ILP, on three models, measured interleaved on one device; with
`--peer inc`, Intel Neural Compressor's accuracy-driven tuning of the same fp32 model in the same group.

The models are trained in the benchmark itself (a few CPU minutes at small resolution): a
MobileNetV2-like and a ResNet-like timm model, and, with --run, the winner of a hwnas run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

import devices
from nas.progress import Log
from nas.quantize import MixedPrecision, QuantizeConfig, QuantizeData
from nas.quantize.data import task_data

TIMM_MODELS = {"mobilenetv2": "mobilenetv2_050", "resnet": "resnet18"}
ROWS = (("hessian", "bisect"), ("interlayer", "bisect"), ("interlayer", "latency"), ("hessian", "ilp"))


def _task(data_spec: str, resolution: int) -> Any:
    from nas.recipes import DATASETS, DataConfig, load_data

    name, _, path = data_spec.partition(":")
    if name in ("cifar10", "cifar100") and not path:
        raise ValueError(f"--data {name} needs a path: {name}:/path/to/the/folder/with/the/binary/archive")
    if name not in DATASETS or name == "imagefolder":
        raise ValueError(f"--data must be digits, digits-hard, cifar10:PATH or cifar100:PATH, but got {data_spec!r}")
    return load_data(DataConfig(name=name, path=path or None, resolution=resolution))


def train_timm(name: str, data: Any, resolution: int, epochs: int, seed: int = 0, log: Log = print) -> torch.nn.Module:
    """A timm model trained from scratch on the task (SGD, cosine schedule, the task's augmentation)."""
    import timm

    from nas.data import batches, resize

    torch.manual_seed(seed)
    model = timm.create_model(TIMM_MODELS[name], num_classes=data.num_classes)
    steps = epochs * (len(data.train) // 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-5)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps, pct_start=0.15)
    t = time.time()
    for epoch in range(epochs):
        model.train()
        for x, y in batches(data.train, 64, seed * 1000 + epoch, data):
            opt.zero_grad()
            F.cross_entropy(model(resize(x, resolution)), y, label_smoothing=0.1).backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
    log(f"trained {name} ({TIMM_MODELS[name]}) for {epochs} epochs in {time.time() - t:.0f} s")
    return model.eval()


def parse_methods(text: str) -> tuple[tuple[str, str], ...]:
    """'hessian+bisect,interlayer+ilp' -> (("hessian", "bisect"), ("interlayer", "ilp")), each pair one of ROWS."""
    known = {f"{m}+{s}": (m, s) for m, s in ROWS}
    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(f"--methods must be a comma list of {', '.join(known)}, but got {text!r}")
    return tuple(known[n] for n in names)


def bench_one(
    label: str,
    model: torch.nn.Module,
    qd: QuantizeData,
    device: Any,
    out: Path,
    tolerance: float,
    log: Log = print,
    methods: tuple[tuple[str, str], ...] = ROWS,
    peer: str | None = None,
    groups: int = 5,
) -> tuple[list[dict], dict, list[dict]]:
    """One model's rows (every configuration; uniform int8 in each form), its predictor row, and with a peer the
    verdicts of `paired_groups`."""
    job = MixedPrecision(model, qd, device, out / label, QuantizeConfig(tolerance=tolerance), log=log)
    found, seconds = {}, {}
    for method, search in methods:
        t = time.time()
        found[f"{method}+{search}"] = job.select(search, method)
        seconds[f"{method}+{search}"] = time.time() - t
    peers, tuned = {}, {}
    if peer == "inc":
        from nas.bench.inc_quantize import inc_quantize

        job.prepare()
        log(f"{label}: Intel Neural Compressor's accuracy-driven tuning, tolerance {tolerance} points")
        tuned = inc_quantize(job.fp32_path, qd.calib, qd.val, tolerance, out / label / "inc.onnx")
        name = "inc" + (" (fp32 fallback)" if tuned["fallback_fp32"] else "")
        peers[name], seconds[name] = tuned["path"], tuned["seconds"]
    result = job.finish(found, peers)
    fp32 = result["configs"][0]
    rows = []
    for c in result["configs"]:
        row = {
            "model": label,
            "config": c["config"],
            "format": c["format"],
            "int8_layers": f"{c['int8_layers']}/{len(job.layers)}",
            "latency_ms": c["latency_ms"],
            "speedup": fp32["latency_ms"] / c["latency_ms"],
            "val_top1": c["val_top1"],
            "test_top1": c["test_top1"],
            "test_drop": 100 * (fp32["test_top1"] - c["test_top1"]),
            "within": c["within_tolerance"],
            "search_s": seconds.get(c["config"], 0.0),
            "chosen": c["config"] == result["chosen"] and not c["peer"],
            "peer": c["peer"],
            "tuning": f"{tuned['trials']} trials" if c["peer"] else "",
        }
        rows.append(row)
        if c["config"] == "int8":  # uniform int8 in every form, beside the form the row keeps
            for fmt, v in c["formats"].items():
                drop = 100 * (fp32["test_top1"] - v["test_top1"])
                speedup = fp32["latency_ms"] / v["latency_ms"]
                rows.append({**row, **v, "config": f"int8 ({fmt})", "format": fmt, "speedup": speedup})
                rows[-1].update(test_drop=drop, within=v["val_top1"] >= job.floor, chosen=False)
    verdicts = paired_groups(label, job, out / label / "model.onnx", peers, groups) if peers else []
    return rows, predictor_row(label, job), verdicts


def paired_groups(label: str, job: MixedPrecision, chosen: Path, peers: dict[str, Path], groups: int) -> list[dict]:
    """hwnas's chosen model against each peer's in `groups` more interleaved timing groups: per group the ratio, and
    the sign-test verdict of `nas.lm.verdicts.paired_verdict` (lower latency is better)."""
    from nas.lm.verdicts import paired_verdict

    times = job.measure_groups([chosen, *peers.values()], groups)
    return [
        {
            "model": label,
            "peer_name": name,
            "groups": groups,
            "hwnas_ms": times[:, 0].tolist(),
            "peer_ms": times[:, i + 1].tolist(),
            "verdict": paired_verdict(times[:, 0], times[:, i + 1]),
        }
        for i, name in enumerate(peers)
    ]


def predictor_row(label: str, job: MixedPrecision, fit: int = 10, test: int = 16) -> dict:
    """The precision-aware latency model (fitted on fp32, int8 and `fit` random configurations) against
    HAWQ-V3's additive per-layer table, on `test` other random configurations, all measured in one group."""
    from nas.metrics import mape
    from nas.quantize.latency import PrecisionLatency, additive, layer_profile, random_configs

    gains = job.layer_gains()
    configs = random_configs(job.layers, fit + test, seed=1)
    train, held = [set(), set(job.layers)] + configs[:fit], configs[fit:]
    times = job.measure(train + held)
    profile = layer_profile(job.model, job.layers, job.data.calib[0][0])
    model = PrecisionLatency(job.layers, profile, job.deployer.edges).fit(train, times[: len(train)])
    truth = times[len(train) :]
    return {
        "model": label,
        "layers": len(job.layers),
        "fit": len(train),
        "test": len(held),
        "additive_mape": mape(additive(times[0], gains, held), truth),
        "additive_measurements": len(job.layers) + 1,
        "precision_mape": mape(model.predict(held), truth),
        "spread": float(np.max(truth) / np.min(truth)),
    }


def bench_quantize(
    models: list[str],
    data_spec: str,
    resolution: int,
    epochs: int,
    device_spec: str,
    tolerance: float,
    out: str | Path,
    run: str | None = None,
    log: Log = print,
    methods: tuple[tuple[str, str], ...] = ROWS,
    peer: str | None = None,
    groups: int = 5,
) -> tuple[list[dict], list[dict], list[dict]]:
    """Rows, predictor rows and (with a peer) paired verdicts of every model: `bench_one` for each."""
    if peer is not None and peer != "inc":
        raise ValueError(f"Unknown peer {peer!r}; known: inc")
    if peer:
        from nas.bench.peers import need

        need(peer)  # before any model is trained
    out = Path(out)
    device = devices.get(device_spec)
    data = _task(data_spec, resolution)
    rows: list[dict] = []
    predictors: list[dict] = []
    verdicts: list[dict] = []

    def bench(label: str, model: torch.nn.Module, qd: QuantizeData) -> None:
        r, p, v = bench_one(label, model, qd, device, out, tolerance, log, methods, peer, groups)
        rows.extend(r)
        predictors.append(p)
        verdicts.extend(v)

    if run:
        from nas.pipeline.quantize import quantize_run_inputs

        model, qd, _ = quantize_run_inputs(run)
        bench("run-winner", model, qd)
    for name in models:
        bench(name, train_timm(name, data, resolution, epochs, log=log), task_data(data, resolution, 256))
    return rows, predictors, verdicts
