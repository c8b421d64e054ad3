"""A busy machine: noisy timings are flagged in the row, warned about, measured again, and refused by calibrate
and run; measurements of another device or machine never mix with this one's."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import devices
from devices.base import Device
from devices.timing import LoadMeter, Runner
from nas.cli.main import main
from nas.latency.profile import measure_archs, profile
from nas.latency.tables import COLUMNS, LEGACY_COLUMNS, read_latencies
from search_spaces import load_space, sample_archs


class _Samples(Runner):
    def __init__(self, device: NoisyDevice, base: float) -> None:
        self.device, self.base = device, base

    def run(self, n: int) -> np.ndarray:
        spread = 2.0 if self.device.noisy else 0.02
        return self.base * (1 + spread * self.device.rng.random(n))


class NoisyDevice(Device):
    """Latency from the architecture's string length, its timings spread wide while `noisy` is set, and reported
    contended while `busy` is set."""

    name = "noisy"
    drifts = False

    def __init__(self) -> None:
        super().__init__("noisy")
        self.noisy, self.busy, self.rng = False, False, np.random.default_rng(0)
        self.policy = devices.TimingPolicy(warmup_runs=0, warmup_seconds=0, runs_per_round=10, min_rounds=2)
        self.after_group = None

    def prepare(self, model, input_shape, arch=None) -> Runner:
        return _Samples(self, 1 + len(arch or "") / 100)

    def contended(self, other_cores: float, own_cores: float) -> bool:
        return self.busy

    def measure_many(self, *args, **kwargs):
        out = super().measure_many(*args, **kwargs)
        if self.after_group:
            self.after_group(self)
        return out


@pytest.fixture
def space():
    return load_space("nasbench201")


def test_a_group_measured_while_the_machine_is_busy_is_flagged_warned_and_measured_again(space, tmp_path):
    device, out, logs = NoisyDevice(), tmp_path / "p.csv", []
    archs = sample_archs(space, 30, seed=0)
    profile(space, device, archs[:20], out, group_size=10, log=logs.append)
    assert logs == [] and (pd.read_csv(out)["noisy"] == 0).all()

    def quiet_again(dev):
        dev.noisy = False

    device.noisy, device.after_group = True, quiet_again  # the other work stops after one group
    rows = profile(space, device, archs, out, group_size=10, log=logs.append)
    assert [r["noisy"] for r in rows] == [1] * 10 + [0] * 10
    assert len(logs) == 1 and "10 of 10 architectures of group 2 measured noisy" in logs[0]
    assert "busy with other work; measuring them again (1 of 2)" in logs[0]
    df = pd.read_csv(out)
    assert len(df) == 40 and df["noisy"].sum() == 10  # every measurement kept; the latest row of an arch counts
    latest = read_latencies(out, device="noisy")
    assert len(latest) == 30 and set(latest.values()) == set(df[df["noisy"] == 0]["latency_ms"])


def test_a_busy_cpu_flags_rows_from_the_first_group_and_a_run_refuses_them(space, tmp_path):
    device, out, logs = NoisyDevice(), tmp_path / "measured.csv", []
    device.busy = True
    archs = sample_archs(space, 5, seed=1)
    with pytest.raises(ValueError, match=r"5 architectures stayed noisy on noisy after 3 attempts .* start again"):
        measure_archs(space, device, archs, out, log=logs.append)
    assert len(logs) == 3 and "kept, flagged noisy" in logs[-1]
    assert len(pd.read_csv(out)) == 15
    device.busy = False  # started again on a quiet machine: only the noisy ones are measured, once each
    measured = measure_archs(space, device, archs + sample_archs(space, 2, seed=9), out, log=logs.append)
    assert len(measured) == 7 and len(pd.read_csv(out)) == 22


def test_calibrate_refuses_noisy_rows_unless_told_and_names_them(space, tmp_path, capsys):
    device, out = NoisyDevice(), tmp_path / "p.csv"
    device.busy = True
    profile(space, device, sample_archs(space, 8, seed=2), out, retries=0, log=lambda m: None)
    argv = ["calibrate", "--space", "nasbench201", "--measurements", str(out), "--out", str(tmp_path / "c.json")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "8 of 8 rows are flagged noisy (lines 2, 3, 4, 5, 6, ...:" in err
    assert main([*argv, "--accept-noisy"]) == 0


def test_calibrate_names_a_reference_far_off_the_others(help_dir, tmp_path, capsys):
    table = pd.read_csv(help_dir / "nasbench201.csv.gz")
    rows = table[["arch", "silver_4114"]].head(10).rename(columns={"silver_4114": "latency_ms"})
    rows.to_csv(tmp_path / "clean.csv", index=False)
    argv = ["calibrate", "--space", "nasbench201", "--out", str(tmp_path / "c.json"), "--measurements"]
    assert main([*argv, str(tmp_path / "clean.csv")]) == 0
    assert "warning" not in capsys.readouterr().err  # a real device's ten references: nothing named
    rows.loc[rows.index[6], "latency_ms"] = 9_999_999.0  # inside the accepted range, a typo all the same
    rows.to_csv(tmp_path / "typo.csv", index=False)
    assert main([*argv, str(tmp_path / "typo.csv")]) == 0
    err = capsys.readouterr().err
    assert f"{rows['arch'].iloc[6]} at 1e+07 ms is" in err and "x the others' time per multiply-add" in err
    assert len(err.strip().splitlines()) == 1


def test_a_profile_written_before_the_noise_flag_resumes_with_its_rows(space, tmp_path):
    device, out = NoisyDevice(), tmp_path / "p.csv"
    archs = sample_archs(space, 6, seed=3)
    profile(space, device, archs[:3], out)
    old = pd.read_csv(out, dtype=str, keep_default_na=False)[list(LEGACY_COLUMNS)]
    old.to_csv(out, index=False)
    assert len(profile(space, device, archs, out)) == 3
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    assert list(df.columns) == list(COLUMNS) and len(df) == 6
    assert df["arch"].iloc[:3].tolist() == old["arch"].tolist() and (df["noisy"] == "0").all()


def test_rows_of_another_machine_or_software_are_refused_not_mixed(space, tmp_path):
    device, out = NoisyDevice(), tmp_path / "p.csv"
    archs = sample_archs(space, 4, seed=4)
    profile(space, device, archs[:2], out)
    df = pd.read_csv(out, dtype=str, keep_default_na=False)
    df["onnxruntime"] = "0.9.0"
    df.to_csv(out, index=False)
    for todo in (archs, archs[:2]):  # new rows, and rows already there (a run's budget, its verification)
        with pytest.raises(ValueError, match=r"holds rows of noisy measured with onnxruntime='0.9.0', but this"):
            profile(space, device, todo, out)


def test_latencies_are_read_for_the_device_asked_for(tmp_path):
    out = tmp_path / "m.csv"
    pd.DataFrame(
        {"arch": ["a", "b", "a"], "device": ["x:threads=1", "x:threads=1", "x:threads=2"], "latency_ms": [1, 2, 5]}
    ).to_csv(out, index=False)
    assert read_latencies(out, device="x:threads=1") == {"a": 1.0, "b": 2.0}
    assert read_latencies(out, device="x:threads=2") == {"a": 5.0}
    with pytest.raises(ValueError, match="has no column 'space'"):
        read_latencies(out, space="s")


def test_the_contention_rule_of_cpu_devices():
    ort = devices.get("ort-cpu:threads=1")
    assert not ort.contended(0.0, 1.0)  # quiet
    assert not ort.contended(1.0, 1.0)  # another busy process beside one thread: changed nothing (measured)
    assert ort.contended(1.3, 0.7)  # two: the measuring process lost its core
    assert not ort.contended(float("nan"), float("nan"))  # unknown load is never an error
    assert not devices.get(f"table:{__file__}:x").contended(2.0, 0.1)  # not CPU-bound


@pytest.mark.slow
def test_the_load_meter_sees_other_processes_busy():
    burn = "import time\nt = time.time()\nwhile time.time() - t < 3: pass\n"
    procs = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(2)]
    try:
        time.sleep(0.3)
        with LoadMeter() as meter:
            time.sleep(1.5)
    finally:
        for p in procs:
            p.wait()
    assert meter.cores > 1.2 and meter.own < 0.2
