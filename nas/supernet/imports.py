"""`hwnas import-supernet`: a supernet trained elsewhere (Once-for-All's published checkpoints) as an hwnas
supernet run directory, which `hwnas run` (training skipped), `eval-subnet`, `export` and `quantize` accept."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from nas.rundir import CHECKPOINT, RunDir
from nas.supernet.train import CHECKPOINT_FORMAT
from nas.training.checkpoints import safe_load, save_checkpoint
from search_spaces import load_space

SOURCES = ("ofa",)


@dataclass
class Imported:
    run: Path
    space: str
    width: float
    num_classes: int
    tensors: int
    sha256: str


def _read(path: Path) -> Any:
    """A checkpoint file read without unpickling; anything else is an error naming it."""
    if not path.is_file():
        raise ValueError(f"{path}: no such checkpoint file")
    try:
        return safe_load(path)
    except Exception as err:  # torch raises many kinds for a file it cannot read safely
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path}: not a checkpoint that loads with weights_only=True ({first[:200]})") from None


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def import_supernet(
    path: str | Path,
    out: str | Path,
    source: str = "ofa",
    width: float | None = None,
    data_path: str | None = None,
    data_resolution: int = 224,
    resolutions: Sequence[int] | None = None,
) -> Imported:
    """Write `out` (recipe.yaml and checkpoint.pt) from the checkpoint at `path`; the width is read from the
    checkpoint and must equal `width` when one is given."""
    from search_spaces.ofa_mbv3.ofa_format import detect_width, to_supernet_state, unwrap

    if source not in SOURCES:
        raise ValueError(f"Unknown supernet source {source!r}; known: {', '.join(SOURCES)}")
    path, run = Path(path), RunDir(out)
    if (run / CHECKPOINT).exists():
        raise ValueError(f"{run / CHECKPOINT} exists already; give another --out (nothing is overwritten)")
    state = unwrap(_read(path), str(path))
    found = detect_width(state, str(path))
    if width is not None and abs(found - width) > 1e-9:
        raise ValueError(f"{path}: the checkpoint is OFA's width {found} supernet, but --width {width} was given")
    classifier = state.get("classifier.linear.weight")
    if classifier is None:
        raise ValueError(f"{path}: no 'classifier.linear.weight': not a checkpoint of ofa's OFAMobileNetV3")
    if classifier.ndim != 2 or classifier.shape[0] < 1:
        raise ValueError(
            f"{path}: 'classifier.linear.weight' has shape {list(classifier.shape)}: a classifier needs at least one "
            "class (a [classes, features] matrix)"
        )
    bad = [k for k, v in state.items() if torch.is_tensor(v) and v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise ValueError(
            f"{path}: {len(bad)} tensor(s) hold NaN or infinite values ({', '.join(bad[:3])}): not weights to import"
        )
    num_classes = int(classifier.shape[0])
    options = [f"width_mult={found}", f"num_classes={num_classes}"]
    if resolutions:
        options.insert(0, f"resolutions=[{','.join(str(int(r)) for r in resolutions)}]")
    spec = "ofa_mbv3:" + ",".join(options)
    net = load_space(spec).supernet(num_classes=num_classes)
    net.load_state_dict(to_supernet_state(state, net.state_dict(), str(path), found), strict=True)
    digest = _sha256(path)
    run.create()
    recipe: dict[str, Any] = {
        "space": spec,
        "data": {"name": "imagefolder", "path": data_path, "resolution": int(data_resolution)},
    }
    run.write_recipe(recipe)
    save_checkpoint(
        {
            "model": net.state_dict(),
            "step": 0,
            "format": CHECKPOINT_FORMAT,
            "imported": {"from": source, "file": str(path), "sha256": digest, "width": found},
        },
        run / CHECKPOINT,
    )
    return Imported(run.path, spec, found, num_classes, len(state), digest)
