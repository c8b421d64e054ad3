"""`hwnas bench joint RUN`: the joint architecture + precision search against searching in fp32 and
quantizing the winner afterwards, on one trained supernet and one budget on the deployed latency.

Both searches run the whole `hwnas run` pipeline on the run's supernet (predictor calibrated on ten
references, search, verification on the device, per-layer quantization of the winner within the
tolerance); they differ only in what a candidate is scored by: fp32 latency and accuracy, or its
uniform int8 deployment's latency and accuracy. The two deployed winners are finally
measured interleaved with the fp32 largest subnet, whose time in that group sets the budget they
are held to, so the comparison does not depend on when each pipeline ran (timings on a shared CPU
drift by 20% and more from one minute to the next)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

import devices
from nas.latency.profile import profile
from nas.latency.tables import read_latencies
from nas.pipeline.run import Pipeline
from nas.progress import Log
from nas.recipes import recipe_from_dict, to_dict
from nas.supernet.run import load_search_run

MODES = (("fp32 search, then quantize", False, "fp32_then_quantize"), ("joint search", True, "joint"))


def bench_joint(
    run_dir: str | Path,
    out: str | Path,
    budget_fraction: float = 0.6,
    trials: int | None = None,
    tolerance: float = 0.5,
    device: str | None = None,
    log: Log = print,
    progress: Any = None,
) -> tuple[list[dict], dict]:
    if not 0 < budget_fraction <= 1:
        raise ValueError(f"`0 < budget_fraction <= 1` must hold, but got budget_fraction={budget_fraction}")
    sn, _ = load_search_run(run_dir)
    raw = to_dict(sn.recipe)
    spec = device or raw["device"]
    base = devices.get(spec)
    space, largest = sn.net.space, sn.net.largest()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    profile(space, base, [largest], out / "largest.csv")
    largest_ms = read_latencies(out / "largest.csv")[space.to_str(largest)]
    budget = budget_fraction * largest_ms
    log(
        f"budget: {budget:.3f} ms on {spec}, deployed ({budget_fraction} of the largest subnet's fp32 "
        f"{largest_ms:.3f} ms)"
    )
    results = {
        label: _run_mode(label, raw, sn, spec, budget, trials, tolerance, joint, out / folder, log, progress)
        for label, joint, folder in MODES
    }
    deployed = {
        label: out / folder / "quantized" / "model.onnx"
        for label, _, folder in MODES
        if results[label].get("quantized")
    }
    # the arbiter: both deployed winners and the fp32 largest subnet in one interleaved group, so the
    # budget and the winners are measured in the same machine state
    shape = space.input_shape(largest)
    models = [sn.net.extract(largest).eval()] + [str(p) for p in deployed.values()]
    ms = [m.latency_ms for m in base.measure_many(models, [shape] * len(models))]
    final_budget = budget_fraction * ms[0]
    final = dict(zip(deployed, ms[1:]))
    log(f"final group: largest fp32 {ms[0]:.3f} ms, budget {final_budget:.3f} ms")
    rows = [_row(label, results[label], final.get(label), final_budget) for label, _, _ in MODES]
    info = {
        "budget_ms": budget,
        "largest_fp32_ms": largest_ms,
        "final_budget_ms": final_budget,
        "final_largest_fp32_ms": ms[0],
        "device": spec,
        "dataset": sn.data.name,
        "tolerance": tolerance,
        "test_images": len(sn.data.test),
    }
    (out / "bench_joint.json").write_text(json.dumps({"info": info, "rows": rows}, indent=2, default=str))
    return rows, info


def _run_mode(
    label: str,
    raw: dict,
    sn: Any,
    spec: str,
    budget: float,
    trials: int | None,
    tolerance: float,
    joint: bool,
    run: Path,
    log: Log,
    progress: Any,
) -> dict:
    """One mode's whole run on the shared supernet and budget, its recipe written beside it."""
    recipe = {
        **raw,
        "device": spec,
        "supernet": str(sn.path),
        "budget_ms": budget,
        "budget_fraction": None,
        "search": {**raw["search"], **({"trials": trials} if trials else {})},
        "quantize": {**raw["quantize"], "enabled": True, "joint": joint, "tolerance": tolerance},
    }
    log(f"{label}: {run}")
    run.mkdir(parents=True, exist_ok=True)
    (run / "bench_recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return Pipeline(recipe_from_dict(recipe, str(run / "bench_recipe.yaml")), run, log=log, progress=progress).execute()


def _row(label: str, r: dict, deployed_ms: float | None, final_budget: float) -> dict:
    """A mode's row: its winner, the precision it deployed, and the final group's time against the budget."""
    w, q = r.get("winner") or {}, r.get("quantized") or {}
    return {
        "mode": label,
        "arch": w.get("arch"),
        "search_device": r["device"],
        "search_ms": w.get("measured_ms"),
        "search_val_top1": w.get("val_top1"),
        "config": q.get("chosen"),
        "int8_layers": f"{q.get('int8_layers', 0)}/{q.get('layers', 0)}",
        "deployed_ms": deployed_ms,
        "within_budget": deployed_ms is not None and deployed_ms <= final_budget,
        "test_top1": q.get("test_top1"),
        "fp32_test_top1": w.get("test_top1"),
    }
