"""`hwnas run` for the hybrid_lm space: aging evolution over hybrid stacks, each candidate scored by
short proxy training (validation bits per byte) and by its per-token decode latency measured on the
device at a fixed context; the budget is a fraction of the all-attention baseline's decode time.

Everything is written as it is made (`proxy.jsonl`, `measured.csv`, the Optuna study), so a run
that is stopped resumes where it was."""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import yaml

import devices
from nas.profile import read_latencies
from nas.recipes import _fill, check_budget_and_search
from nas.search import Objective, completed, pareto_front, run_search
from nas.search.study import SearchConfig
from nas.spaces import load_space

Log = Callable[[str], None]
BITS = 8.0  # the search maximises BITS - bits per byte: the bits a model saves per byte over uniform guessing


@dataclass
class ProxyConfig:
    steps: int = 80
    batch: int = 16
    seq_len: int = 64
    lr: float = 3e-3
    text: str | None = None
    val_windows: int = 32
    seed: int = 0
    device: str = "cpu"  # or cuda


@dataclass
class DecodeConfig:
    context: int = 1024
    batch: int = 1


@dataclass
class HybridSearchConfig(SearchConfig):
    trials: int = 60
    population: int = 16


@dataclass
class HybridRecipe:
    space: str = "hybrid_lm:dims=[64,96,128],max_blocks=8"
    device: str = "ort-cpu:threads=1"
    decode: DecodeConfig = field(default_factory=DecodeConfig)
    proxy: ProxyConfig = field(default_factory=ProxyConfig)
    baseline: str = "d128h4f3/attn,f1,x2/attn,f1,x2/-"
    budget_ms: float | None = None
    budget_fraction: float | None = None  # 0.7 when no budget is given
    search: HybridSearchConfig = field(default_factory=HybridSearchConfig)


def is_hybrid_recipe(raw: Any) -> bool:
    return isinstance(raw, dict) and str(raw.get("space", "")).startswith("hybrid_lm")


def hybrid_recipe_from_dict(raw: Any, source: str) -> HybridRecipe:
    recipe = _fill(HybridRecipe, raw, "", source)
    check_budget_and_search(recipe, source)
    if recipe.budget_ms is None and recipe.budget_fraction is None:
        recipe.budget_fraction = 0.7
    for name in ("steps", "batch", "seq_len"):
        if getattr(recipe.proxy, name) < 1:
            raise ValueError(f"{source}: proxy.{name} must be at least 1, but got {getattr(recipe.proxy, name)}")
    if recipe.proxy.device != "cpu" and not recipe.proxy.device.startswith("cuda"):
        raise ValueError(f"{source}: proxy.device must be cpu or cuda[:N], but got {recipe.proxy.device!r}")
    if recipe.decode.context < 1 or recipe.decode.batch < 1:
        raise ValueError(f"{source}: decode.context and decode.batch must be at least 1")
    try:
        space = load_space(recipe.space)
        space.from_str(recipe.baseline)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return recipe


def matched_model(model: Any, mixer: str) -> Any:
    """`model` (a HybridLM) with every mixer made `mixer`, the FFN hidden size chosen to match its parameter count."""
    import torch

    from search_spaces import count_params
    from search_spaces.hybrid_lm.model import MIXERS, HybridLM

    if mixer not in MIXERS:
        raise ValueError(f"Unknown mixer {mixer!r}; known: {', '.join(MIXERS)}")
    kinds = [k if k == "ffn" else mixer for k in model.kinds]
    ffns, ratio = kinds.count("ffn"), model.ffn_ratio
    if ffns:
        hidden = int(model.dim * ratio)
        with torch.random.fork_rng(devices=[]):  # the weights depend on the seed the caller set, not on this trial build
            trial = HybridLM(kinds, model.dim, model.heads, ratio, model.window)
        hidden = max(1, round(hidden + (count_params(model) - count_params(trial)) / (3 * model.dim * ffns)))  # SwiGLU: 3 x dim x hidden
        ratio = (hidden + 0.5) / model.dim
    return HybridLM(kinds, model.dim, model.heads, ratio, model.window)


def build_key(space: Any, key: str) -> Any:
    """The network of a space string, or of `STRING|MIXER-only`: its blocks' mixers all made MIXER, at the
    same width, heads and depth, with the FFNs' hidden size set so the parameter count is the original's
    (as close as whole units allow; unchanged where there are no FFNs)."""
    text, _, variant = key.partition("|")
    arch = space.from_str(text)
    if not variant:
        return space.build(arch)
    if not variant.endswith("-only"):
        raise ValueError(f"unknown variant {variant!r} of {text!r}; known: MIXER-only")
    import torch

    with torch.random.fork_rng(devices=[]):  # the weights depend on the seed the caller set, not on this build
        original = space.build(arch)
    return matched_model(original, variant.removesuffix("-only"))


def compared_keys(arch: str) -> list[tuple[str, str]]:
    """(model, key) of `arch` and of its parameter-matched all-attention and all-Mamba2 baselines."""
    return [("found", arch), ("all-attn", f"{arch}|attn-only"), ("all-mamba2", f"{arch}|mamba2-only")]


def sign_threshold(n: int, alpha: float = 0.05) -> int:
    """The fewest of `n` pairs that must agree for a one-sided sign test at level `alpha` (all `n` where even
    that is not significant, as for n < 5)."""
    tail = lambda k: sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n  # noqa: E731
    return next((k for k in range(n + 1) if tail(k) <= alpha), n)


def paired_verdict(found: Sequence[float], other: Sequence[float]) -> str:
    """Lower is better, compared pair by pair (seeds, timing groups): `better` where the found model is lower in
    enough pairs for a sign test at 5% (in every pair when there are fewer than 8), `worse` where it is higher in
    as many, else `tie`."""
    diffs = [a - b for a, b in zip(found, other, strict=True)]
    need = max(1, sign_threshold(len(diffs)))
    if sum(d < 0 for d in diffs) >= need:
        return "better"
    if sum(d > 0 for d in diffs) >= need:
        return "worse"
    return "tie"


def overall(verdicts: Sequence[str]) -> str:
    """Per-figure `paired_verdict`s in one word: dominates (better in one, worse in none), dominated, equal or trade-off."""
    better, worse = "better" in verdicts, "worse" in verdicts
    if better and worse:
        return "trade-off"
    return "dominates" if better else "dominated" if worse else "equal"


def dominance(a: tuple[float, ...], b: tuple[float, ...]) -> str:
    """How `a` compares with `b` where lower is better in every figure: dominates, dominated, equal or trade-off."""
    return overall([paired_verdict([x], [y]) for x, y in zip(a, b)])


def _read_jsonl(path: Path, seed: int) -> dict[tuple[str, int], dict]:
    """Proxy scores by (key, seed); rows without a seed were trained with the recipe's `seed`."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            out[row["arch"], int(row.get("seed", seed))] = row
    return out


class HybridRun:
    """One hybrid_lm run directory."""

    def __init__(self, recipe: HybridRecipe, run_dir: str | Path, log: Log = print, progress: Any = None) -> None:
        self.recipe, self.run, self.log, self.progress = recipe, Path(run_dir), log, progress
        self.run.mkdir(parents=True, exist_ok=True)
        self.space = load_space(recipe.space)
        self.device = devices.get(recipe.device)
        self.proxy_path, self.measured_path = self.run / "proxy.jsonl", self.run / "measured.csv"
        self._proxy = _read_jsonl(self.proxy_path, recipe.proxy.seed)
        self._measured = read_latencies(self.measured_path)
        from nas.lm_proxy import TextData, load_text

        self.data = TextData.from_bytes(load_text(recipe.proxy.text))

    # ---- scores ------------------------------------------------------------------------------
    def model(self, key: str) -> Any:
        return build_key(self.space, key)

    def is_hybrid(self, key: str) -> bool:
        """Whether the architecture `key` (a space string) mixes two or more mixer types."""
        return len(set(self.space.blocks(self.space.from_str(key))) - {"ffn"}) > 1

    def bpb(self, key: str, seed: int | None = None) -> float:
        """Validation bits per byte after the recipe's proxy training, with its seed or `seed` (cached per key and seed)."""
        return float(self._proxy_row(key, seed)["val_bpb"])

    def trained(self, key: str, seed: int | None = None) -> bool:
        return (key, self.recipe.proxy.seed if seed is None else seed) in self._proxy

    def _proxy_row(self, key: str, seed: int | None = None) -> dict[str, Any]:
        from nas.lm_proxy import train_proxy
        from search_spaces import count_params

        p = self.recipe.proxy
        seed = p.seed if seed is None else seed
        if (key, seed) not in self._proxy:
            import torch

            torch.manual_seed(seed)  # the same initial weights for the same key and seed, whatever ran before
            model = self.model(key)
            r = train_proxy(model, self.data, p.steps, p.batch, p.seq_len, p.lr, seed, p.val_windows, device=p.device)
            row = {"arch": key, "seed": seed, "val_bpb": r["val_bpb"], "final_train_loss": float(np.mean(r["train_loss"][-10:])),
                   "params": count_params(model)}
            with self.proxy_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
            self._proxy[key, seed] = row
        return self._proxy[key, seed]

    def decode_ms(self, keys: list[str]) -> dict[str, float]:
        """Per-token decode latency at the recipe's context, measured interleaved (cached per key)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._measured]
        if todo:
            d = self.recipe.decode
            new = pd.DataFrame({"arch": todo, "latency_ms": list(self.decode_group(todo).values()), "context": d.context,
                                "batch": d.batch, "device": self.device.spec})
            new.to_csv(self.measured_path, mode="a", header=not self.measured_path.exists(), index=False)
            self._measured.update(zip(new["arch"], new["latency_ms"]))
        return {k: float(self._measured[k]) for k in keys}

    def compared(self, arch: str, groups: Sequence[dict[str, float]], seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
        """`arch` and its baselines (`compared_keys`): params, bits per byte (the mean over `seeds`, by default the
        recipe's; trained where not cached), decode ms (the median of the timing `groups`, each a dict of key -> ms),
        and the found model's verdict against each baseline: per figure a `paired_verdict` (by seed, by group), and
        `overall` in `found_vs_this`."""
        seeds = list(seeds or [self.recipe.proxy.seed])
        keys = compared_keys(arch)
        bpbs = {k: [self.bpb(k, s) for s in seeds] for _, k in keys}
        times = {k: [g[k] for g in groups] for _, k in keys}
        lower = lambda a, b: sum(x < y for x, y in zip(a, b))  # noqa: E731
        found = keys[0][1]
        rows = []
        for name, k in keys:
            row = {"model": name, "arch": k, "params": int(self._proxy_row(k)["params"]), "val_bpb": float(np.mean(bpbs[k])),
                   "decode_ms": float(np.median(times[k])), "seeds": len(seeds), "groups": len(groups)}
            if k != found:
                bpb, ms = paired_verdict(bpbs[found], bpbs[k]), paired_verdict(times[found], times[k])
                row.update(found_vs_this=overall([bpb, ms]), bpb=bpb, decode=ms,
                           evidence=f"bpb {bpb} (lower in {lower(bpbs[found], bpbs[k])}/{len(seeds)} seeds), decode {ms} "
                                    f"(faster in {lower(times[found], times[k])}/{len(groups)} groups)")
            rows.append(row)
        return rows

    def decode_group(self, keys: list[str]) -> dict[str, float]:
        """Per-token decode latency of `keys` measured afresh in one interleaved group (for a fair comparison)."""
        from search_spaces.hybrid_lm.model import DecodeStep

        d = self.recipe.decode
        steps = [DecodeStep(self.model(k).eval(), d.batch, d.context) for k in keys]
        return {k: m.latency_ms for k, m in zip(keys, self.device.measure_many(steps, [(d.batch, 1)] * len(keys), keys))}

    def check_resumable(self) -> None:
        """A run resumes only with the settings its cached scores were made with (the search's may change)."""
        path = self.run / "recipe.yaml"
        if not path.exists():
            return
        old, new = yaml.safe_load(path.read_text()) or {}, dataclasses.asdict(self.recipe)
        for name in ("space", "device", "decode", "proxy", "baseline"):
            if name in old and old[name] != new[name]:
                raise ValueError(f"{path}: this run was made with {name}={old[name]!r}, but the recipe says {new[name]!r}; "
                                 "its cached scores would not match (use another --out)")

    # ---- phases ------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        r, space = self.recipe, self.space
        self.check_resumable()
        (self.run / "recipe.yaml").write_text(yaml.safe_dump(dataclasses.asdict(r), sort_keys=False))
        base_ms = self.decode_ms([r.baseline])[r.baseline]
        budget = r.budget_ms or r.budget_fraction * base_ms
        self.log(f"budget: {budget:.3f} ms per token at context {r.decode.context} on {self.device.spec} "
                 f"(the all-attention baseline {r.baseline} decodes in {base_ms:.3f} ms)")
        objective = Objective(r.search.objective, budget_ms=budget, w=r.search.soft_w)
        storage = r.search.storage or f"sqlite:///{(self.run / 'study.db').resolve()}"

        def evaluate(arch: tuple) -> tuple[float, float]:
            """Decode time first: under a hard budget a candidate over it ranks by its time alone, so it is not trained."""
            key = space.to_str(arch)
            ms = self.decode_ms([key])[key]
            if objective.kind == "budget" and not objective.feasible(ms):
                return float("nan"), ms
            return BITS - self.bpb(key), ms

        import contextlib

        self.log(f"search: {r.search.strategy}, {r.search.trials} candidates, proxy {r.proxy.steps} steps, study in {storage}")
        with (self.progress("searching") if self.progress else contextlib.nullcontext(None)) as update:
            study = run_search(space, evaluate, objective, r.search, storage, progress=update)
        trials = pd.DataFrame(completed(study))
        trials["val_bpb"] = BITS - trials["accuracy"]  # empty where the candidate missed the budget and was not trained
        trials.to_csv(self.run / "trials.csv", index=False)
        scored = trials.dropna(subset=["val_bpb"])
        front = scored.iloc[pareto_front(scored["accuracy"], scored["latency_ms"])]
        front.to_csv(self.run / "pareto.csv", index=False)
        feasible = scored[scored["latency_ms"] <= budget]
        winner = feasible.sort_values("val_bpb").iloc[0].to_dict() if len(feasible) else None
        result: dict[str, Any] = {"space": space.spec, "device": self.device.spec, "fingerprint": self.device.fingerprint(),
                                  "budget_ms": budget, "baseline": {"arch": r.baseline, "decode_ms": base_ms},
                                  "decode": dataclasses.asdict(r.decode), "proxy": dataclasses.asdict(r.proxy),
                                  "trials": len(trials), "distinct": int(trials["arch"].nunique()),
                                  "trained": int(scored["arch"].nunique()), "winner": None, "compared": []}
        if winner is not None:
            key = winner["arch"]
            self.log("compare: the winner against all-attention and all-Mamba2 stacks of its depth and parameter count")
            result["compared"] = self.compared(key, [self.decode_group([k for _, k in compared_keys(key)])])
            result["winner"] = {"arch": key, "val_bpb": winner["val_bpb"], "decode_ms": winner["latency_ms"],
                                "params": space.params(space.from_str(key)), "export": self.export(space.from_str(key))}
        (self.run / "result.json").write_text(json.dumps(result, indent=2, default=float))
        self.plot(trials, front, budget, result)
        self.write_report(result)
        return result

    def export(self, arch: tuple) -> dict[str, Any]:
        """The winner trained as the proxy trained it (same seed and steps), its weights and its ONNX at
        the proxy's sequence length, checked against PyTorch with onnxruntime."""
        import torch

        from nas.lm_proxy import train_proxy
        from nas.lm_train import export_checked

        out = self.run / "best"
        out.mkdir(exist_ok=True)
        p = self.recipe.proxy
        torch.manual_seed(p.seed)
        model = self.space.build(arch)
        trained = train_proxy(model, self.data, p.steps, p.batch, p.seq_len, p.lr, p.seed, p.val_windows, device=p.device)
        model.eval()
        torch.save(model.state_dict(), out / "weights.pt")
        meta = export_checked(model, self.space, self.space.to_str(arch), self.data, p.seq_len, out)
        meta.update({"val_bpb": trained["val_bpb"], "trained_steps": p.steps})
        (out / "model.json").write_text(json.dumps(meta, indent=2))
        return meta

    def plot(self, trials: pd.DataFrame, front: pd.DataFrame, budget: float, result: dict[str, Any]) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 4.5))
        ax.scatter(trials["latency_ms"], trials["val_bpb"], s=12, alpha=0.5, label="candidates")  # untrained ones have no bpb
        ax.plot(front["latency_ms"], front["val_bpb"], "k.-", label="front")
        ax.axvline(budget, color="r", ls="--", label=f"budget {budget:.2f} ms")
        for row in result["compared"]:
            ax.scatter([row["decode_ms"]], [row["val_bpb"]], marker="*" if row["model"] == "found" else "s", s=90,
                       label=f"{row['model']}")
        ax.set_xlabel(f"decode ms per token at context {self.recipe.decode.context} ({self.device.spec})")
        ax.set_ylabel("validation bits per byte (lower is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.run / "pareto.png", dpi=120)
        plt.close(fig)

    def write_report(self, result: dict[str, Any]) -> None:
        lines = [f"# hybrid_lm run: {self.run.name}", "",
                 f"Device `{result['device']}`; decode at context {result['decode']['context']}, batch {result['decode']['batch']}; "
                 f"budget {result['budget_ms']:.3f} ms per token ({self.recipe.budget_fraction or 'fixed'} x the all-attention "
                 f"baseline `{result['baseline']['arch']}`, {result['baseline']['decode_ms']:.3f} ms); proxy: "
                 f"{result['proxy']['steps']} steps of batch {result['proxy']['batch']} x {result['proxy']['seq_len']} bytes on "
                 f"{result['proxy']['text'] or 'pydoc topics'}; {result['trials']} candidates ({result['distinct']} distinct, "
                 f"{result['trained']} within the budget and trained).", ""]
        if result["winner"] is None:
            lines.append("No candidate met the budget.")
        else:
            lines += ["| model | arch | params | val bits/byte | decode ms/token | the found model against it |",
                      "|---|---|---|---|---|---|"]
            lines += [f"| {r['model']} | `{r['arch']}` | {r['params']:,} | {r['val_bpb']:.3f} | {r['decode_ms']:.3f} | "
                      f"{r.get('found_vs_this', '')} |" for r in result["compared"]]
            lines += ["", "Baselines: the winner with every mixer made attention / Mamba2 (same width, heads and depth; the FFNs' "
                      "hidden size set to match the winner's parameter count where it has FFNs); the three decode times are "
                      "measured afresh in one interleaved group. One seed and one group: the winner was picked as the best of many noisy "
                      "scores, so check it with `hwnas bench hybrid --run RUN --seeds 3 --groups 7` (a sign test over seeds and groups).",
                      "", "![front](pareto.png)"]
        (self.run / "report.md").write_text("\n".join(lines) + "\n")
