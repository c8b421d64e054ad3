"""Profiling: rows as they are produced, resume without repeats, one-line errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import devices
from nas.cli.main import main
from nas.latency.profile import profile
from nas.latency.tables import COLUMNS, read_rows
from search_spaces import load_space, sample_archs


@pytest.fixture
def table(tmp_path):
    space = load_space("nasbench201")
    archs = sample_archs(space, 25, seed=0)
    path = tmp_path / "lat.csv"
    rng = np.random.default_rng(0)
    pd.DataFrame({"arch": [space.to_str(a) for a in archs], "dev": rng.uniform(1, 9, len(archs))}).to_csv(
        path, index=False
    )
    return space, archs, path


def test_profile_writes_one_row_per_arch_with_fingerprint(table, tmp_path):
    space, archs, path = table
    out = tmp_path / "out.csv"
    rows = profile(space, devices.get(f"table:{path}:dev"), archs, out, group_size=7)
    df = pd.read_csv(out)
    assert list(df.columns) == list(COLUMNS) and len(df) == len(rows) == 25
    truth = pd.read_csv(path).set_index("arch")["dev"]
    np.testing.assert_allclose(df["raw_ms"], truth.loc[df["arch"]].to_numpy(), rtol=1e-4)
    assert df["cpu_model"].notna().all() and (df["device"] == f"table:{path}:dev").all()
    assert sorted(df["group"].unique()) == [0, 1, 2, 3]


@pytest.mark.parametrize("cut", [5, 40])  # bytes of the last row lost
def test_a_row_cut_by_a_kill_is_measured_again_and_the_file_stays_whole(table, tmp_path, cut):
    space, archs, path = table
    out, device = tmp_path / "out.csv", devices.get(f"table:{path}:dev")
    profile(space, device, archs[:6], out, group_size=3)
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - cut])  # the process died while writing the last row
    rows = profile(space, device, archs[:8], out, group_size=3)
    df = pd.read_csv(out)
    assert len(rows) == 3 and len(df) == 8 and df["arch"].is_unique and df["latency_ms"].notna().all()


def test_a_stopped_profile_resumes_where_it_was(table, tmp_path):
    space, archs, path = table
    out = tmp_path / "out.csv"
    device = devices.get(f"table:{path}:dev")

    def stop_after_two_groups(done: int, total: int) -> None:
        if done >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        profile(space, device, archs, out, group_size=5, progress=stop_after_two_groups)
    assert len(pd.read_csv(out)) == 10  # both finished groups are on disk
    rows = profile(space, device, archs, out, group_size=5)
    df = pd.read_csv(out)
    assert len(rows) == 15 and len(df) == 25 and df["arch"].is_unique
    assert set(df["group"]) == {0, 1, 2, 3, 4}


def test_drift_correction_rescales_every_group_to_the_anchors_quiet_level(tmp_path):
    space = load_space("nasbench201")
    archs = sample_archs(space, 6, seed=1)
    out = tmp_path / "out.csv"
    policy = devices.TimingPolicy(warmup_runs=1, warmup_seconds=0, runs_per_round=2, min_rounds=2, max_rounds=3)
    profile(space, devices.get("ort-cpu"), archs[:3], out, group_size=3, policy=policy)
    profile(space, devices.get("ort-cpu"), archs, out, group_size=3, policy=policy)
    df = read_rows(out, device="ort-cpu")
    assert len(df) == 6
    # each group scaled to the quietest anchor reading so far, which the row names
    anchors = df.drop_duplicates("group")["anchor_ms"].tolist()
    assert df["anchor_ref_ms"].tolist() == pytest.approx([min(anchors[: g + 1]) for g in df["group"]], rel=1e-3)
    np.testing.assert_allclose(df["latency_ms"], df["raw_ms"] * df["anchor_ref_ms"] / df["anchor_ms"], rtol=1e-3)


def test_cli_profiles_real_architectures_on_this_cpu(tmp_path, capsys):
    archs = tmp_path / "archs.txt"
    assert main(["sample", "--space", "ofa_mbv3:resolutions=[32],num_classes=10", "-n", "3", "--seed", "4"]) == 0
    archs.write_text(capsys.readouterr().out)
    out = tmp_path / "p.csv"
    argv = [
        "profile",
        "--device",
        "ort-cpu:threads=1",
        "--space",
        "ofa_mbv3:resolutions=[32],num_classes=10",
        "--archs",
        str(archs),
        "--out",
        str(out),
        "--min-rounds",
        "2",
        "--max-rounds",
        "3",
    ]
    assert main(argv) == 0
    df = read_rows(out)  # the latest row of each architecture (a busy machine measures noisy ones again)
    assert len(df) == 3 and (df["latency_ms"] > 0).all()
    assert main(argv) == 0 and len(read_rows(out)) == 3  # resumed: nothing measured twice but noisy rows


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["profile", "--device", "ort-cpu", "--space", "nope", "-n", "2", "--out", "{tmp}/o.csv"],
            "Unknown search space 'nope'",
        ),
        (
            ["profile", "--device", "gpu9", "--space", "fbnet", "-n", "2", "--out", "{tmp}/o.csv"],
            "Unknown device 'gpu9'",
        ),
        (
            ["profile", "--device", "ort-cpu", "--space", "fbnet", "--archs", "{tmp}/bad.txt", "--out", "{tmp}/o.csv"],
            "bad.txt:2: fbnet: unknown block 'k9_e9'",
        ),
        (
            ["profile", "--device", "ort-cpu", "--space", "fbnet", "--archs", "{tmp}/none.txt", "--out", "{tmp}/o.csv"],
            "cannot read architectures file",
        ),
        (
            ["profile", "--device", "ort-cpu", "--space", "nasbench201", "-n", "1", "--out", "{tmp}/notcsv.csv"],
            "is not an hwnas profile",
        ),
        (
            ["profile", "--device", "ort-cpu", "--space", "nasbench201", "-n", "1", "--out", "{tmp}/bad.txt/o.csv"],
            "cannot write profile file",
        ),
    ],
)
def test_cli_errors_are_one_line_and_name_the_culprit(argv, message, tmp_path, capsys):
    good = "-".join(["k3_e1"] * 22)
    (tmp_path / "bad.txt").write_text(f"{good}\n{good.replace('k3_e1', 'k9_e9', 1)}\n")
    (tmp_path / "notcsv.csv").write_text("hello,world\n1,2\n")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_two_processes_profiling_into_one_file_take_turns(table, tmp_path):
    import subprocess
    import sys

    space, archs, path = table
    (tmp_path / "archs.txt").write_text("\n".join(space.to_str(a) for a in archs) + "\n")
    out = tmp_path / "shared.csv"
    argv = [sys.executable, "-m", "nas.cli", "profile", "--space", "nasbench201", "--device", f"table:{path}:dev"]
    argv += ["--archs", str(tmp_path / "archs.txt"), "--out", str(out), "--group", "5"]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    df = pd.read_csv(out)
    assert len(df) == 25 and df["arch"].is_unique  # one measured them all, the other found them there
