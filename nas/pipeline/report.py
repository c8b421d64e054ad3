"""The run's results: trials.csv, pareto.csv, pareto.png, predictor.png, result.json, best/, report.md."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nas.latency.calibration import feature_space
from nas.latency.features import features
from nas.metrics import rank_scores
from nas.plots import pyplot
from nas.rundir import PARETO, REPORT, TRIALS, RunDir
from nas.search import pareto_front


def _plot_pareto(df: pd.DataFrame, front: pd.DataFrame, budget: float, winner: dict | None, path: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.scatter(
        df["latency_ms"], df["accuracy"], s=10, alpha=0.35, color="tab:gray", label="candidates (predicted latency)"
    )
    ax.plot(front["latency_ms"], front["accuracy"], "-o", ms=4, color="tab:blue", label="front (predicted)")
    m = df.dropna(subset=["measured_ms"])
    ax.scatter(m["measured_ms"], m["accuracy"], marker="x", s=50, color="tab:red", label="measured on the device")
    ax.axvline(budget, color="black", ls="--", lw=1, label=f"budget {budget:.3g} ms")
    if winner:
        ax.scatter(
            [winner["measured_ms"]],
            [winner["accuracy"]],
            marker="*",
            s=220,
            color="gold",
            edgecolor="black",
            zorder=5,
            label="winner (measured)",
        )
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("validation top-1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_predictor(m: pd.DataFrame, path: Any) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(m["measured_ms"], m["latency_ms"], color="tab:red")
    lo = float(min(m["measured_ms"].min(), m["latency_ms"].min())) * 0.95
    hi = float(max(m["measured_ms"].max(), m["latency_ms"].max())) * 1.05
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title("latency predictor on the run's device")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


@dataclass
class Outcome:
    """What the search and verification phases found: every candidate, every device measurement of the run
    (arch -> ms), the budget in ms, and the winner (None when no candidate met the budget when measured)."""

    trials: list[dict]
    measured: dict[str, float]
    budget: float
    winner: dict | None


def write_results(
    run: RunDir, recipe: Any, device: Any, sn: Any, outcome: Outcome, predictor: tuple[Any, dict]
) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """trials.csv, pareto.csv, pareto.png, predictor.png; returns result.json's content (without export and
    quantization, which their phases add), the front, and the predictor's figures on every measured arch."""
    space, (pred, pred_meta) = sn.net.space, predictor
    trials, measured, budget, winner = outcome.trials, outcome.measured, outcome.budget, outcome.winner
    df = pd.DataFrame(trials).sort_values("trial")
    df["measured_ms"] = df["arch"].map(measured)
    df.to_csv(run / TRIALS, index=False)
    uniq = df.drop_duplicates("arch")
    front = uniq.iloc[pareto_front(uniq["accuracy"], uniq["latency_ms"])]
    front.to_csv(run / PARETO, index=False)
    _plot_pareto(uniq, front, budget, winner, run / "pareto.png")

    # every device measurement this run made, against the calibrated predictor
    names = sorted(measured)
    X, _ = features(space, [space.from_str(a) for a in names], feature_space(pred_meta, space))
    pm = pd.DataFrame({"arch": names, "measured_ms": [measured[a] for a in names], "latency_ms": pred.predict(X)})
    _plot_predictor(pm, run / "predictor.png")
    scores = rank_scores(pm["latency_ms"], pm["measured_ms"])

    val, test = sn.accuracy("val", bn_images=recipe.bn_images), sn.accuracy("test", bn_images=recipe.bn_images)
    test_data = getattr(sn.data, "test", None)
    subnets = {"largest": sn.net.largest(), "smallest": sn.net.smallest()}
    if winner:
        subnets["winner"] = space.from_str(winner["arch"])
    correct = None  # each subnet's answers per test image (a supernet's accuracy; they also fill `test`'s cache)
    if hasattr(test, "correct") and test_data is not None:
        correct = {k: test.correct(a) for k, a in subnets.items()}
    ends = {}
    for name in ("largest", "smallest"):
        s = space.to_str(subnets[name])
        ends[name] = {
            "arch": s,
            "val_top1": val(subnets[name]),
            "test_top1": test(subnets[name]),
            "measured_ms": measured.get(s),
        }
    result = {
        "device": device.spec,
        "fingerprint": device.fingerprint(),
        "budget_ms": budget,
        "objective": recipe.search.objective,
        "strategy": recipe.search.strategy,
        "trials": len(df),
        "distinct_archs": int(uniq["arch"].nunique()),
        "supernet": str(sn.path),
        "accuracy_source": getattr(sn, "path", None) if getattr(recipe, "accuracy", None) else None,
        "predictor": {
            "mape_percent": scores["mape"],
            "spearman": scores["spearman"],
            "measured": len(pm),
            "base": pred_meta.get("base"),
        },
        "largest": ends["largest"],
        "smallest": ends["smallest"],
        "winner": None,
    }
    if winner:
        result["winner"] = {
            "arch": winner["arch"],
            "val_top1": winner["accuracy"],
            "predicted_ms": winner["latency_ms"],
            "measured_ms": winner["measured_ms"],
            "test_top1": test(subnets["winner"]),
        }
    n_val = len(sn.data.val)
    result["val_images"] = n_val
    if winner:
        p = result["winner"]["val_top1"]
        result["val_resolution"] = float(200 * np.sqrt(max(p * (1 - p), 1 / n_val) / n_val))
    sources = getattr(test_data, "sources", None)
    result["separation"] = separation(result, len(test_data) if test_data is not None else n_val, correct, sources)
    return result, front, pm


def difference_resolution(a: float, b: float, n: int) -> float:
    """Two standard errors, in points, of the difference of two accuracies on `n` images, as if unpaired: the
    fallback when the images' answers are not at hand (an accuracy table)."""
    var = max(a * (1 - a), 1 / n) + max(b * (1 - b), 1 / n)
    return float(200 * np.sqrt(var / n))


def paired_resolution(a: np.ndarray, b: np.ndarray, sources: np.ndarray | None = None) -> dict[str, Any]:
    """Two standard errors, in points, of the difference of two classifiers' accuracies on the same images, from
    the images only one of them gets right (McNemar's discordant pairs), and its two-sided p-value (McNemar's
    exact test). With `sources` (several images made from one), the standard error and p are clustered by source
    image: four views of one digit are not four samples. At least two images: one image apart is never resolved."""
    from scipy.stats import binomtest, norm

    n = len(a)
    only_a, only_b = int((a & ~b).sum()), int((b & ~a).sum())
    if sources is None:
        var = max((only_a + only_b) / n - ((only_a - only_b) / n) ** 2, 1 / n) / n
        p = binomtest(only_a, only_a + only_b).pvalue if only_a + only_b else 1.0
    else:
        d = a.astype(float) - b.astype(float)
        per_source = np.bincount(np.unique(sources, return_inverse=True)[1], weights=d - d.mean())
        g = len(per_source)
        var = max(g / max(g - 1, 1) * float((per_source**2).sum()) / n**2, 1 / n**2)
        p = 2 * norm.sf(abs(d.mean()) / np.sqrt(var)) if only_a + only_b else 1.0
    return {"resolution": float(200 * np.sqrt(var)), "only_a": only_a, "only_b": only_b, "p": float(p)}


def separation(
    result: dict[str, Any],
    n_test: int,
    correct: dict[str, np.ndarray] | None = None,
    sources: np.ndarray | None = None,
) -> dict[str, Any]:
    """Whether the run's winner is a trade-off the test split can tell apart: more accurate than the smallest subnet
    by more than the split resolves, and measured faster than the largest; and whether the ends differ at all.
    With `correct` (each subnet's right answers per test image: largest, smallest, winner) the resolution is the
    paired one (`paired_resolution`, clustered by `sources`), else the unpaired `difference_resolution`."""
    big, small, w = result["largest"], result["smallest"], result["winner"]
    paired = correct is not None

    def compare(name: str, entry: dict[str, Any]) -> tuple[float, float, dict[str, Any]]:
        gain = 100 * (entry["test_top1"] - small["test_top1"])
        if not paired:
            return gain, difference_resolution(entry["test_top1"], small["test_top1"], n_test), {}
        pr = paired_resolution(correct[name], correct["smallest"], sources)
        extra = {"only_right": pr["only_a"], "only_smallest_right": pr["only_b"], "p": pr["p"]}
        return gain, pr["resolution"], extra

    ends_gap, ends_res, ends_extra = compare("largest", big)
    out = {"test_images": n_test, "paired": paired, "ends_gap_points": ends_gap, "ends_resolution_points": ends_res}
    if paired and sources is not None:
        out["test_sources"] = len(np.unique(sources))
    out.update({f"ends_{k}": v for k, v in ends_extra.items()})
    out["ends_separated"] = bool(ends_gap > ends_res)
    if w:
        gain, resolution, extra = compare("winner", w)
        faster = big.get("measured_ms") is not None and w["measured_ms"] < big["measured_ms"]
        out.update(
            winner_gain_points=gain,
            winner_resolution_points=resolution,
            winner_faster_than_largest=bool(faster),
            trade_off=bool(gain > resolution and faster),
        )
        out.update({f"winner_{k}": v for k, v in extra.items()})
    return out


def separation_line(r: dict[str, Any]) -> str | None:
    """One line when the task cannot separate the candidates (None when the winner is a real trade-off)."""
    s = r.get("separation")
    if not s or not r.get("winner") or s.get("trade_off"):
        return None
    if not s["ends_separated"]:
        return (
            f"This task cannot separate the candidates: the ends of the space differ by {s['ends_gap_points']:+.2f} "
            f"points on the test split, within the {s['ends_resolution_points']:.2f} points its {s['test_images']} "
            "images resolve; the winner is a candidate within the budget, not a trade-off found."
        )
    why = (
        f"{s['winner_gain_points']:+.2f} points over the smallest subnet on test, within the "
        f"{s['winner_resolution_points']:.2f} points {s['test_images']} images resolve"
        if s["winner_gain_points"] <= s["winner_resolution_points"]
        else "not measured faster than the largest subnet"
    )
    return f"The winner is not a trade-off the test split can tell apart: {why}."


def trade_off_line(r: dict[str, Any]) -> str | None:
    """One line saying what the test split shows of a winner that is a real trade-off (None otherwise)."""
    s = r.get("separation")
    if not s or not s.get("trade_off"):
        return None
    paired = ""
    if s.get("paired"):
        samples = f" counting the {s['test_sources']} source images as the samples" if s.get("test_sources") else ""
        paired = (
            f"; {s['winner_only_right']} test images only the winner gets right, {s['winner_only_smallest_right']} "
            f"only the smallest, p = {s['winner_p']:.2g}{samples or ' (McNemar)'}"
        )
    return (
        f"A real trade-off: {s['winner_gain_points']:+.2f} points over the smallest subnet on the test split, which "
        f"resolves {s['winner_resolution_points']:.2f} points{paired}; measured faster than the largest."
    )


def quantized_summary(qr: dict[str, Any], device: str, joint: bool, budget: float) -> dict[str, Any]:
    """result.json's `quantized` entry from `hwnas quantize`'s model.json."""
    chosen = next(c for c in qr["configs"] if c["config"] == qr["chosen"])
    return {
        **{k: qr[k] for k in ("chosen", "speedup_vs_fp32", "test_drop_points", "val_drop_points")},
        "int8_layers": sum(p == "int8" for p in qr["precision"].values()),
        "layers": len(qr["precision"]),
        "device": device,
        "latency_ms": chosen["latency_ms"],
        "test_top1": chosen["test_top1"],
        "val_top1": chosen["val_top1"],
        "int8_activations": qr.get("int8_activations"),
        "joint": joint,
        "within_budget": bool(chosen["latency_ms"] <= budget),
    }


def write_markdown(run: RunDir, result: dict[str, Any], recipe: Any, front: pd.DataFrame, pm: pd.DataFrame) -> None:
    (run / REPORT).write_text(_markdown(result, recipe, front, pm))


def _ms(v: float | None) -> str:
    return "not measured" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.3f} ms"


def _resolution(r: dict) -> str:
    """What the accuracy figures can tell apart: a table's own score, or the validation split's resolution."""
    if r.get("accuracy_source"):
        return (
            f"The table's accuracy is measured on {r.get('val_images', 0)} test images and is the search's own "
            "score (the table publishes no validation split): the winner is the most accurate architecture the "
            "search found within the budget, scored against the same table."
        )
    return (
        f"A validation split of {r.get('val_images', 0)} images resolves about "
        f"{r.get('val_resolution', float('nan')):.1f} "
        "points (two standard errors at this accuracy); candidates closer than that are a tie, and the best "
        "validation score among many candidates is optimistic, which is why the test split is reported."
    )


def _winner_lines(r: dict) -> list[str]:
    """The report's winner section: the winner, what the splits can tell apart, where it was exported."""
    w, big = r["winner"], r["largest"]
    if not w:
        return [
            "## Winner",
            "",
            "**No candidate met the budget when measured.** Raise the budget or search longer.",
            "",
        ]
    speed = big["measured_ms"] / w["measured_ms"] if big.get("measured_ms") else float("nan")
    verdict = separation_line(r) or trade_off_line(r)
    return [
        "## Winner",
        "",
        *([f"**{verdict}**", ""] if verdict else []),
        f"The most accurate candidate that meets the budget **when measured**: test top-1 "
        f"**{w['test_top1']:.4f}** (validation {w['val_top1']:.4f}), measured **{w['measured_ms']:.3f} ms** "
        f"(predicted {w['predicted_ms']:.3f} ms), {speed:.2f}x faster than the largest subnet.",
        "",
        _resolution(r),
        "",
        f"`{w['arch']}`",
        "",
        "Exported to `best/` (model.onnx, model.json with the input shape and normalisation).",
        "",
    ]


def _quantized_lines(r: dict, recipe: Any) -> list[str]:
    """The report's quantization section."""
    q = r["quantized"]
    lines = [
        "",
        "## Quantization",
        "",
        f"Per-layer precision within {recipe.quantize.tolerance} points: {q['int8_layers']} of {q['layers']} "
        "layers "
        f"in int8 (`{q['chosen']}`), {q['speedup_vs_fp32']:.2f}x the speed of fp32 on the device, test drop "
        f"{q['test_drop_points']:.2f} points. Deployed on `{q.get('device')}`: {_ms(q.get('latency_ms'))}, test "
        "top-1 "
        f"{q.get('test_top1', float('nan')):.4f}. See `quantized/` (model.onnx, model.json, quantize.png).",
    ]
    if q.get("joint"):
        lines += [
            "",
            "Joint search (`quantize.joint`): the search measured each candidate's uniform int8 deployment "
            f"(`{r['device']}`) and scored the validation accuracy of that deployment, so the budget and the "
            "accuracies "
            "above are after quantization.",
        ]
    return lines


def _markdown(r: dict, recipe: Any, front: pd.DataFrame, pm: pd.DataFrame) -> str:
    w, big, small = r["winner"], r["largest"], r["smallest"]
    lines = [
        "# hwnas run report",
        "",
        f"**Device:** `{r['device']}` "
        f"({r['fingerprint'].get('cpu_model') or r['fingerprint'].get('gpu') or 'unknown'}).  ",
        f"**Space:** `{recipe.space}`, "
        + (
            f"accuracy table `{recipe.accuracy}`.  "
            if getattr(recipe, "accuracy", None)
            else f"data `{recipe.data.name}`.  "
        ),
        f"**Budget:** {r['budget_ms']:.3f} ms per image (batch 1).  ",
        f"**Search:** {r['strategy']}, objective {r['objective']}, {r['trials']} candidates "
        f"({r['distinct_archs']} distinct), accuracy from "
        f"{r.get('accuracy_source') or 'the supernet (BN recalibrated)'}, latency from the "
        f"predictor calibrated on this device.",
        "",
    ]
    lines += _winner_lines(r)
    lines += [
        "## Against the ends of the space",
        "",
        "| subnet | test top-1 | val top-1 | measured |",
        "|---|---|---|---|",
    ]
    for name, e in (("largest", big), ("smallest", small)):
        lines.append(f"| {name} | {e['test_top1']:.4f} | {e['val_top1']:.4f} | {_ms(e['measured_ms'])} |")
    if w:
        lines.append(f"| **winner** | **{w['test_top1']:.4f}** | {w['val_top1']:.4f} | {_ms(w['measured_ms'])} |")
    if r.get("quantized"):
        lines += _quantized_lines(r, recipe)
    p = r["predictor"]
    lines += [
        "",
        "## Latency predictor",
        "",
        f"On the {p['measured']} architectures measured in this run (the front's candidates and the ends of the "
        f"space): MAPE {p['mape_percent']:.1f}%, Spearman {p['spearman']:.3f}. See `predictor.png`; "
        f"candidates that missed the budget when measured are not reported as meeting it.",
        "",
        "## Files",
        "",
        "`trials.csv` (every candidate), `pareto.csv`, `pareto.png`, `predictor.png`, "
        "`measured.csv` (every device measurement of the run, drift-corrected to one anchor) and `calibration.csv` "
        "(the references), `study.db` (the Optuna study), `best/`.",
        "",
    ]
    return "\n".join(lines)
