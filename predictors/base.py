"""The predictor contract: fit on many devices, adapt to a new one from a few samples, predict ms.

Scikit-learn's habits: constructors only store parameters; fitted state ends in `_`.
Files are safetensors (arrays) + JSON (everything else); nothing is ever pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

Layout = dict[str, list[int]]  # block name -> [start, stop) columns of the feature matrix

FORMAT = "hwnas-predictor/1"


class NotFittedError(RuntimeError):
    pass


class Predictor:
    """Base class. X is (n, d) features laid out by `layout`; latencies are milliseconds."""

    name: ClassVar[str] = ""

    def __init__(self, layout: Layout | None = None, seed: int = 0) -> None:
        self.layout = layout
        self.seed = seed

    # ---- parameters ------------------------------------------------------------------------
    def get_params(self) -> dict[str, Any]:
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def block(self, X: np.ndarray, name: str) -> np.ndarray:
        if not self.layout or name not in self.layout:
            raise ValueError(
                f"predictor {self.name!r} needs the feature block {name!r}; layout has {sorted(self.layout or {})}"
            )
        start, stop = self.layout[name]
        return np.asarray(X[:, start:stop], dtype=np.float64)

    # ---- to implement ----------------------------------------------------------------------
    def fit(self, X: np.ndarray, Y: np.ndarray) -> Predictor:
        """Meta-train on source devices: Y is (n, devices) in ms, NaN where not measured."""
        return self

    def adapt(self, X_ref: np.ndarray, y_ref: np.ndarray) -> Predictor:
        """Calibrate to a new device from a few (arch features, ms) pairs."""
        raise NotImplementedError

    def predict(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def reference_features(self, X: np.ndarray) -> np.ndarray:
        """The features whose span the references should cover (the calibration's regressors)."""
        return self.block(X, "agnostic")

    def choose_references(self, X_pool: np.ndarray, n: int) -> list[int]:
        """Rows of X_pool worth measuring on a new device: a D-optimal design on `reference_features` among the
        networks that execute something (`executing`), and one network that executes nothing, the one with the
        most raw computation (the largest FLOPs), where the pool has one: it tells a runtime that folds a constant
        network away from one that runs it, and costs the design no more than one row."""
        from predictors.reference import select_references

        live = self.executing(X_pool)
        if live.all() or live.sum() < n or n < 2:
            return select_references(self.reference_features(X_pool), n)
        rows = np.flatnonzero(live)
        chosen = [int(rows[i]) for i in select_references(self.reference_features(X_pool[rows]), n - 1)]
        dead = np.flatnonzero(~live)
        return [*chosen, int(dead[np.argmax(self.block(X_pool[dead], "agnostic")[:, 0])])]

    def executing(self, X: np.ndarray) -> np.ndarray:
        """Rows whose executed graph is not empty (all rows where the layout does not say what executes). A network
        that computes a constant compiles to almost nothing on LiteRT or OpenVINO and to a whole network elsewhere:
        one such reference says which, several outweigh every other reference in a log-space fit."""
        if not self.layout or "executed" not in self.layout:
            return np.ones(len(X), bool)
        return self.block(X, "executed").any(axis=1)

    # ---- state -----------------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        """Fitted arrays (attributes ending in `_` that are arrays)."""
        return {k: v for k, v in vars(self).items() if k.endswith("_") and isinstance(v, np.ndarray)}

    def _scalars(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k.endswith("_") and not isinstance(v, np.ndarray)}

    def check_fitted(self, attr: str) -> None:
        if getattr(self, attr, None) is None:
            raise NotFittedError(
                f"predictor {self.name!r} is not {'adapted' if 'adapt' in attr or attr.startswith('w') else 'fitted'} "
                "yet"
            )

    def save(self, path: str | Path, meta: dict[str, Any] | None = None) -> None:
        """Write `path`.safetensors and `path`.json."""
        from safetensors.numpy import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {k: np.ascontiguousarray(v) for k, v in self._arrays().items()}
        save_file(arrays, str(with_suffix(path, ".safetensors")))
        doc = {
            "format": FORMAT,
            "predictor": self.name,
            "params": self.get_params(),
            "fitted": self._scalars(),
            "meta": meta or {},
        }
        with_suffix(path, ".json").write_text(json.dumps(doc, indent=1, default=_json_default))


def with_suffix(path: Path, suffix: str) -> Path:
    base = str(path)
    for s in (".json", ".safetensors"):
        if base.endswith(s):
            base = base[: -len(s)]
    return Path(base + suffix)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(f"cannot store {type(o).__name__} in a predictor file")


MAX_PREDICTOR_BYTES = 64 << 20


def read_meta(path: str | Path) -> dict[str, Any]:
    p = with_suffix(Path(path), ".json")
    if p.exists() and (not p.is_file() or p.stat().st_size > MAX_PREDICTOR_BYTES):
        what = "is not a regular file" if not p.is_file() else f"is over {MAX_PREDICTOR_BYTES >> 20} MiB"
        raise ValueError(f"predictor file {str(p)!r} {what}")
    try:
        doc = json.loads(p.read_text())
    except OSError as err:
        raise ValueError(f"cannot read predictor {str(p)!r}: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ValueError(f"predictor file {str(p)!r} is not JSON: {err.msg}") from None
    except RecursionError:
        raise ValueError(f"predictor file {str(p)!r} nests too deeply to be a predictor") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        got = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise ValueError(f"{str(p)!r} is not an hwnas predictor (format {got!r}, expected {FORMAT!r})")
    for field, kind in (("predictor", str), ("params", dict), ("fitted", dict), ("meta", dict)):
        if not isinstance(doc.get(field), kind):
            raise ValueError(f"{str(p)!r}: {field} must be a {kind.__name__}, but got {doc.get(field)!r:.60}")
    for field in ("space", "kind", "feature_space"):
        if field in doc["meta"] and not isinstance(doc["meta"][field], str):
            raise ValueError(f"{str(p)!r}: meta.{field} must be a string, but got {doc['meta'][field]!r:.60}")
    return doc


def load(path: str | Path) -> tuple[Predictor, dict[str, Any]]:
    """A saved predictor and its metadata (safetensors + JSON; never unpickles)."""
    from safetensors.numpy import load_file

    from predictors.registry import create, predictor_class

    doc = read_meta(path)
    try:
        check_params(predictor_class(doc["predictor"]), doc["params"], with_suffix(Path(path), ".json"))
        pred = create(doc["predictor"], **doc["params"])
    except TypeError as err:
        raise ValueError(f"{path}: the predictor's params do not fit {doc['predictor']!r}: {err}") from None
    for k, v in doc["fitted"].items():
        setattr(pred, _fitted_name(k, path), v)
    st = with_suffix(Path(path), ".safetensors")
    try:
        arrays = load_file(str(st))
    except Exception as err:
        raise ValueError(f"cannot read predictor weights {str(st)!r}: {err}") from None
    for k, v in arrays.items():
        setattr(pred, _fitted_name(k, path), v)
    return pred, doc["meta"]


# a predictor's integer and float params (widths, steps, seeds, rates) stay below this: a larger one is not a file
# hwnas wrote, and would make loading or predicting take hours
MAX_PARAM = 10**7


def check_params(cls: type, params: Any, path: str | Path) -> None:
    """Each param has the type of its constructor default (an int where the default is an int, a finite number
    where it is a float, ...), numbers in [0, MAX_PARAM], and a layout of named [start, stop) column blocks."""
    import inspect

    if not isinstance(params, dict):
        raise ValueError(f"{path}: params must be a mapping, but got {type(params).__name__}")
    signature = inspect.signature(cls.__init__).parameters
    for name, value in params.items():
        if name not in signature or name == "self":
            continue  # the constructor names it (TypeError, with the names it takes)
        default = signature[name].default
        if name == "layout":
            _check_layout(value, path)
        elif isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{path}: params.{name} must be true or false, but got {value!r}")
        elif isinstance(default, (int, float)):
            number = isinstance(value, int) if isinstance(default, int) else isinstance(value, (int, float))
            if isinstance(value, bool) or not number or not 0 <= value <= MAX_PARAM:
                kind = "a whole number" if isinstance(default, int) else "a number"
                raise ValueError(f"{path}: params.{name} must be {kind} in [0, {MAX_PARAM:g}], but got {value!r}")
        elif isinstance(default, str) and not isinstance(value, str):
            raise ValueError(f"{path}: params.{name} must be a string, but got {value!r}")


def _check_layout(layout: Any, path: str | Path) -> None:
    if layout is None:
        return
    if not isinstance(layout, dict):
        raise ValueError(f"{path}: params.layout must be a mapping of feature blocks, but got {type(layout).__name__}")
    for name, v in layout.items():
        ints = isinstance(v, list) and all(isinstance(i, int) and not isinstance(i, bool) for i in v)
        if not ints or (name not in ("gene_sizes", "gene_edges") and not (len(v) == 2 and 0 <= v[0] < v[1])):
            raise ValueError(f"{path}: params.layout.{name} must be [start, stop) columns, but got {v!r}")


def _fitted_name(key: str, path: str | Path) -> str:
    """A fitted attribute's name, as a file may set it: `name_` (scikit-learn's rule), never a dunder."""
    if not (key.isidentifier() and key.endswith("_") and not key.startswith("_")):
        raise ValueError(f"{path}: {key!r} is not the name of a fitted attribute (a name ending in '_')")
    return key
