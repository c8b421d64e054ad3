"""The drift anchor's scale: a slow first group (a cold or busy start) does not set the milliseconds of a file, and
two profiling runs of one device give rows on one scale."""

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


def test_two_profiling_runs_with_a_slow_first_group_give_rows_on_one_scale(tmp_path):
    space = load_space("nasbench201")
    archs = sample_archs(space, 40, seed=3)
    # run one: a cold warm-up, then its first group 1.5x slow; run two: one group, quiet
    first, second = tmp_path / "truth.csv", tmp_path / "cal.csv"
    profile(space, SlowStart([2.0, 1.5]), archs[:30], first, group_size=10)
    profile(space, SlowStart([2.0]), archs[30:], second, group_size=10)
    rows = pd.read_csv(first)
    assert rows.loc[rows["group"] == 0, "raw_ms"].gt(1.4 * rows.loc[rows["group"] == 0, "arch"].map(true_ms)).all()
    for path in (first, second):
        got = read_latencies(path, device="slowstart")
        err = [abs(ms / true_ms(a) - 1) for a, ms in got.items()]
        assert max(err) < 0.01, (path.name, max(err))  # the quiet machine's milliseconds, whichever group
    _, y, _ = read_measurements(space, str(second))
    assert np.allclose(y, [true_ms(space.to_str(a)) for a in archs[30:]], rtol=0.01)


def test_rows_written_before_a_quieter_group_are_rescaled_when_read(tmp_path):
    """A file whose only group ran slow (its level then that group's) is rescaled once a quieter reading of the
    anchor arrives in a later run: every row says the level it is normalised to."""
    space = load_space("nasbench201")
    archs = sample_archs(space, 20, seed=4)
    out = tmp_path / "p.csv"
    profile(space, SlowStart([1.3, 1.3]), archs[:10], out, group_size=10)
    profile(space, SlowStart([1.0, 1.0]), archs[10:], out, group_size=10)
    got = read_latencies(out, device="slowstart")
    assert len(got) == 20 and max(abs(ms / true_ms(a) - 1) for a, ms in got.items()) < 0.01
    written = pd.read_csv(out)
    assert written["anchor_ref_ms"].iloc[0] > written["anchor_ref_ms"].iloc[-1]  # as written at the time


def test_anchor_level_is_a_low_quantile_of_the_readings():
    assert anchor_level([]) is None
    assert anchor_level([5.58, 3.7, 3.63, 3.86, 3.75]) == 3.63
    assert anchor_level([4.04]) == 4.04
