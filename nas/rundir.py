"""A run directory: the one owner of its file names, its recipe.yaml and result.json, and of the two
append-only file kinds every cache uses (JSON lines that survive a kill mid-line, atomic rewrites)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

RECIPE = "recipe.yaml"
RESULT = "result.json"
REPORT = "report.md"
BEST = "best"
SUPERNET = "supernet"
QUANTIZED = "quantized"
MEASURED = "measured.csv"
CALIBRATION = "calibration.csv"
PREDICTOR = "predictor.json"
STUDY = "study.db"
TRIALS = "trials.csv"
PARETO = "pareto.csv"
PROXY = "proxy.jsonl"
ACCURACY = "accuracy.jsonl"
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.csv"


@contextlib.contextmanager
def replaced_whole(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` to write; `path` is replaced by it only when the block ends without
    an error, so a kill or a full disk leaves the previous file (checkpoints, result.json, recipe.yaml)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: two writers never share one
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    for stale in path.parent.glob(f"{path.name}.*.tmp"):  # left by a process killed while writing
        pid = stale.name[len(path.name) + 1 : -len(".tmp")]
        if pid.isdigit() and not process_alive(int(pid)):
            stale.unlink(missing_ok=True)


def process_alive(pid: int) -> bool:
    """Whether a process of this machine with that id exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


LOCK = ".lock"


def lock_exclusive(f: Any, waiting: Callable[[], None] | None = None) -> None:
    """Hold an exclusive lock on the open file `f` until it is closed (POSIX; elsewhere nothing is locked): a
    second process on the same file waits here, calling `waiting` first."""
    try:
        import fcntl
    except ImportError:
        return
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        if waiting is not None:
            waiting()
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)


def write_text_atomic(path: Path, text: str) -> None:
    with replaced_whole(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def drop_partial_line(path: Path) -> None:
    """Remove a last line that a kill or a full disk cut short (no newline at its end), so that the next
    append starts a line of its own; its work is done again. Reads the file only when there is one."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        f.truncate(f.read().rfind(b"\n") + 1)


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSON-lines cache; a last line cut short by a kill is skipped (its work is done again),
    any other bad line is an error naming the file and line."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                return
            raise ValueError(f"{path}:{n}: not a JSON line; remove the line or the file") from None


def append_jsonl(path: Path, row: dict[str, Any]) -> None:
    """Append one row and sync it to disk; a last line left unfinished by a kill is dropped first (its work is
    done again), so the new row starts a line of its own."""
    drop_partial_line(path)
    with path.open("ab") as f:
        f.write((json.dumps(row) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


class RunDir:
    """One `hwnas run` directory (image or hybrid_lm): where each of its files lives, and reading and writing
    its recipe and result."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    def create(self) -> RunDir:
        self.path.mkdir(parents=True, exist_ok=True)
        return self

    @contextlib.contextmanager
    def lock(self, log: Callable[[str], None] | None = None) -> Iterator[None]:
        """One process at a time in the block: two workers given the same run directory take turns training,
        measuring and calibrating instead of racing on its files."""
        with (self.path / LOCK).open("a") as f:
            lock_exclusive(f, log and (lambda: log(f"waiting for another hwnas process working in {self.path}")))
            yield

    @property
    def default_storage(self) -> str:
        """The Optuna storage of the run's study when the recipe names none."""
        return f"sqlite:///{(self.path / STUDY).resolve()}"

    def read_recipe(self) -> dict[str, Any]:
        """The recipe the run was made with, as YAML gave it ({} when it has none yet)."""
        path = self.path / RECIPE
        if not path.exists():
            return {}
        try:
            raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as err:
            raise ValueError(
                f"{path}: cannot read the run's recipe ({getattr(err, 'strerror', None) or err})"
            ) from None
        return raw if isinstance(raw, dict) else {}

    def write_recipe(self, raw: dict[str, Any]) -> None:
        write_text_atomic(self.path / RECIPE, yaml.safe_dump(raw, sort_keys=False))

    def read_result(self) -> dict[str, Any]:
        """result.json ({} before the run has finished)."""
        path = self.path / RESULT
        if not path.exists():
            return {}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, RecursionError) as err:
            raise ValueError(f"{path}: not a result hwnas wrote ({type(err).__name__})") from None

    def write_result(self, result: dict[str, Any]) -> None:
        write_text_atomic(self.path / RESULT, json.dumps(result, indent=2, default=_plain))

    def winner(self, arch: str | None, purpose: str) -> str:
        """`arch`, or the finished run's winner when `arch` is None."""
        if arch is not None:
            return arch
        winner = self.read_result().get("winner")
        if not winner:
            raise ValueError(f"{self.path} has no winner to {purpose} (no {RESULT} with a winner); pass --arch")
        return winner["arch"]

    def supernet_dir(self) -> Path:
        """Where the run's trained supernet is: its own supernet/ (named even when its checkpoint is gone), the run
        itself when it is a supernet run, or the run its recipe reused (`supernet:` in the run's recipe.yaml, never
        a path result.json remembers: a copied or moved run must not read another run's weights)."""
        own = self.path / SUPERNET
        if own.is_dir():
            return own
        if (self.path / CHECKPOINT).exists():  # a supernet run itself (hwnas train-supernet)
            return self.path
        reused = self.read_recipe().get("supernet")
        if isinstance(reused, str) and reused:
            return supernet_checkpoint_dir(reused)
        return own


def supernet_checkpoint_dir(path: str | Path) -> Path:
    """The folder holding a trained supernet's checkpoint: `path` itself, or a whole run's `path/supernet`."""
    path = Path(path)
    if not (path / CHECKPOINT).exists() and (path / SUPERNET / CHECKPOINT).exists():
        return path / SUPERNET
    return path


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and paths."""
    if hasattr(value, "item"):
        return value.item()
    return str(value)
