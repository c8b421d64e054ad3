"""The run directory: file names in one place, atomic result.json, JSON-lines caches that survive a kill."""

from __future__ import annotations

import json

import pytest

from nas.rundir import RESULT, RunDir, append_jsonl, read_jsonl


def test_a_line_cut_by_a_kill_is_dropped_and_the_next_row_starts_a_line_of_its_own(tmp_path):
    path = tmp_path / "cache.jsonl"
    append_jsonl(path, {"arch": "a", "acc": 0.5})
    with path.open("a") as f:
        f.write('{"arch": "b", "ac')  # the process was killed here
    assert list(read_jsonl(path)) == [{"arch": "a", "acc": 0.5}]
    append_jsonl(path, {"arch": "c", "acc": 0.7})
    assert [r["arch"] for r in read_jsonl(path)] == ["a", "c"]


def test_a_bad_line_before_the_last_names_the_file_and_line(tmp_path):
    path = tmp_path / "cache.jsonl"
    path.write_text('{"arch": "a"}\nnot json\n{"arch": "c"}\n')
    with pytest.raises(ValueError, match=r"cache.jsonl:2: not a JSON line"):
        list(read_jsonl(path))


def test_result_json_is_replaced_whole_and_the_winner_is_read_back(tmp_path):
    run = RunDir(tmp_path).create()
    assert run.read_result() == {}
    with pytest.raises(ValueError, match="has no winner to export"):
        run.winner(None, "export")
    run.write_result({"winner": {"arch": "x"}, "budget_ms": 1.5})
    assert run.winner(None, "export") == "x" and run.winner("y", "export") == "y"
    assert not list(tmp_path.glob("*.tmp")) and json.loads((tmp_path / RESULT).read_text())["budget_ms"] == 1.5
    (tmp_path / RESULT).write_text("{cut")
    with pytest.raises(ValueError, match="result.json: not a result hwnas wrote"):
        run.read_result()
