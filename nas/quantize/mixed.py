"""Mixed-precision post-training quantization of one model for one device, end to end:
sensitivities, search, deployment with onnxruntime, confirmation and interleaved measurement."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from devices.int8 import FORMATS, check_activations, check_calibration, check_format
from nas.quantize.deploy import Deployer, int8_nodes, onnx_accuracy, onnx_format
from nas.quantize.fakequant import FakeQuant
from nas.quantize.latency import PrecisionLatency, layer_profile
from nas.quantize.layers import blocks, quantizable_layers
from nas.quantize.search import SEARCHES, bisect, greedy_blocks, ilp_search
from nas.quantize.sensitivity import METHODS, hessian_scores, interlayer_scores, order

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class QuantizeConfig:
    tolerance: float = 0.5  # accuracy points (percent) below the fp32 model, on the validation split
    method: str = "interlayer"
    search: str = "bisect"
    probes: int = 8
    sensitivity_batches: int = 2
    rounds: int = 4
    screen: int = 8  # moves measured per round of the latency search, ranked by the precision-aware model (0: all)
    activations: str = "auto"  # u8 | s8 | s8sym, or auto: the faster of u8 and s8 for uniform int8, measured
    format: str = "auto"  # qdq | qoperator, or auto: the faster form, measured (uniform int8, then the answer)
    calibration: str = (
        "minmax"  # minmax | percentile | entropy: onnxruntime's calibrators, mirrored by the fake quantization
    )
    final_groups: int = 3  # the answer's group measured this many times, the order rotated, each model's median kept

    def __post_init__(self) -> None:
        check_settings(self.tolerance, self.method, self.search)
        if self.activations != "auto":
            check_activations(self.activations)
        if self.format != "auto":
            check_format(self.format)
        check_calibration(self.calibration)
        if self.final_groups < 1:
            raise ValueError(f"`final_groups >= 1` must hold, but got final_groups={self.final_groups}")


def check_settings(tolerance: float, method: str, search: str, prefix: str = "") -> None:
    """The rules of the quantize settings; `prefix` names them as a recipe does (`quantize.`)."""
    if method not in METHODS:
        raise ValueError(f"{prefix}method must be one of {', '.join(METHODS)}, but got {method!r}")
    if search not in SEARCHES:
        raise ValueError(f"{prefix}search must be one of {', '.join(SEARCHES)}, but got {search!r}")
    if not 0 <= tolerance <= 100:
        raise ValueError(
            f"`0 <= {prefix}tolerance <= 100` must hold (accuracy points), but got {prefix}tolerance={tolerance}"
        )


@dataclass
class QuantizeData:
    calib: list[Batch]  # training images, not augmented
    val: list[Batch]
    test: list[Batch]
    input_shape: tuple[int, ...]
    extra: dict[str, Any] = field(default_factory=dict)


def _accuracy_torch(model: nn.Module, batches: Sequence[Batch]) -> float:
    correct = total = 0
    with torch.no_grad():
        for x, y in batches:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / max(total, 1)


class MixedPrecision:
    """Everything about quantizing one model; results land in `out` as they are produced."""

    def __init__(
        self,
        model: nn.Module,
        data: QuantizeData,
        device: Any,
        out: str | Path,
        config: QuantizeConfig,
        log: Callable[[str], None] = print,
    ) -> None:
        self.model, self.data, self.device, self.config, self.log = model.eval(), data, device, config, log
        self.out = Path(out)
        self.work = self.out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        example = data.calib[0][0][:1]
        self.layers = quantizable_layers(self.model, example)
        self.fq = FakeQuant(self.model, self.layers).calibrate(x for x, _ in data.calib)
        self.val_cache: dict[frozenset, float] = {}
        self.deployed_val: dict[tuple[frozenset, str], float] = {}
        self.latency: dict[frozenset, float] = {}  # in the deployer's format
        self.paths: dict[tuple[frozenset, str], Path] = {}
        self.trial_ms: dict[tuple[str, str], float] = {}  # (activations, form) -> uniform int8's time, for `auto`
        self._gains: dict[str, float] = {}

    # ---- accuracy ------------------------------------------------------------------------------
    def fake_accuracy(self, int8: Sequence[str]) -> float:
        key = frozenset(int8)
        if key not in self.val_cache:
            with self.fq.active(key) as m:
                self.val_cache[key] = _accuracy_torch(m, self.data.val)
        return self.val_cache[key]

    def _key(self, int8: Sequence[str], fmt: str | None) -> tuple[frozenset, str]:
        return frozenset(int8), fmt or self.deployer.format

    def deploy(self, int8: Sequence[str], fmt: str | None = None) -> Path:
        """The deployed model of these int8 layers in `fmt` (the deployer's format by default)."""
        key = self._key(int8, fmt)
        if key not in self.paths:
            self.paths[key] = self.deployer.write(key[0], f"cfg{len(self.paths)}", fmt=key[1])
        return self.paths[key]

    def deployed_accuracy(self, int8: Sequence[str], split: str = "val", fmt: str | None = None) -> float:
        key = self._key(int8, fmt)
        if split == "val" and key in self.deployed_val:
            return self.deployed_val[key]
        acc = onnx_accuracy(self.deploy(*key), getattr(self.data, split))
        if split == "val":
            self.deployed_val[key] = acc
        return acc

    def measure(self, configs: list[set[str]]) -> list[float]:
        """Latency of each configuration's deployed model on the device, measured interleaved."""
        out = self.measure_files([self.deploy(c) for c in configs])
        for c, t in zip(configs, out):
            self.latency[frozenset(c)] = t
        return out

    def measure_groups(self, paths: list[Path], groups: int) -> np.ndarray:
        """(groups, files) latencies measured in `rotated_groups`."""
        return rotated_groups(self.measure_files, paths, groups)

    def measure_rotated(self, paths: list[Path], groups: int) -> list[float]:
        """Each file's median latency over `rotated_groups`."""
        return [float(t) for t in np.median(rotated_groups(self.measure_files, paths, groups), axis=0)]

    def measure_files(self, paths: list[Path]) -> list[float]:
        """Latency of each ONNX file on the device, measured interleaved in one group."""
        ms = self.device.measure_many([str(p) for p in paths], [self.data.input_shape] * len(paths))
        return [m.latency_ms for m in ms]

    # ---- the job ---------------------------------------------------------------------------------
    def prepare(self) -> None:
        """The float ONNX model, the deployer (calibrated once) and the accuracy floor."""
        if hasattr(self, "deployer"):
            return
        from devices.onnx_io import to_onnx

        self.fp32_path = self.work / "fp32.onnx"
        self.fp32_path.write_bytes(to_onnx(self.model, self.data.input_shape, dynamic_batch=True, opset=18))
        self.deployer = Deployer(
            self.fp32_path,
            self.layers,
            [x.numpy() for x, _ in self.data.calib],
            self.work,
            method=self.config.calibration,
        )
        self.fq.ranges_.update(self.deployer.layer_input_ranges())
        self.val_cache.clear()
        self.deployer.activations, self.deployer.format = self.choose_deployment()
        self.base_val = _accuracy_torch(self.model, self.data.val)
        self.floor = self.base_val - self.config.tolerance / 100 - 1e-9

    def formats(self) -> tuple[str, ...]:
        """The int8 forms this job measures: the configured one, TensorRT's QDQ, or both for `auto`."""
        if self.config.format != "auto":
            return (self.config.format,)
        return ("qdq",) if self.device.name.startswith("tensorrt") else FORMATS

    def choose_deployment(self) -> tuple[str, str]:
        """The int8 activation type and form every configuration of the search is deployed in: the configured ones;
        for `auto`, TensorRT's symmetric int8 in QDQ, or else the fastest uniform int8 model of uint8 / int8
        activations x QDQ / QOperator, measured interleaved on the device (so the per-layer gains, the ILP and the
        latency search read the chosen form's times)."""
        kinds = (self.config.activations,) if self.config.activations != "auto" else ("u8", "s8")
        if self.device.name.startswith("tensorrt") and self.config.activations == "auto":
            kinds = ("s8sym",)
        pairs = [(k, f) for k in kinds for f in self.formats()]
        if len(pairs) == 1:
            return pairs[0]
        paths = [self.deployer.write(self.layers, f"uniform_{k}_{f}", k, f) for k, f in pairs]
        ms = self.measure_files(paths)
        choice = pairs[int(np.argmin(ms))]
        self.trial_ms = dict(zip(pairs, ms))
        trials = ", ".join(f"{k}/{f} {t:.3f} ms" for (k, f), t in self.trial_ms.items())
        self.log(f"int8: {'/'.join(choice)} ({trials}, uniform int8)")
        return choice

    def _trials(self, axis: int) -> dict[str, float] | None:
        """The uniform int8 times along one axis (0: activation type, 1: form) at the chosen value of the other."""
        chosen = (self.deployer.activations, self.deployer.format)
        out = {pair[axis]: t for pair, t in self.trial_ms.items() if pair[1 - axis] == chosen[1 - axis]}
        return out if len(out) > 1 else None

    def sensitivities(self, method: str | None = None) -> dict[str, float]:
        """Per-layer scores of `method` (cached in sensitivity.csv with every score computed so far)."""
        method = method or self.config.method
        path = self.out / "sensitivity.csv"
        df = pd.read_csv(path) if path.exists() else pd.DataFrame({"layer": self.layers})
        if list(df["layer"]) != self.layers:
            df = pd.DataFrame({"layer": self.layers})
        if method not in df.columns:
            batches = self.data.calib[: self.config.sensitivity_batches]
            t = time.time()
            if "hessian" not in df.columns:
                hess = hessian_scores(self.model, self.layers, batches, self.config.probes)
                df["hessian"] = [hess[n] for n in self.layers]
            if method == "interlayer":
                hess = dict(zip(df["layer"], df["hessian"]))
                inter, single = interlayer_scores(self.fq, self.layers, batches, hess)
                df["interlayer"] = [inter[n] for n in self.layers]
                df["single_measured"] = [single[n] for n in self.layers]
            self.log(f"sensitivity ({method}): {len(self.layers)} layers in {time.time() - t:.1f} s")
            df.to_csv(path, index=False)
        return dict(zip(df["layer"], df[method]))

    def layer_gains(self) -> dict[str, float]:
        """Latency saved by each layer alone in int8 (HAWQ-V3's additive table), measured interleaved."""
        if self._gains:
            return self._gains
        configs = [set()] + [{n} for n in self.layers]
        times = self.measure(configs)
        self._gains = {n: times[0] - t for n, t in zip(self.layers, times[1:])}
        return self._gains

    def select(self, search: str, method: str) -> set[str]:
        """The int8 layers that `search` picks with `method`'s sensitivities, confirmed on the deployed model."""
        self.prepare()
        scores = self.sensitivities(method)
        ranked = order(scores)
        if search == "ilp":
            chosen = set(ilp_search(scores, self.layer_gains(), self.fake_accuracy, self.floor))
        else:
            chosen = set(ranked[: bisect(ranked, self.fake_accuracy, self.floor)])
        chosen = self.confirm(chosen, ranked)
        self.log(f"{search} with {method} sensitivities: {len(chosen)} of {len(self.layers)} layers in int8")
        if search == "latency":
            chosen = self.latency_search(chosen)
        return chosen

    def feasible(self, int8: Sequence[str]) -> bool:
        return self.fake_accuracy(int8) >= self.floor and self.deployed_accuracy(int8) >= self.floor

    def latency_search(self, start: set[str]) -> set[str]:
        """Greedy moves measured on the device (whole blocks, whole stages, and single layers where there are
        few), from the fastest of: fp32, uniform int8 and the bisection's answer where they hold the
        tolerance, and the ILP's answer on the measured per-layer gains."""
        everything = set(self.layers)
        scores = self.sensitivities("hessian")
        gains = self.layer_gains()
        ilp = set(ilp_search(scores, gains, self.fake_accuracy, self.floor))
        starts = [s for s in (set(), start, everything, ilp) if self.feasible(sorted(s))]
        times = self.measure(starts)
        current = starts[int(np.argmin(times))]
        groups = blocks(self.layers)
        stages: dict[str, list[str]] = {}
        for g in groups:
            stages.setdefault(".".join(g[0].split(".")[:2]), []).extend(g)
        groups = groups + [g for g in stages.values() if g not in groups]
        if len(self.layers) <= 32:
            groups += [[n] for n in self.layers if [n] not in groups]
        accuracy = lambda s: self.fake_accuracy(s) if self.fake_accuracy(s) < self.floor else self.deployed_accuracy(s)
        profile = layer_profile(self.model, self.layers, self.data.calib[0][0])

        def screen(candidates: list[set[str]]) -> list[float]:
            """The precision-aware latency model, refitted on everything measured so far."""
            seen = list(self.latency)
            model = PrecisionLatency(self.layers, profile, self.deployer.edges).fit(
                seen, [self.latency[k] for k in seen]
            )
            return list(model.predict(candidates))

        chosen, _ = greedy_blocks(
            current,
            groups,
            accuracy,
            self.floor,
            self.measure,
            rounds=self.config.rounds,
            min_gain=0.01,
            log=self.log,
            screen=screen if self.config.screen else None,
            keep=self.config.screen,
        )
        return chosen

    def run(self) -> dict[str, Any]:
        chosen = self.select(self.config.search, self.config.method)
        return self.finish({"mixed": chosen})

    def confirm(self, chosen: set[str], ranked: list[str]) -> set[str]:
        """Keep the configuration only if the deployed model (onnxruntime) holds the tolerance on the
        validation split; otherwise the largest prefix of it, in sensitivity order, that does (bisection
        on the deployed accuracy)."""
        current = [n for n in ranked if n in chosen]
        if not current or self.deployed_accuracy(current) >= self.floor:
            return set(current)
        k = bisect(current, self.deployed_accuracy, self.floor)
        self.log(f"confirm: the deployed model needed {len(current) - k} layers back in float")
        return set(current[:k])

    def finish(self, found: dict[str, set[str]], peers: dict[str, Path] | None = None) -> dict[str, Any]:
        """Measure fp32, uniform int8 and the found configurations interleaved (each distinct one once, in each int8
        form of `formats`); each configuration keeps its faster form that holds the tolerance on the validation
        split, and the answer is the fastest configuration that holds it. `peers` (name -> ONNX file another tool
        quantized) are measured in the same group and scored the same way, never chosen."""
        self.prepare()
        named = {"fp32": set(), "int8": set(self.layers), **found}
        keys, peers = list(named), dict(peers or {})
        distinct = list(dict.fromkeys(frozenset(named[k]) for k in keys))  # methods that agree: one model, one time
        variants = [(c, f) for c in distinct for f in (self.formats() if c else (self.deployer.format,))]
        paths = [self.deploy(c, f) for c, f in variants] + [Path(p) for p in peers.values()]
        times = self.measure_rotated(paths, self.config.final_groups)
        timed = dict(zip(variants, times))
        self.latency.update({c: t for (c, f), t in timed.items() if f == self.deployer.format})
        rows = [self._row(key, frozenset(named[key]), timed) for key in keys]
        for (name, path), t in zip(peers.items(), times[len(variants) :]):
            val, nodes = onnx_accuracy(path, self.data.val), int8_nodes(path)
            rows.append(
                {
                    "config": name,
                    "format": onnx_format(path),
                    "int8_layers": nodes,
                    "int8_nodes": nodes,
                    "latency_ms": t,
                    "val_top1": val,
                    "test_top1": onnx_accuracy(path, self.data.test),
                    "fake_val_top1": float("nan"),
                    "within_tolerance": bool(val >= self.floor),
                    "peer": True,
                    "formats": {},
                }
            )
        table = pd.DataFrame(rows)
        ok = table[table["within_tolerance"] & ~table["peer"]]
        best = ok.loc[ok["latency_ms"].idxmin()] if len(ok) else table.iloc[0]
        chosen = named[best["config"]]
        best = table.iloc[next(i for i, k in enumerate(keys) if named[k] == chosen)]  # fp32 / int8 by their names
        fmt = self.deployer.format if best["format"] == "float" else best["format"]
        (self.out / "model.onnx").write_bytes(self.deploy(chosen, fmt).read_bytes())
        fp32 = table.iloc[0]
        result = {
            "device": self.device.spec,
            "fingerprint": self.device.fingerprint(),
            "tolerance_points": self.config.tolerance,
            "method": self.config.method,
            "search": self.config.search,
            "input_shape": list(self.data.input_shape),
            "chosen": best["config"],
            "activations": self.config.activations,
            "calibration": self.config.calibration,
            "int8_activations": self.deployer.activations,
            "int8_activation_trial_ms": self._trials(0),
            "int8_format": best["format"],
            "int8_format_setting": self.config.format,
            "int8_format_reason": _format_reason(best, self.floor),
            "int8_format_trial_ms": self._trials(1),
            "precision": {n: ("int8" if n in chosen else "fp32") for n in self.layers},
            "configs": table.to_dict("records"),
            "speedup_vs_fp32": float(fp32["latency_ms"] / best["latency_ms"]),
            "test_drop_points": float(100 * (fp32["test_top1"] - best["test_top1"])),
            "val_drop_points": float(100 * (fp32["val_top1"] - best["val_top1"])),
            **self.data.extra,
        }
        (self.out / "model.json").write_text(json.dumps(result, indent=2, default=str))
        points = self._points()
        points.to_csv(self.out / "points.csv", index=False)
        self._plot(table, points)
        return result

    def _row(self, name: str, int8: frozenset, timed: dict[tuple[frozenset, str], float]) -> dict[str, Any]:
        """One configuration's row of `finish`: every form measured, the faster one that holds the tolerance kept."""
        forms = {
            f: {
                "latency_ms": t,
                "val_top1": self.deployed_accuracy(int8, fmt=f),
                "test_top1": self.deployed_accuracy(int8, "test", f),
            }
            for (c, f), t in timed.items()
            if c == int8
        }
        holding = [f for f in forms if forms[f]["val_top1"] >= self.floor] or list(forms)
        fmt = min(holding, key=lambda f: forms[f]["latency_ms"])
        return {
            "config": name,
            "format": fmt if int8 else "float",
            "int8_layers": len(int8),
            "int8_nodes": int8_nodes(self.deploy(int8, fmt)),
            **forms[fmt],
            "fake_val_top1": self.fake_accuracy(int8),
            "within_tolerance": bool(forms[fmt]["val_top1"] >= self.floor),
            "peer": False,
            "formats": forms if int8 else {},
        }

    def _points(self) -> pd.DataFrame:
        """Every configuration tried, in the deployer's form."""
        fmt = self.deployer.format
        deployed = {k: v for (k, f), v in self.deployed_val.items() if f == fmt}
        rows = [
            {
                "int8_layers": len(k),
                "fake_val_top1": self.val_cache.get(k),
                "deployed_val_top1": deployed.get(k),
                "latency_ms": self.latency.get(k),
                "int8": " ".join(sorted(k)),
            }
            for k in set(self.val_cache) | set(self.latency) | set(deployed)
        ]
        return pd.DataFrame(rows).sort_values("int8_layers")

    def _plot(self, table: pd.DataFrame, points: pd.DataFrame) -> None:
        from nas.plots import pyplot

        plt = pyplot()

        pts = points.dropna(subset=["latency_ms"])
        acc = pts["deployed_val_top1"].fillna(pts["fake_val_top1"])
        fig, ax = plt.subplots(figsize=(6.5, 4.2))
        ax.scatter(pts["latency_ms"], 100 * acc, s=18, color="tab:gray", label="configurations tried (val)")
        for _, r in table.iterrows():
            ax.scatter(
                [r["latency_ms"]],
                [100 * r["val_top1"]],
                s=90,
                marker="*" if r["config"] not in ("fp32", "int8") else "o",
                label=f"{r['config']}: {r['latency_ms']:.3f} ms, test {100 * r['test_top1']:.2f}%",
            )
        fp32 = table.iloc[0]
        ax.axhline(100 * fp32["val_top1"] - self.config.tolerance, ls="--", color="black", lw=1, label="tolerance")
        ax.set_xlabel(f"latency on {self.device.spec} (ms)")
        ax.set_ylabel("validation top-1 (%), deployed")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(self.out / "quantize.png", dpi=120)
        plt.close(fig)


def rotated_groups(measure: Callable[[list[Path]], list[float]], paths: list[Path], groups: int) -> np.ndarray:
    """(groups, files) latencies: `groups` interleaved groups, the order rotated by one between groups, so a model
    measured where the group's order favours it once is not favoured in the others (two byte-identical copies of
    one model were seen 9% apart in one group)."""
    n, rows = len(paths), []
    for g in range(groups):
        order = [(i + g) % n for i in range(n)]
        got = measure([paths[i] for i in order])
        rows.append([got[order.index(i)] for i in range(n)])
    return np.array(rows)


def _format_reason(row: Any, floor: float) -> str | None:
    """Why the chosen configuration is in its int8 form, in the figures measured in `finish`'s one group."""
    fmt, forms = row["format"], row["formats"] or {}
    if fmt == "float":
        return None
    if len(forms) < 2:
        return f"{fmt}: the only form measured (the format setting or the device)"
    others = ", ".join(
        f"{f} {v['latency_ms']:.4f} ms" + ("" if v["val_top1"] >= floor else " (misses the tolerance)")
        for f, v in forms.items()
        if f != fmt
    )
    return f"{fmt}: {forms[fmt]['latency_ms']:.4f} ms against {others} for this configuration, one interleaved group"
