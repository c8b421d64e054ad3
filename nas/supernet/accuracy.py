"""Subnet accuracy from a trained supernet, cached by architecture string.

The cache is a JSON-lines file in the run directory, one line per evaluation, appended as each is
made, keyed by (checkpoint step, split, arch string), so a search that is stopped and resumed, or
a second search on the same run, evaluates no architecture twice."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devices.int8 import DEPLOYMENT
from nas.data import TaskData
from nas.rundir import append_jsonl, read_jsonl
from nas.supernet.train import correct_images, evaluate
from search_spaces import Supernet


class SubnetAccuracy:
    """`acc(arch) -> top-1` with BN recalibration (of the uniform int8 deployment with `int8`); results
    cached in `cache_path` when given."""

    def __init__(
        self,
        net: Supernet,
        data: TaskData,
        split: str = "val",
        cache_path: str | Path | None = None,
        tag: str = "",
        calib_batches: int = 5,
        int8: bool = False,
    ) -> None:
        self.net, self.data, self.split, self.calib_batches, self.int8 = net, data, split, calib_batches, int8
        self.tag = f"{tag}-{DEPLOYMENT}" if int8 else tag
        self.cache_path = Path(cache_path) if cache_path else None
        self.cache: dict[str, float] = {}
        self.hits = self.misses = 0
        for row in read_jsonl(self.cache_path) if self.cache_path else ():
            if row.get("tag") == self.tag and row.get("split") == split:
                self.cache[row["arch"]] = float(row["acc"])

    def __call__(self, arch: tuple) -> float:
        key = self.net.space.to_str(arch)
        if key in self.cache:
            self.hits += 1
            return self.cache[key]
        self.misses += 1
        return self._store(key, evaluate(self.net, arch, self.data, self.split, self.calib_batches, int8=self.int8))

    def correct(self, arch: tuple) -> np.ndarray:
        """Which images of the split the (float) subnet gets right, in order; the answers are not cached, their
        accuracy is (a float `SubnetAccuracy`), so asking for it next evaluates nothing again."""
        right = correct_images(self.net, arch, self.data, self.split, self.calib_batches)
        key = self.net.space.to_str(arch)
        if not self.int8 and key not in self.cache:
            self._store(key, float(right.mean()))
        return right

    def _store(self, key: str, acc: float) -> float:
        self.cache[key] = acc
        if self.cache_path:
            append_jsonl(self.cache_path, {"tag": self.tag, "split": self.split, "arch": key, "acc": acc})
        return acc
