"""The hybrid run's front plot (pareto.png) and report.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from nas.plots import pyplot
from nas.recipes import HybridRecipe


def plot_front(
    run: Path,
    recipe: HybridRecipe,
    device_spec: str,
    trials: pd.DataFrame,
    front: pd.DataFrame,
    budget: float,
    result: dict[str, Any],
) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    # candidates over the budget were not trained and have no bits per byte
    ax.scatter(trials["latency_ms"], trials["val_bpb"], s=12, alpha=0.5, label="candidates")
    ax.plot(front["latency_ms"], front["val_bpb"], "k.-", label="front")
    ax.axvline(budget, color="r", ls="--", label=f"budget {budget:.2f} ms")
    for row in result["compared"]:
        ax.scatter(
            [row["decode_ms"]],
            [row["val_bpb"]],
            marker="*" if row["model"] == "found" else "s",
            s=90,
            label=f"{row['model']}",
        )
    ax.set_xlabel(f"decode ms per token at context {recipe.decode.context} ({device_spec})")
    ax.set_ylabel("validation bits per byte (lower is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(run / "pareto.png", dpi=120)
    plt.close(fig)


def write_report(run: Path, recipe: HybridRecipe, result: dict[str, Any]) -> None:
    lines = [
        f"# hybrid_lm run: {run.name}",
        "",
        f"Device `{result['device']}`; decode at context {result['decode']['context']}, batch "
        f"{result['decode']['batch']}; "
        f"budget {result['budget_ms']:.3f} ms per token ({recipe.budget_fraction or 'fixed'} x the all-attention "
        f"baseline `{result['baseline']['arch']}`, {result['baseline']['decode_ms']:.3f} ms); proxy: "
        f"{result['proxy']['steps']} steps of batch {result['proxy']['batch']} x {result['proxy']['seq_len']} bytes on "
        f"{result['proxy']['text'] or 'pydoc topics'}; {result['trials']} candidates ({result['distinct']} distinct, "
        f"{result['trained']} within the budget and trained).",
        "",
    ]
    if result["winner"] is None:
        lines.append("No candidate met the budget.")
    else:
        lines += [
            "| model | arch | params | val bits/byte | decode ms/token | the found model against it |",
            "|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['model']} | `{r['arch']}` | {r['params']:,} | {r['val_bpb']:.3f} | {r['decode_ms']:.3f} | "
            f"{r.get('found_vs_this', '')} |"
            for r in result["compared"]
        ]
        lines += [
            "",
            "Baselines: the winner with every mixer made attention / Mamba2 (same width, heads and depth; the FFNs' "
            "hidden size set to match the winner's parameter count where it has FFNs); the three decode times are "
            "measured afresh in one interleaved group. One seed and one group: the winner was picked as the best of "
            "many noisy "
            "scores, so check it with `hwnas bench hybrid --run RUN --seeds 3 --groups 7` (a sign test over seeds and "
            "groups).",
            "",
            "![front](pareto.png)",
        ]
    (run / "report.md").write_text("\n".join(lines) + "\n")
