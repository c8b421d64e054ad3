"""Real kills and a really full disk: a process killed with SIGKILL while it writes a checkpoint or a profile row,
or stopped by a file-size limit, leaves every file readable and its work resumes with nothing lost or done twice.
(A search worker killed mid-trial: tests/nas/search/test_search.py.)"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch

from search_spaces import load_space, sample_archs

pytestmark = pytest.mark.slow

SPEC = "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"

TRAIN = """
import os, signal, sys
import torch
from nas.data import Split, TaskData, digits
from nas.supernet.train import TrainConfig, train
from search_spaces import load_space
from search_spaces.ofa_mbv3 import OFASupernet

out, die_at_save = sys.argv[1], int(sys.argv[2])
d = digits()
cut = lambda s, k: Split(s.images[:k], s.labels[:k])
data = TaskData(d.name, cut(d.train, 256), cut(d.val, 128), cut(d.test, 128), 10, d.mean, d.std)
saves, real = [], torch.save

def save(obj, f, *args, **kwargs):
    saves.append(f)
    if len(saves) == die_at_save:  # half the file on disk, then SIGKILL: no handler, no cleanup runs
        with open(f, "wb") as half:
            half.write(b"PK\\x03\\x04" + b"\\0" * 1000)
            half.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    real(obj, f, *args, **kwargs)

torch.save = save
torch.manual_seed(0)
cfg = TrainConfig(epochs=1, batch_size=32, lr=0.05, random_subnets=1, checkpoint_every=3, seed=1)
train(OFASupernet(load_space("SPEC")), data, cfg, out)
""".replace("SPEC", SPEC)


def test_training_killed_during_a_checkpoint_save_resumes_exactly(tmp_path):
    straight = tmp_path / "straight"
    assert subprocess.run([sys.executable, "-c", TRAIN, str(straight), "0"], timeout=600).returncode == 0
    killed = tmp_path / "killed"
    proc = subprocess.run([sys.executable, "-c", TRAIN, str(killed), "2"], timeout=600)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(killed / "checkpoint.pt", weights_only=True)["step"] == 3  # the save of step 6 never landed
    assert subprocess.run([sys.executable, "-c", TRAIN, str(killed), "0"], timeout=600).returncode == 0
    a = torch.load(straight / "checkpoint.pt", weights_only=True)
    b = torch.load(killed / "checkpoint.pt", weights_only=True)
    assert a["step"] == b["step"] == 8
    for name, tensor in a["model"].items():
        torch.testing.assert_close(tensor, b["model"][name], rtol=0, atol=0, msg=name)
    assert pd.read_csv(killed / "metrics.csv")["step"].tolist() == [8]
    assert not list(killed.glob("*.tmp"))  # the killed process's half file is cleaned up by the next save


PROFILE = """
import csv, os, signal, sys
from nas.cli.main import main

die_at_row = int(sys.argv[1])
rows, real, real_init = [], csv.DictWriter.writerow, csv.DictWriter.__init__

def init(self, f, *args, **kwargs):
    self.file = f
    real_init(self, f, *args, **kwargs)

def writerow(self, row):
    rows.append(row)
    if len(rows) == die_at_row:  # half the row on disk, then SIGKILL
        line = ",".join(str(v) for v in row.values())
        self.file.write(line[: len(line) // 2])
        self.file.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, row)

csv.DictWriter.__init__, csv.DictWriter.writerow = init, writerow
sys.exit(main(sys.argv[2:]))
"""


@pytest.fixture
def table(tmp_path):
    space = load_space("nasbench201")
    archs = sample_archs(space, 25, seed=0)
    lat = tmp_path / "lat.csv"
    names = [space.to_str(a) for a in archs]
    pd.DataFrame({"arch": names, "dev": np.random.default_rng(0).uniform(1, 9, 25)}).to_csv(lat, index=False)
    (tmp_path / "archs.txt").write_text("\n".join(names) + "\n")
    argv = ["profile", "--space", "nasbench201", "--device", f"table:{lat}:dev", "--archs", str(tmp_path / "archs.txt")]
    return argv, names


def test_profiling_killed_during_a_row_write_resumes_with_every_row_once(table, tmp_path):
    argv, names = table
    out = tmp_path / "p.csv"
    argv = [*argv, "--out", str(out), "--group", "5"]
    proc = subprocess.run([sys.executable, "-c", PROFILE, "13", *argv], timeout=300)
    assert proc.returncode == -signal.SIGKILL
    assert not out.read_bytes().endswith(b"\n")  # the file ends in the middle of a row
    proc = subprocess.run([sys.executable, "-c", PROFILE, "0", *argv], timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert len(df) == 25 and sorted(df["arch"]) == sorted(names) and df["latency_ms"].notna().all()


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_while_profiling_is_one_line_and_the_rerun_completes(table, tmp_path):
    argv, names = table
    out = tmp_path / "p.csv"
    argv = [sys.executable, "-m", "nas.cli", *argv, "--out", str(out), "--group", "5"]
    proc = subprocess.run(argv, timeout=300, capture_output=True, text=True, preexec_fn=_file_size_limit(6000))
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()[-1]  # after the progress bar's last state
    assert err.startswith("hwnas: error: cannot write profile file") and "File too large" in err, proc.stderr
    assert "Traceback" not in proc.stderr
    kept = len(pd.read_csv(out, on_bad_lines="skip"))
    assert 0 < kept < 25
    proc = subprocess.run(argv, timeout=300, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_csv(out)
    assert len(df) == 25 and df["arch"].is_unique


def test_a_full_disk_during_a_checkpoint_save_is_one_line_and_keeps_nothing_broken(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        from nas.training.checkpoints import save_checkpoint
        import torch
        from pathlib import Path
        save_checkpoint({"model": {"w": torch.zeros(100_000)}, "step": int(sys.argv[2])}, Path(sys.argv[1]))
        """
    )
    path = tmp_path / "checkpoint.pt"
    assert subprocess.run([sys.executable, "-c", script, str(path), "1"], timeout=120).returncode == 0
    proc = subprocess.run(
        [sys.executable, "-c", script, str(path), "2"],
        timeout=120,
        capture_output=True,
        text=True,
        preexec_fn=_file_size_limit(100_000),
    )
    assert (
        proc.returncode != 0 and "cannot write the checkpoint" in proc.stderr and "previous one is kept" in proc.stderr
    )
    assert torch.load(path, weights_only=True)["step"] == 1 and not list(tmp_path.glob("*.tmp"))
