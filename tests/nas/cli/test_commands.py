"""Every `hwnas` command runs in some test: the ones no other test needs run here on tiny settings, and a
static check fails when a command of the parser is invoked by no test at all."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nas.cli import main as cli
from nas.cli.main import main

TESTS = Path(__file__).resolve().parents[2]
TINY_OFA = "ofa_mbv3:resolutions=[32],width_mult=0.5,num_classes=10"


def _commands() -> set[tuple[str, ...]]:
    names = {(c.name,) for c in cli.TOP}
    return names | {(group, c.name) for group, module in cli.GROUPS.items() for c in module.COMMANDS}


def _invoked() -> set[tuple[str, ...]]:
    """Commands named by the leading strings of a list literal in any test: an argv handed to `main`, or the
    words after `-m nas.cli` in a subprocess's command line."""
    found = set()
    for path in TESTS.rglob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.List):
                continue
            words = [e.value if isinstance(e, ast.Constant) and isinstance(e.value, str) else None for e in node.elts]
            if "nas.cli" in words:
                words = words[words.index("nas.cli") + 1 :]
            if words and words[0]:
                found.add((words[0],))
                if len(words) > 1 and words[1]:
                    found.add((words[0], words[1]))
    return found


def test_every_command_is_invoked_by_some_test():
    assert sorted(_commands() - _invoked()) == []


def test_spaces_lists_every_registered_space(capsys):
    import search_spaces

    assert main(["spaces"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in search_spaces.names())


def test_device_serve_measures_for_a_remote_client(tmp_path):
    env = {**os.environ, "HWNAS_DEVICE_TOKEN": "t0ken"}
    agent = subprocess.Popen(
        [sys.executable, "-m", "nas.cli", "device", "serve", "--device", "ort-cpu:threads=1", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        first = agent.stdout.readline()
        assert "on http://127.0.0.1:" in first and "t0ken" not in first
        url = first.split(" on ")[1].strip()
        info = subprocess.run(
            [sys.executable, "-m", "nas.cli", "device", "info", "--device", f"remote:{url}"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert info.returncode == 0, info.stderr
        assert json.loads(info.stdout)["cpu_model"]
        wrong = subprocess.run(
            [sys.executable, "-m", "nas.cli", "device", "info", "--device", f"remote:{url}"],
            capture_output=True,
            text=True,
            env={**env, "HWNAS_DEVICE_TOKEN": "wrong"},
            timeout=120,
        )
        assert wrong.returncode == 2 and "401" in wrong.stderr and len(wrong.stderr.strip().splitlines()) == 1
    finally:
        agent.terminate()
        agent.wait(30)


def test_device_info_prints_the_fingerprint(capsys):
    assert main(["device", "info", "--device", "ort-cpu:threads=1"]) == 0
    fp = json.loads(capsys.readouterr().out)
    assert fp["threads"] == 1 and fp["onnxruntime"]


def test_bench_device_compares_the_timing_methods(capsys):
    assert main(["bench", "device", "--space", "nasbench201:cells_per_stage=1", "-n", "3", "--group", "3"]) == 0
    out = capsys.readouterr().out
    assert "interleaved + anchor drift correction (hwnas)" in out and "one after another" in out
    assert main(["bench", "device", "-n", "1"]) == 2


def test_bench_predictors_scores_on_held_out_devices(help_dir, capsys):
    argv = [
        "bench",
        "predictors",
        "--space",
        "nasbench201",
        "--data",
        str(help_dir / "nasbench201.csv.gz"),
        "--split",
        "loho",
        "--predictors",
        "flops,opcount",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "split loho" in out and "mean" in out and "opcount" in out


@pytest.mark.slow
def test_bench_calibrate_scores_a_calibrated_predictor_on_fresh_measurements(capsys):
    argv = ["bench", "calibrate", "--space", "nasbench201:cells_per_stage=1", "-n", "4", "--refs", "5"]
    assert main(argv) == 0
    assert "scored on fresh nasbench201" in " ".join(capsys.readouterr().out.split())


def test_bench_supernet_times_a_training_step(capsys):
    assert main(["bench", "supernet", "--space", TINY_OFA, "--batch-size", "8", "--rounds", "1"]) == 0
    out = capsys.readouterr().out
    assert "Training step" in out and "standalone" in out


@pytest.mark.slow
def test_bench_quantize_compares_every_method(tmp_path, capsys):
    argv = [
        "bench",
        "quantize",
        "--models",
        "mobilenetv2",
        "--epochs",
        "1",
        "--resolution",
        "32",
        "--methods",
        "interlayer+bisect",
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "hwnas quantize would choose" in out and "precision-aware" in out and "mobilenetv2" in out
    assert main(argv[:-4] + ["--methods", "nope+bisect"]) == 2


@pytest.mark.slow
def test_bench_quantize_peer_inc_is_measured_in_the_same_group(tmp_path, capsys):
    pytest.importorskip("onnx_neural_compressor", reason="needs onnx-neural-compressor: pip install -e '.[peers]'")
    argv = ["bench", "quantize", "--models", "mobilenetv2", "--epochs", "1", "--resolution", "32"]
    assert main([*argv, "--methods", "interlayer+bisect", "--peer", "inc", "--out", str(tmp_path)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "mobilenetv2: hwnas's choice" in out and " vs inc" in out and "trials" in out
    assert re.search(r"vs inc(?: \(fp32 fallback\))? over 5 more interleaved groups: (better|worse|tie)", out)
    assert "int8 (qdq)" in out and "int8 (qoperator)" in out  # uniform int8 in both forms, side by side
    result = json.loads((tmp_path / "mobilenetv2" / "model.json").read_text())
    peers = [c for c in result["configs"] if c["peer"]]
    assert len(peers) == 1 and peers[0]["config"].startswith("inc") and peers[0]["latency_ms"] > 0
    assert result["chosen"] != peers[0]["config"]  # a peer is measured and scored, never chosen
    everything = [
        c for c in result["configs"] if not c["peer"] and c["int8_layers"] == result["configs"][1]["int8_layers"]
    ]
    assert len({c["latency_ms"] for c in everything}) == 1  # methods that agree share one measurement
    if peers[0]["config"] == "inc":  # INC quantized: its model computes in int8
        assert peers[0]["int8_nodes"] > 0


def test_a_peer_that_is_not_installed_says_what_to_install():
    from nas.bench.peers import need

    with pytest.raises(
        ValueError, match=r"--peer ofa needs Once-for-All's reference code .*pip install -e '.\[peers\]'"
    ):
        need("ofa", "ofa.no_such_module")
    with pytest.raises(ValueError, match="Unknown peer 'nni'; known: ofa, inc"):
        need("nni")


def test_a_programming_error_is_one_line_and_debug_shows_its_traceback(monkeypatch, capsys):
    from nas.cli import spaces

    def broken(self, args):
        raise TypeError("a bug")

    monkeypatch.setattr(spaces.Spaces, "run", broken)
    assert main(["spaces"]) == 1
    err = capsys.readouterr().err
    assert "internal error: TypeError: a bug" in err and "--debug" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(TypeError, match="a bug"):
        main(["--debug", "spaces"])


def test_bench_predictors_help_split_names_the_devices_it_needs(help_dir, tmp_path, capsys):
    import pandas as pd

    wide = pd.read_csv(help_dir / "nasbench201.csv.gz")
    devices_ = [c for c in wide.columns if c not in ("index", "arch")]
    with_needed = json.loads((help_dir / "splits.json").read_text())
    valid = next(v["meta_valid"] for v in with_needed.values() if set(v["meta_valid"]) <= set(devices_))
    kept = [d for d in devices_ if d not in valid][:3]
    wide[["index", "arch", *kept]].to_csv(tmp_path / "few.csv", index=False)
    argv = ["bench", "predictors", "--space", "nasbench201", "--data", str(tmp_path / "few.csv"), "--split", "help"]
    assert main([*argv, "--splits", str(help_dir / "splits.json"), "--predictors", "flops"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs HELP's meta-validation devices (" in err
    assert valid[0] in err and f"the tables have {', '.join(kept)}" in err
