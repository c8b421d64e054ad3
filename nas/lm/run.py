"""`hwnas run` for the hybrid_lm space: aging evolution over hybrid stacks, each candidate scored by
short proxy training (validation bits per byte) and by its per-token decode latency measured on the
device at a fixed context; the budget is a fraction of the all-attention baseline's decode time.

Everything is written as it is made (`proxy.jsonl`, `measured.csv`, the Optuna study), so a run
that is stopped resumes where it was."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import devices
from nas.export import export_checked
from nas.latency.tables import append_decode_rows, read_latencies
from nas.lm.proxy import TextData, load_text, train_proxy
from nas.lm.report import plot_front, write_report
from nas.lm.verdicts import compared_keys, overall, paired_verdict
from nas.progress import Log, bar
from nas.recipes import HybridRecipe
from nas.rundir import BEST, MEASURED, PARETO, PROXY, RECIPE, TRIALS, RunDir, append_jsonl, read_jsonl
from nas.search import Objective, completed, pareto_front, run_search
from search_spaces import count_params, load_space
from search_spaces.hybrid_lm.baselines import build_key
from search_spaces.hybrid_lm.model import DecodeStep

BITS = 8.0  # the search maximises BITS - bits per byte: the bits a model saves per byte over uniform guessing


class HybridRun:
    """One hybrid_lm run directory."""

    def __init__(self, recipe: HybridRecipe, run_dir: str | Path, log: Log = print, progress: Any = None) -> None:
        self.recipe, self.log, self.progress = recipe, log, progress
        self.dir = RunDir(run_dir).create()
        self.run = self.dir.path
        self.space = load_space(recipe.space)
        self.device = devices.get(recipe.device)
        self.proxy_path, self.measured_path = self.run / PROXY, self.run / MEASURED
        self._proxy, self._measured = self._read_proxy(), self._read_measured()
        self.data = TextData.from_bytes(load_text(recipe.proxy.text))

    def _read_proxy(self) -> dict[tuple[str, int], dict]:
        """Proxy scores by (key, seed); rows without a seed were trained with the recipe's seed."""
        seed = self.recipe.proxy.seed
        return {(row["arch"], int(row.get("seed", seed))): row for row in read_jsonl(self.proxy_path)}

    def _read_measured(self) -> dict[str, float]:
        """Decode times of this device at this context and batch (rows of another do not count)."""
        d = self.recipe.decode
        return read_latencies(self.measured_path, device=self.device.spec, context=d.context, batch=d.batch)

    # ---- scores ------------------------------------------------------------------------------
    def model(self, key: str) -> Any:
        return build_key(self.space, key)

    def is_hybrid(self, key: str) -> bool:
        """Whether the architecture `key` (a space string) mixes two or more mixer types."""
        return len(set(self.space.blocks(self.space.from_str(key))) - {"ffn"}) > 1

    def bpb(self, key: str, seed: int | None = None) -> float:
        """Validation bits per byte after the recipe's proxy training, with its seed or `seed` (cached per key and
        seed)."""
        return float(self._proxy_row(key, seed)["val_bpb"])

    def trained(self, key: str, seed: int | None = None) -> bool:
        return (key, self.recipe.proxy.seed if seed is None else seed) in self._proxy

    def _proxy_row(self, key: str, seed: int | None = None) -> dict[str, Any]:
        p = self.recipe.proxy
        seed = p.seed if seed is None else seed
        if (key, seed) not in self._proxy:
            torch.manual_seed(seed)  # the same initial weights for the same key and seed, whatever ran before
            model = self.model(key)
            r = train_proxy(model, self.data, p, seed=seed)
            row = {
                "arch": key,
                "seed": seed,
                "val_bpb": r["val_bpb"],
                "final_train_loss": float(np.mean(r["train_loss"][-10:])),
                "params": count_params(model),
            }
            append_jsonl(self.proxy_path, row)
            self._proxy[key, seed] = row
        return self._proxy[key, seed]

    def decode_ms(self, keys: list[str]) -> dict[str, float]:
        """Per-token decode latency at the recipe's context, measured interleaved (cached per key)."""
        todo = [k for k in dict.fromkeys(keys) if k not in self._measured]
        if todo:
            d = self.recipe.decode
            ms = self.decode_group(todo)
            append_decode_rows(
                self.measured_path,
                [
                    {"arch": k, "latency_ms": ms[k], "context": d.context, "batch": d.batch, "device": self.device.spec}
                    for k in todo
                ],
            )
            self._measured.update(ms)
        return {k: float(self._measured[k]) for k in keys}

    def compared(
        self, arch: str, groups: Sequence[dict[str, float]], seeds: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        """`arch` and its baselines (`compared_keys`): params, bits per byte (the mean over `seeds`, by default the
        recipe's; trained where not cached), decode ms (the median of the timing `groups`, each a dict of key -> ms),
        and the found model's verdict against each baseline: per figure a `paired_verdict` (by seed, by group), and
        `overall` in `found_vs_this`."""
        seeds = list(seeds or [self.recipe.proxy.seed])
        keys = compared_keys(arch)
        bpbs = {k: [self.bpb(k, s) for s in seeds] for _, k in keys}
        times = {k: [g[k] for g in groups] for _, k in keys}
        lower = lambda a, b: sum(x < y for x, y in zip(a, b))
        found = keys[0][1]
        rows = []
        for name, k in keys:
            row = {
                "model": name,
                "arch": k,
                "params": int(self._proxy_row(k)["params"]),
                "val_bpb": float(np.mean(bpbs[k])),
                "decode_ms": float(np.median(times[k])),
                "seeds": len(seeds),
                "groups": len(groups),
            }
            if k != found:
                bpb, ms = paired_verdict(bpbs[found], bpbs[k]), paired_verdict(times[found], times[k])
                row.update(
                    found_vs_this=overall([bpb, ms]),
                    bpb=bpb,
                    decode=ms,
                    evidence=f"bpb {bpb} (lower in {lower(bpbs[found], bpbs[k])}/{len(seeds)} seeds), decode {ms} "
                    f"(faster in {lower(times[found], times[k])}/{len(groups)} groups)",
                )
            rows.append(row)
        return rows

    def decode_group(self, keys: list[str]) -> dict[str, float]:
        """Per-token decode latency of `keys` measured afresh in one interleaved group (for a fair comparison)."""
        d = self.recipe.decode
        steps = [DecodeStep(self.model(k).eval(), d.batch, d.context) for k in keys]
        return {
            k: m.latency_ms for k, m in zip(keys, self.device.measure_many(steps, [(d.batch, 1)] * len(keys), keys))
        }

    @staticmethod
    def summary(result: dict[str, Any]) -> list[str]:
        """What the CLI prints of a finished run: the winner, and each compared model."""
        w = result["winner"]
        if not w:
            return [f"no candidate met the {result['budget_ms']:.3f} ms budget"]
        lines = [
            f"winner: {w['arch']}: {w['val_bpb']:.3f} bits/byte, {w['decode_ms']:.3f} ms per token "
            f"(budget {result['budget_ms']:.3f} ms)"
        ]
        for row in result["compared"]:
            verdict = f"; the found model against it: {row['found_vs_this']}" if "found_vs_this" in row else ""
            lines.append(
                f"  {row['model']}: {row['params']:,} params, {row['val_bpb']:.3f} bits/byte, "
                f"{row['decode_ms']:.3f} ms per token (one interleaved group){verdict}"
            )
        return lines

    def check_resumable(self) -> None:
        """A run resumes only with the settings its cached scores were made with (the search's may change)."""
        path = self.run / RECIPE
        if not path.exists():
            return
        old, new = self.dir.read_recipe(), dataclasses.asdict(self.recipe)
        for name in ("space", "device", "decode", "proxy", "baseline"):
            if name in old and old[name] != new[name]:
                raise ValueError(
                    f"{path}: this run was made with {name}={old[name]!r}, but the recipe says {new[name]!r}; "
                    "its cached scores would not match (use another --out)"
                )

    # ---- phases ------------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """The whole hybrid run, one process at a time per run directory (a second waits, then resumes)."""
        with self.dir.lock(self.log):
            self._proxy, self._measured = self._read_proxy(), self._read_measured()  # another process's work
            return self._execute()

    def _execute(self) -> dict[str, Any]:
        r, space = self.recipe, self.space
        self.check_resumable()
        self.dir.write_recipe(dataclasses.asdict(r))
        base_ms = self.decode_ms([r.baseline])[r.baseline]
        budget = r.budget_ms or r.budget_fraction * base_ms
        self.log(
            f"budget: {budget:.3f} ms per token at context {r.decode.context} on {self.device.spec} "
            f"(the all-attention baseline {r.baseline} decodes in {base_ms:.3f} ms)"
        )
        objective = Objective(r.search.objective, budget_ms=budget, w=r.search.soft_w)
        storage = r.search.storage or self.dir.default_storage

        def evaluate(arch: tuple) -> tuple[float, float]:
            """Decode time first: under a hard budget a candidate over it ranks by its time alone, so it is not
            trained."""
            key = space.to_str(arch)
            ms = self.decode_ms([key])[key]
            if objective.kind == "budget" and not objective.feasible(ms):
                return float("nan"), ms
            return BITS - self.bpb(key), ms

        self.log(
            f"search: {r.search.strategy}, {r.search.trials} candidates, proxy {r.proxy.steps} steps, study in "
            f"{storage}"
        )
        with bar(self.progress, "searching") as update:
            study_key = {"device": self.device.spec, "context": r.decode.context, "batch": r.decode.batch}
            study = run_search(space, evaluate, objective, r.search, storage, progress=update, key=study_key)
        trials = pd.DataFrame(completed(study))
        trials["val_bpb"] = BITS - trials["accuracy"]  # empty where the candidate missed the budget and was not trained
        trials.to_csv(self.run / TRIALS, index=False)
        scored = trials.dropna(subset=["val_bpb"])
        front = scored.iloc[pareto_front(scored["accuracy"], scored["latency_ms"])]
        front.to_csv(self.run / PARETO, index=False)
        feasible = scored[scored["latency_ms"] <= budget]
        winner = feasible.sort_values("val_bpb").iloc[0].to_dict() if len(feasible) else None
        result: dict[str, Any] = {
            "space": space.spec,
            "device": self.device.spec,
            "fingerprint": self.device.fingerprint(),
            "budget_ms": budget,
            "baseline": {"arch": r.baseline, "decode_ms": base_ms},
            "decode": dataclasses.asdict(r.decode),
            "proxy": dataclasses.asdict(r.proxy),
            "trials": len(trials),
            "distinct": int(trials["arch"].nunique()),
            "trained": int(scored["arch"].nunique()),
            "winner": None,
            "compared": [],
        }
        if winner is not None:
            key = winner["arch"]
            self.log("compare: the winner against all-attention and all-Mamba2 stacks of its depth and parameter count")
            result["compared"] = self.compared(key, [self.decode_group([k for _, k in compared_keys(key)])])
            result["winner"] = {
                "arch": key,
                "val_bpb": winner["val_bpb"],
                "decode_ms": winner["latency_ms"],
                "params": space.params(space.from_str(key)),
                "export": self.export(space.from_str(key)),
            }
        self.dir.write_result(result)
        plot_front(self.run, r, self.device.spec, trials, front, budget, result)
        write_report(self.run, r, result)
        return result

    def export(self, arch: tuple) -> dict[str, Any]:
        """The winner trained as the proxy trained it (same seed and steps), its weights and its ONNX at
        the proxy's sequence length, checked against PyTorch with onnxruntime."""
        out = self.run / BEST
        out.mkdir(exist_ok=True)
        p = self.recipe.proxy
        torch.manual_seed(p.seed)
        model = self.space.build(arch)
        trained = train_proxy(model, self.data, p)
        model.eval()
        torch.save(model.state_dict(), out / "weights.pt")
        meta = export_checked(model, self.space, self.space.to_str(arch), self.data.val, p.seq_len, out)
        meta.update({"val_bpb": trained["val_bpb"], "trained_steps": p.steps})
        (out / "model.json").write_text(json.dumps(meta, indent=2))
        return meta
