"""The drift anchor's scale: a cold first reading does not set the milliseconds of a file, a busy group is scaled
to the quiet level, and two profiling runs of one device give rows on one scale."""

from __future__ import annotations

import numpy as np
import pandas as pd

import devices
from devices.base import Device
from devices.timing import Runner
from nas.latency.profile import profile
from nas.latency.tables import anchor_level, read_latencies, read_measurements
from search_spaces import load_space, sample_archs


def true_ms(name: str) -> float:
    return 1 + len(name) / 100


class _Samples(Runner):
    def __init__(self, device: SlowStart, base: float) -> None:
        self.device, self.base = device, base

    def run(self, n: int) -> np.ndarray:
        return self.base * self.device.factor * (1 + 0.001 * self.device.rng.random(n))


class SlowStart(Device):
    """A drifting device whose every `measure_many` call (a group) runs `schedule`'s next slowdown, then 1.0."""

    name = "slowstart"

    def __init__(self, schedule: list[float]) -> None:
        super().__init__("slowstart")
        self.schedule, self.factor, self.rng = list(schedule), 1.0, np.random.default_rng(0)
        self.policy = devices.TimingPolicy(warmup_runs=0, warmup_seconds=0, runs_per_round=10, min_rounds=2)

    def prepare(self, model, input_shape, arch=None) -> Runner:
        return _Samples(self, true_ms(arch or ""))

    def contended(self, other_cores: float, own_cores: float) -> bool:
        return False

    def measure_many(self, *args, **kwargs):
        self.factor = self.schedule.pop(0) if self.schedule else 1.0
        return super().measure_many(*args, **kwargs)


def test_two_profiling_runs_with_a_cold_start_and_a_busy_group_give_rows_on_one_scale(tmp_path):
    """A cold first reading of the anchor (2x) is a warm-up that is not kept, and a busy group (1.3x) is scaled
    down to the quiet level: every row of both runs is the quiet machine's milliseconds. Before, the first reading
    set the scale of every later row."""
    space = load_space("nasbench201")
    archs = sample_archs(space, 40, seed=3)
    first, second = tmp_path / "truth.csv", tmp_path / "cal.csv"
    profile(space, SlowStart([2.0, 1.0, 1.3, 1.0]), archs[:30], first, group_size=10)
    profile(space, SlowStart([2.0]), archs[30:], second, group_size=10)
    rows = pd.read_csv(first)
    busy = rows["group"] == 1
    assert rows.loc[busy, "raw_ms"].gt(1.25 * rows.loc[busy, "arch"].map(true_ms)).all()
    for path in (first, second):
        got = read_latencies(path, device="slowstart")
        err = [abs(ms / true_ms(a) - 1) for a, ms in got.items()]
        assert max(err) < 0.01, (path.name, max(err))  # the quiet machine's milliseconds, whichever group
    _, y, _ = read_measurements(space, str(second))
    assert np.allclose(y, [true_ms(space.to_str(a)) for a in archs[30:]], rtol=0.01)
    assert rows["anchor_ref_ms"].nunique() == 1  # each row says the level it was scaled to


def test_anchor_level_is_a_low_quantile_of_the_readings():
    assert anchor_level([]) is None
    assert anchor_level([5.58, 3.7, 3.63, 3.86, 3.75]) == 3.63
    assert anchor_level([4.04]) == 4.04
