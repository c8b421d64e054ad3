"""Recipes: YAML (safe_load) validated into typed config; a wrong field gets an error naming it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from devices.int8 import check_activations, check_calibration, check_format
from nas.data import AUGMENTS
from nas.export import FORMATS, ExportConfig
from nas.quantize.mixed import check_settings
from nas.rundir import CHECKPOINT, supernet_checkpoint_dir
from nas.search.objectives import KINDS
from nas.search.samplers import STRATEGIES
from nas.search.study import SearchConfig
from nas.supernet.train import BN_IMAGES, TrainConfig
from search_spaces import load_space


@dataclass
class DataConfig:
    name: str = "digits"
    path: str | None = None
    resolution: int = 32
    augment: str | None = None
    auto_augment: str | None = None
    re_prob: float = 0.0
    workers: int = 0


@dataclass
class VerifyConfig:
    """How many of the front's best predicted-feasible candidates are measured on the device first."""

    top: int = 5
    margin: float = 0.1


@dataclass
class QuantizeSection:
    """Mixed-precision quantization of the winner after export (on when the section is present)."""

    enabled: bool = False
    tolerance: float = 0.5
    method: str = "interlayer"
    search: str = "bisect"
    calib: int = 256
    activations: str = "auto"
    format: str = "auto"  # the int8 form: qdq | qoperator | auto (the faster, measured on the device)
    calibration: str = "minmax"
    joint: bool = False  # search on the device's uniform int8 deployment's latency and accuracy, then quantize


@dataclass
class Recipe:
    space: str = "ofa_mbv3:resolutions=[32],num_classes=10"
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    device: str = "ort-cpu:threads=1"
    budget_ms: float | None = None
    budget_fraction: float | None = None
    predictor: str | None = None
    references: int = 10
    supernet: str | None = None
    accuracy: str | None = None  # `table:NAME|PATH:COLUMN`: trained accuracies from a table instead of a supernet
    bn_images: int = BN_IMAGES  # training images each subnet's BN statistics are recalibrated on before scoring
    search: SearchConfig = field(default_factory=SearchConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    quantize: QuantizeSection = field(default_factory=QuantizeSection)


DATASETS = ("digits", "digits-hard", "cifar10", "cifar100", "imagefolder")
DEFAULT_BUDGET_FRACTION = (
    0.7  # of the largest subnet's (image) or the all-attention baseline's (hybrid) measured latency
)
DEVICES = ("auto", "cpu", "cuda")


def _fill(cls: type, values: Any, where: str, source: str) -> Any:
    if not isinstance(values, dict):
        raise ValueError(f"{source}: {where or 'the recipe'} must be a mapping, but got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise ValueError(
                f"{source}: unknown field {where + '.' if where else ''}{key}; allowed: {', '.join(fields)}"
            )
        sub = fields[key].default_factory
        if dataclasses.is_dataclass(sub):
            kwargs[key] = _fill(sub, value, key, source)
            continue
        kwargs[key] = _typed(value, str(fields[key].type), f"{where + '.' if where else ''}{key}", source)
    return cls(**kwargs)


def _typed(value: Any, annotation: str, name: str, source: str) -> Any:
    """`value` checked against a field's annotation (bool, int, float, str, each maybe `| None`)."""
    kind = annotation.split("|")[0].strip()
    if value is None and "None" in annotation:
        return None
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"{source}: {name} must be true or false, but got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{source}: {name} must be a whole number, but got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{source}: {name} must be a number, but got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{source}: {name} must be a finite number, but got {value!r}")
        return float(value)
    elif kind == "str" and not isinstance(value, str):
        raise ValueError(f"{source}: {name} must be a string, but got {value!r}")
    return value


ABOVE_0 = 1e-12  # the lowest of a range that excludes 0 (a learning rate, a budget)
# (field, lowest, highest): what every recipe kind must satisfy before any work starts
RANGES = (
    ("train.epochs", 1, None),
    ("train.batch_size", 1, None),
    ("train.lr", ABOVE_0, None),
    ("train.warmup_epochs", 0, None),
    ("train.weight_decay", 0, None),
    ("train.grad_clip", ABOVE_0, None),
    ("train.random_subnets", 0, None),
    ("train.distill_temperature", ABOVE_0, None),
    ("train.checkpoint_every", 1, None),
    ("data.resolution", 8, None),
    ("data.re_prob", 0, 1),
    ("data.workers", 0, None),
    ("search.trials", 1, None),
    ("search.seed", 0, 2**32 - 1),
    ("train.seed", 0, 2**32 - 1),
    ("search.population", 2, None),
    ("verify.top", 1, None),
    ("verify.margin", 0, None),
    ("quantize.calib", 1, None),
    ("budget_fraction", ABOVE_0, 1),
    ("budget_ms", ABOVE_0, None),
    ("references", 5, None),
    ("bn_images", 1, None),
    ("proxy.steps", 1, None),
    ("proxy.batch", 1, None),
    ("proxy.seq_len", 1, None),
    ("proxy.lr", ABOVE_0, None),
    ("proxy.val_windows", 1, None),
    ("decode.context", 1, None),
    ("decode.batch", 1, None),
)


def check_ranges(recipe: Any, source: str) -> None:
    """Every field of `RANGES` the recipe has lies in its range."""
    for name, low, high in RANGES:
        value: Any = recipe
        for part in name.split("."):
            value = getattr(value, part, None)
        if value is None:
            continue
        rule = f"{name} > 0" if low == ABOVE_0 else f"{name} >= {low}"
        if high is not None:
            rule = f"0 < {name} <= {high}" if low == ABOVE_0 else f"{low} <= {name} <= {high}"
        if value < low or (high is not None and value > high):
            raise ValueError(f"{source}: `{rule}` must hold, but got {name}={value!r}")


def check_storage(storage: str | None, source: str) -> None:
    """An Optuna storage URL that SQLAlchemy can parse (sqlite:///PATH, postgresql://user@host/db)."""
    if storage is None:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(storage)
    except ArgumentError:
        raise ValueError(
            f"{source}: search.storage must be a database URL such as sqlite:///study.db or "
            f"postgresql://user@host/db, but got {storage!r}"
        ) from None


# no recipe is this large: a bigger file (or a device, a pipe) is not a recipe
MAX_RECIPE_BYTES = 1 << 20


def _twice_given(node: Any) -> str | None:
    """The first key given twice in one mapping of a composed YAML document (YAML keeps the last silently)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, yaml.MappingNode):
            seen = set()
            for key, value in n.value:
                if isinstance(key, yaml.ScalarNode):
                    if key.value in seen:
                        return f"key {key.value!r} is given twice (line {key.start_mark.line + 1})"
                    seen.add(key.value)
                stack.append(value)
        elif isinstance(n, yaml.SequenceNode):
            stack.extend(n.value)
    return None


def _read_yaml(path: str | Path) -> Any:
    source = str(path)
    try:
        p = Path(path)
        if p.exists() and not p.is_file():
            raise ValueError(f"recipe {source!r} is not a regular file")
        with p.open("rb") as f:
            data = f.read(MAX_RECIPE_BYTES + 1)
        if len(data) > MAX_RECIPE_BYTES:
            raise ValueError(f"recipe {source!r} is over {MAX_RECIPE_BYTES // 1024} KiB: not a recipe")
        text = data.decode("utf-8")
        twice = _twice_given(yaml.compose(text, Loader=yaml.SafeLoader))
        if twice:
            raise ValueError(f"recipe {source!r} is not valid YAML: {twice}")
        return yaml.safe_load(text)
    except OSError as err:
        raise ValueError(f"cannot read recipe {source!r}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"recipe {source!r} is not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise ValueError(f"recipe {source!r} is not valid YAML: {str(err).splitlines()[0]}") from None


def load_recipe(path: str | Path) -> Recipe:
    """An image recipe (`load_any_recipe` for either kind)."""
    return recipe_from_dict(_read_yaml(path), str(path))


def recipe_from_dict(raw: Any, source: str) -> Recipe:
    """Validate a parsed recipe (types, ranges, names, paths, the storage URL); `source` names it in errors."""
    if raw is None or raw == {}:
        raise ValueError(f"{source}: the recipe is empty; start from recipes/quickstart.yaml")
    if isinstance(raw, dict) and isinstance(raw.get("quantize"), dict) and "enabled" not in raw["quantize"]:
        raw = {**raw, "quantize": {**raw["quantize"], "enabled": True}}
    recipe = _fill(Recipe, raw, "", source)
    if recipe.data.name not in DATASETS:
        raise ValueError(f"{source}: data.name must be one of {', '.join(DATASETS)}, but got {recipe.data.name!r}")
    if not recipe.data.name.startswith("digits") and not recipe.data.path:
        raise ValueError(f"{source}: data.path is required for {recipe.data.name} (hwnas never downloads)")
    if recipe.data.augment is not None and recipe.data.augment not in AUGMENTS:
        raise ValueError(
            f"{source}: data.augment must be one of {', '.join(AUGMENTS)}, but got {recipe.data.augment!r}"
        )
    check_budget_and_search(recipe, source)
    if recipe.export.format not in FORMATS:
        raise ValueError(
            f"{source}: export.format must be one of {', '.join(FORMATS)}, but got {recipe.export.format!r}"
        )
    try:
        check_settings(recipe.quantize.tolerance, recipe.quantize.method, recipe.quantize.search, "quantize.")
        if recipe.quantize.activations != "auto":
            check_activations(recipe.quantize.activations, "quantize.activations")
        if recipe.quantize.format != "auto":
            check_format(recipe.quantize.format, "quantize.format")
        check_calibration(recipe.quantize.calibration, "quantize.calibration")
        if recipe.quantize.enabled and recipe.quantize.joint:
            search_device_spec(recipe)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    if recipe.train.device not in DEVICES:
        raise ValueError(f"{source}: train.device must be one of {', '.join(DEVICES)}, but got {recipe.train.device!r}")
    _check_space(recipe.space, source)
    if recipe.accuracy is not None:
        _check_accuracy(recipe, source)
    for name in ("predictor", "supernet"):
        path = getattr(recipe, name)
        if path is not None and not Path(path).exists() and not Path(f"{path}.json").exists():
            raise ValueError(f"{source}: {name} {path!r} does not exist")
    if recipe.predictor is not None and Path(recipe.predictor).is_dir():
        raise ValueError(
            f"{source}: predictor {recipe.predictor!r} is a directory; give the calibrated predictor's file "
            "(hwnas calibrate --out FILE, or a run's predictor.json)"
        )
    if recipe.supernet is not None:
        if not (supernet_checkpoint_dir(recipe.supernet) / CHECKPOINT).exists():
            raise ValueError(
                f"{source}: supernet {recipe.supernet!r} holds no trained supernet ({CHECKPOINT}, or a run's "
                f"supernet/{CHECKPOINT})"
            )
    return recipe


def _check_accuracy(recipe: Recipe, source: str) -> None:
    """A table accuracy source: a table the space's architectures are in, and no part of the recipe that needs
    trained weights."""
    from nas.accuracy import load_accuracy_table

    if recipe.supernet is not None:
        raise ValueError(f"{source}: give accuracy (a table) or supernet (a trained run), not both")
    if recipe.quantize.enabled:
        raise ValueError(f"{source}: quantize needs trained weights, and an accuracy table has none; remove quantize")
    try:
        load_accuracy_table(recipe.accuracy, load_space(recipe.space))
    except ValueError as err:
        raise ValueError(f"{source}: accuracy: {err}") from None


def _check_space(spec: str, source: str) -> None:
    try:
        load_space(spec)
    except ValueError as err:
        raise ValueError(f"{source}: space: {err}") from None


def check_budget_and_search(recipe: Any, source: str) -> None:
    """The checks every recipe kind shares: ranges, a budget given one way, a known strategy and objective, a
    storage URL."""
    check_ranges(recipe, source)
    check_storage(recipe.search.storage, source)
    for name in ("budget_ms", "budget_fraction"):
        value = getattr(recipe, name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0):
            raise ValueError(f"{source}: {name} must be a positive number, but got {value!r}")
    if recipe.budget_ms is not None and recipe.budget_fraction is not None:
        raise ValueError(f"{source}: give budget_ms or budget_fraction, not both")
    if recipe.search.strategy not in STRATEGIES:
        raise ValueError(
            f"{source}: search.strategy must be one of {', '.join(STRATEGIES)}, but got {recipe.search.strategy!r}"
        )
    if recipe.search.objective not in KINDS:
        raise ValueError(
            f"{source}: search.objective must be one of {', '.join(KINDS)}, but got {recipe.search.objective!r}"
        )


def search_device_spec(recipe: Recipe) -> str:
    """The device the search measures on: the recipe's device, or its uniform int8 deployment when
    `quantize.joint` is set."""
    from devices import with_option

    q = recipe.quantize
    if not (q.enabled and q.joint):
        return recipe.device
    try:
        return with_option(recipe.device, "precision", "int8-s8" if q.activations.startswith("s8") else "int8")
    except ValueError as err:
        raise ValueError(f"quantize.joint: {err}") from None


def to_dict(recipe: Recipe) -> dict[str, Any]:
    return dataclasses.asdict(recipe)


def load_data(cfg: DataConfig) -> Any:
    """The recipe's dataset, with its augmentation settings (default: crop_flip for CIFAR, timm for
    image folders, none for digits, whose digits must not be mirrored)."""
    from nas.data import cifar, digits, digits_hard, imagefolder

    if cfg.name == "digits":
        data = digits(cfg.resolution)
    elif cfg.name == "digits-hard":
        data = digits_hard(cfg.resolution)
    elif cfg.name == "imagefolder":
        data = imagefolder(cfg.path, cfg.resolution, auto_augment=cfg.auto_augment)
    else:
        data = cifar(cfg.path, 10 if cfg.name == "cifar10" else 100)
        data.augment = "crop_flip"
    if cfg.augment is not None:
        data.augment = cfg.augment
    data.re_prob, data.workers = cfg.re_prob, cfg.workers
    return data


# ---- hybrid_lm recipes ------------------------------------------------------------------------
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
    budget_fraction: float | None = None  # DEFAULT_BUDGET_FRACTION when no budget is given
    search: HybridSearchConfig = field(default_factory=HybridSearchConfig)


def is_hybrid_recipe(raw: Any) -> bool:
    return isinstance(raw, dict) and str(raw.get("space", "")).startswith("hybrid_lm")


def hybrid_recipe_from_dict(raw: Any, source: str) -> HybridRecipe:
    recipe = _fill(HybridRecipe, raw, "", source)
    check_budget_and_search(recipe, source)
    if recipe.budget_ms is None and recipe.budget_fraction is None:
        recipe.budget_fraction = DEFAULT_BUDGET_FRACTION
    if recipe.proxy.device != "cpu" and not recipe.proxy.device.startswith("cuda"):
        raise ValueError(f"{source}: proxy.device must be cpu or cuda[:N], but got {recipe.proxy.device!r}")
    try:
        space = load_space(recipe.space)
        space.from_str(recipe.baseline)
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return recipe


def load_any_recipe(path: str | Path) -> Recipe | HybridRecipe:
    """An image recipe, or a hybrid_lm one when its `space` is hybrid_lm."""
    raw = _read_yaml(path)
    return hybrid_recipe_from_dict(raw, str(path)) if is_hybrid_recipe(raw) else recipe_from_dict(raw, str(path))
