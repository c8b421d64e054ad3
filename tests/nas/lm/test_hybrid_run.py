"""`hwnas run` with a hybrid_lm recipe: search, compare with the baselines, export; resumes."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
import yaml

from nas.cli.main import main

RECIPE = {
    "space": "hybrid_lm:dims=[32,48],heads=[2],max_blocks=4,window=8",
    "device": "torch-cpu:threads=1",
    "decode": {"context": 64, "batch": 1},
    "proxy": {"steps": 3, "batch": 4, "seq_len": 16, "val_windows": 4},
    "baseline": "d48h2f3/attn,f1,x2/-/-",
    "budget_ms": 1000.0,
    "search": {"strategy": "evolution", "trials": 5, "population": 3, "seed": 0},
}


@pytest.mark.slow
def test_hybrid_run_searches_compares_exports_and_resumes(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump(RECIPE))
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    result = json.loads((run / "result.json").read_text())
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 5 and trials["val_bpb"].between(1, 12).all() and (trials["latency_ms"] > 0).all()
    assert result["budget_ms"] == 1000.0 and result["baseline"]["decode_ms"] > 0
    for name in ("pareto.png", "report.md", "best/model.onnx", "proxy.jsonl", "measured.csv"):
        assert (run / name).exists(), name
    best = trials.sort_values("val_bpb").iloc[0]
    assert result["winner"]["arch"] == best["arch"] and result["winner"]["decode_ms"] <= result["budget_ms"]
    assert [c["model"] for c in result["compared"]] == ["found", "all-attn", "all-mamba2"]
    assert all(c["found_vs_this"] in ("dominates", "dominated", "equal", "trade-off") for c in result["compared"][1:])
    assert {c["arch"] for c in result["compared"]} == {
        best["arch"],
        best["arch"] + "|attn-only",
        best["arch"] + "|mamba2-only",
    }
    meta = json.loads((run / "best" / "model.json").read_text())
    assert meta["onnxruntime_matches"] and meta["arch"] == result["winner"]["arch"]
    assert "embed.weight" in torch.load(run / "best" / "weights.pt", weights_only=True)
    trained = (run / "proxy.jsonl").read_text()
    measured = pd.read_csv(run / "measured.csv")
    assert main(["run", str(recipe), "--out", str(run)]) == 0  # a finished run resumes without new work
    assert (run / "proxy.jsonl").read_text() == trained
    assert len(pd.read_csv(run / "measured.csv")) == len(measured)

    from nas.bench.hybrid import compare_run

    rows = compare_run(
        run, groups=2, log=lambda _: None
    )  # bench hybrid --run: the proxy scores reused, decode timed again
    assert [(r["model"], r["val_bpb"]) for r in rows] == [(c["model"], c["val_bpb"]) for c in result["compared"]]
    assert all(r["decode_ms"] > 0 for r in rows) and (run / "proxy.jsonl").read_text() == trained
    with pytest.raises(ValueError, match="is not a finished hybrid_lm run"):
        compare_run(tmp_path / "nothing")

    front = pd.read_csv(run / "pareto.csv")  # a hybrid on the front within the budget, one pure stack, one over budget
    extra = [
        ("d32h2f3/mamba2+swa@1:1,f1,x1/-/-", 1.0),
        ("d32h2f3/swa,f0,x1/-/-", 1.0),
        ("d32h2f3/swa+attn@1:1,f0,x1/-/-", 2000.0),
    ]
    front = pd.concat([front, pd.DataFrame([{"arch": a, "val_bpb": -1.0, "latency_ms": ms} for a, ms in extra])])
    front.to_csv(run / "pareto.csv", index=False)
    rows = compare_run(run, groups=1, front=True, log=lambda _: None)
    groups = [rows[i : i + 3] for i in range(0, len(rows), 3)]
    assert groups[0][0]["arch"] == result["winner"]["arch"] and groups[1][0]["arch"] == extra[0][0]  # best bpb first
    assert all(r["arch"] != extra[1][0] and r["arch"] != extra[2][0] for r in rows)
    for group in groups:
        arch = group[0]["arch"]
        assert [r["arch"] for r in group] == [arch, arch + "|attn-only", arch + "|mamba2-only"]
        assert all(r["found"] == arch for r in group) and group[1]["found_vs_this"] and group[2]["found_vs_this"]
    assert extra[0][0] + "|mamba2-only" in (run / "proxy.jsonl").read_text()

    given = "d32h2f3/mamba2+gdn@1:1,f1,x1/-/-"  # bench hybrid --run --arch A --seeds 2 --groups 2
    rows = compare_run(run, groups=2, seeds=2, archs=[given], log=lambda _: None)
    assert [r["found"] for r in rows] == [result["winner"]["arch"]] * 3 + [given] * 3
    seeded = [json.loads(line) for line in (run / "proxy.jsonl").read_text().splitlines()]
    by_seed = {(r["arch"], r.get("seed", 0)): r["val_bpb"] for r in seeded}
    for r in rows:
        assert r["val_bpb"] == pytest.approx((by_seed[r["arch"], 0] + by_seed[r["arch"], 1]) / 2)
        assert by_seed[r["arch"], 0] != by_seed[r["arch"], 1]  # another seed trains another network
    assert all("/2 seeds" in r["evidence"] and "/2 groups" in r["evidence"] for r in rows if r["model"] != "found")
    assert compare_run(run, groups=1, seeds=2, archs=[given], log=lambda _: None)[0]["val_bpb"] == rows[0]["val_bpb"]
    with pytest.raises(ValueError, match="--arch 'd32h2f3/rnn,f1,x1/-/-'"):
        compare_run(run, archs=["d32h2f3/rnn,f1,x1/-/-"], log=lambda _: None)
    capsys.readouterr()
    argv = [
        "bench",
        "hybrid",
        "--device",
        "torch-cpu:threads=1",
        "--mixers",
        "mamba2",
        "--contexts",
        "8",
        "--prompts",
        "8",
        "--dim",
        "32",
        "--layers",
        "1",
        "--archs",
        "0",
        "--run",
        str(run),
        "--arch",
        given,
        "--seeds",
        "2",
        "--groups",
        "1",
        "--time-on",
        "ort-cpu:threads=1,static=true",
        "--out",
        str(tmp_path / "bench"),
    ]
    assert main(argv) == 0
    table = pd.read_csv(tmp_path / "bench" / "found_vs_baselines.csv")
    assert list(table["found"].unique()) == [result["winner"]["arch"], given]
    captured = capsys.readouterr()
    out = " ".join((captured.out + captured.err).split())
    assert "mean of 2 seed(s)" in out and "on ort-cpu:threads=1,static=true: 1 interleaved groups" in out
    assert main(argv[:-4] + ["--seeds", "0", "--out", str(tmp_path / "bench")]) == 2


def test_a_run_resumes_only_with_the_settings_its_scores_were_made_with(tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    small = {**RECIPE, "search": {**RECIPE["search"], "trials": 2}}
    recipe.write_text(yaml.safe_dump(small))
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    recipe.write_text(yaml.safe_dump({**small, "proxy": {**small["proxy"], "steps": 4}}))
    capsys.readouterr()
    assert main(["run", str(recipe), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "recipe.yaml: this run was made with proxy=" in err and "'steps': 3" in err and len(err.splitlines()) == 1
    recipe.write_text(yaml.safe_dump({**small, "search": {**small["search"], "trials": 3}}))
    assert main(["run", str(recipe), "--out", str(run)]) == 0  # more trials: resumed
    assert len(pd.read_csv(run / "trials.csv")) == 3


def test_candidates_over_a_hard_budget_are_timed_but_not_trained(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, "budget_ms": 1e-6}))
    run = tmp_path / "run"
    assert main(["run", str(recipe), "--out", str(run)]) == 0
    trials = pd.read_csv(run / "trials.csv")
    assert len(trials) == 5 and trials["val_bpb"].isna().all() and (trials["latency_ms"] > 1e-6).all()
    assert not (run / "proxy.jsonl").exists()
    result = json.loads((run / "result.json").read_text())
    assert result["winner"] is None and result["trained"] == 0 and result["distinct"] == 5
    assert "No candidate met the budget" in (run / "report.md").read_text()


@pytest.mark.parametrize(
    "change, message",
    [
        ({"proxy": {"steps": 0}}, "`proxy.steps >= 1` must hold, but got proxy.steps=0"),
        ({"baseline": "d999h2f3/attn,f1,x1/-/-"}, "gene 'dim'"),
        ({"search": {"strategy": "nope"}}, "search.strategy must be one of"),
        ({"decode": {"window": 3}}, "unknown field decode.window"),
    ],
)
def test_bad_hybrid_recipes_get_one_line_errors(change, message, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({**RECIPE, **change}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_the_proxy_score_depends_only_on_the_architecture(tmp_path):
    from nas.lm.run import HybridRun
    from nas.recipes import hybrid_recipe_from_dict

    recipe = hybrid_recipe_from_dict(RECIPE, "test")
    key = "d32h2f3/mamba2,f1,x1/-/-"
    first = HybridRun(recipe, tmp_path / "a", log=lambda _: None)
    first.bpb("d48h2f3/attn,f0,x1/-/-")  # other work before must not change the next score
    second = HybridRun(recipe, tmp_path / "b", log=lambda _: None)
    assert first.bpb(key) == second.bpb(key)
    assert second.bpb(key + "|mamba2-only") == second.bpb(key)  # the same network under another name


def test_baselines_keep_depth_and_match_the_parameter_count():
    from search_spaces import count_params, load_space
    from search_spaces.hybrid_lm.baselines import matched_model

    space = load_space("hybrid_lm:dims=[128],heads=[2],max_blocks=8")
    hybrid = space.build(space.from_str("d128h2f2/swa+mamba2@1:1,f1,x2/-/-"))
    for mixer in ("attn", "mamba2"):
        base = matched_model(hybrid, mixer)
        assert [k if k == "ffn" else "mixer" for k in base.kinds] == [
            k if k == "ffn" else "mixer" for k in hybrid.kinds
        ]
        assert set(base.kinds) == {mixer, "ffn"}
        assert abs(count_params(base) - count_params(hybrid)) <= 3 * 128 * base.kinds.count(
            "ffn"
        )  # within one hidden unit
    with pytest.raises(ValueError, match="Unknown mixer 'rnn'; known: attn, swa, mamba2, deltanet, gdn"):
        matched_model(hybrid, "rnn")


def test_dominance_reads_lower_as_better_in_every_figure():
    from nas.lm.verdicts import dominance

    assert dominance((2.1, 0.3), (2.2, 0.4)) == "dominates"
    assert dominance((2.1, 0.4), (2.2, 0.4)) == "dominates"
    assert dominance((2.3, 0.3), (2.2, 0.4)) == "trade-off"
    assert dominance((2.3, 0.5), (2.2, 0.4)) == "dominated"
    assert dominance((2.2, 0.4), (2.2, 0.4)) == "equal"


def test_paired_verdicts_call_a_tie_where_seeds_or_timing_groups_disagree():
    from nas.lm.verdicts import overall, paired_verdict

    assert paired_verdict([2.1, 2.2, 2.0], [2.3, 2.25, 2.1]) == "better"  # lower in every pair
    assert paired_verdict([0.21, 0.23], [0.22, 0.22]) == "tie"  # faster in one group, slower in the other
    assert paired_verdict([0.25, 0.26], [0.22, 0.22]) == "worse"
    assert overall(["better", "tie"]) == "dominates" and overall(["better", "worse"]) == "trade-off"
    assert overall(["tie", "worse"]) == "dominated" and overall(["tie", "tie"]) == "equal"
    with pytest.raises(ValueError):
        paired_verdict([1.0, 2.0], [1.0])
    many = [0.20] * 9 + [0.25]  # faster in 9 of 10 groups: a sign test at 5% needs 9
    assert paired_verdict(many, [0.22] * 10) == "better" and paired_verdict(many[1:] + [0.25], [0.22] * 10) == "tie"


def test_the_sign_test_threshold_is_the_binomial_tail():
    from nas.lm.verdicts import sign_threshold

    assert [sign_threshold(n) for n in (1, 3, 5, 6, 8, 10, 20)] == [1, 3, 5, 6, 7, 9, 15]
