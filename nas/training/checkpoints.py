"""Checkpoints written whole or not at all (a temporary file, then a rename: a kill or a full disk during the
save leaves the previous checkpoint), and read without unpickling."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from nas.rundir import replaced_whole


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write `state` whole or not at all; a full disk is an error naming the file, the previous checkpoint kept."""
    try:
        with replaced_whole(path) as tmp:
            torch.save(state, tmp)
    except (OSError, RuntimeError) as err:  # torch reports a failed write as a RuntimeError
        reason = getattr(err, "strerror", None) or str(err).splitlines()[0]
        raise ValueError(f"{path}: cannot write the checkpoint ({reason}); the previous one is kept") from None


def safe_load(path: Path, map_location: Any = "cpu") -> Any:
    """`torch.load` that unpickles nothing but tensors and plain values (`weights_only=True`)."""
    with warnings.catch_warnings():  # a foreign pickle's protocol warning would be a second line of the error
        warnings.simplefilter("ignore", UserWarning)
        return torch.load(path, weights_only=True, map_location=map_location)


def load_checkpoint(path: Path, map_location: Any = "cpu") -> dict[str, Any]:
    """A checkpoint hwnas wrote (tensors and plain values only: `weights_only=True`); anything else is an
    error naming the file."""
    try:
        state = safe_load(path, map_location)
    except Exception as err:  # torch raises many kinds for a file it cannot read safely
        raise ValueError(
            f"{path}: not a checkpoint hwnas wrote ({type(err).__name__}); remove it to start over"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise ValueError(f"{path}: not a checkpoint hwnas wrote (no model weights and step); remove it to start over")
    return state
