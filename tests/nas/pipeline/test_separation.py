"""The report says in one line when the task cannot separate the candidates, instead of presenting a winner."""

from __future__ import annotations

import numpy as np
import pytest

from nas.pipeline.report import (
    difference_resolution,
    paired_resolution,
    separation,
    separation_line,
    trade_off_line,
)


def _result(largest: float, smallest: float, winner: float, winner_ms: float = 1.0) -> dict:
    return {
        "largest": {"test_top1": largest, "measured_ms": 2.0},
        "smallest": {"test_top1": smallest, "measured_ms": 0.5},
        "winner": {"test_top1": winner, "measured_ms": winner_ms},
    }


def test_the_resolution_of_a_difference_is_two_standard_errors_in_points():
    assert difference_resolution(0.5, 0.5, 10_000) == pytest.approx(200 * (0.5 / 10_000) ** 0.5)
    assert difference_resolution(0.96, 0.97, 360) > difference_resolution(0.96, 0.97, 1440)
    assert difference_resolution(1.0, 1.0, 100) > 0  # a perfect score still resolves no better than one image


def test_ends_one_point_apart_on_360_images_are_not_separated():
    r = _result(0.975, 0.964, 0.953)  # the quickstart the issue measured
    r["separation"] = separation(r, 360)
    assert not r["separation"]["ends_separated"] and not r["separation"]["trade_off"]
    line = separation_line(r)
    assert line.startswith("This task cannot separate the candidates") and "360 images" in line


def test_a_winner_several_points_over_the_smallest_and_faster_than_the_largest_is_a_trade_off():
    r = _result(0.80, 0.70, 0.77)
    r["separation"] = separation(r, 1440)
    assert r["separation"]["ends_separated"] and r["separation"]["trade_off"]
    assert separation_line(r) is None
    slow = _result(0.80, 0.70, 0.79, winner_ms=2.5)  # more accurate, but no faster than the largest
    slow["separation"] = separation(slow, 1440)
    assert "not measured faster than the largest" in separation_line(slow)
    close = _result(0.80, 0.70, 0.71)  # ends apart, the winner within the split's resolution of the smallest
    close["separation"] = separation(close, 1440)
    assert "over the smallest subnet on test, within the" in separation_line(close)


def _answers(n: int, right: int, extra: int, lost: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two classifiers' right answers on n images: b gets `right` images right, a those plus `extra` more and
    minus `lost` of them, in a random order."""
    order = np.random.default_rng(seed).permutation(n)
    b = np.zeros(n, dtype=bool)
    b[order[:right]] = True
    a = b.copy()
    a[order[right : right + extra]] = True
    a[order[:lost]] = False
    return a, b


def test_a_paired_comparison_resolves_what_an_unpaired_one_cannot():
    a, b = _answers(1440, 1008, 29)  # 70.0% and 72.0%: the second adds 29 images and loses none
    pr = paired_resolution(a, b)
    assert (pr["only_a"], pr["only_b"]) == (29, 0) and pr["p"] < 1e-6
    unpaired = difference_resolution(a.mean(), b.mean(), 1440)
    assert pr["resolution"] < 2.0 < 100 * (a.mean() - b.mean()) < unpaired  # resolved paired, not unpaired
    x, y = _answers(1440, 1008, 29, lost=29)  # as many images lost as gained: no difference, none resolved
    assert paired_resolution(x, y)["p"] == 1.0 and x.mean() == y.mean()
    one = paired_resolution(*_answers(100, 50, 1))  # one image apart: never resolved
    assert one["resolution"] >= 2.0 > 1.0


def test_independent_classifiers_are_resolved_about_as_unpaired_ones():
    rng = np.random.default_rng(1)
    a, b = rng.random(10_000) < 0.7, rng.random(10_000) < 0.6
    paired = paired_resolution(a, b)["resolution"]
    assert paired == pytest.approx(difference_resolution(a.mean(), b.mean(), 10_000), rel=0.05)


def test_a_winner_separated_by_its_answers_is_called_a_trade_off_with_the_images_that_show_it():
    big, small = _answers(1440, 1008, 72)[0], _answers(1440, 1008, 0)[0]
    winner = _answers(1440, 1008, 29)[0]
    r = _result(big.mean(), small.mean(), winner.mean())
    r["separation"] = separation(r, 1440, {"largest": big, "smallest": small, "winner": winner})
    s = r["separation"]
    assert s["paired"] and s["trade_off"] and s["winner_only_right"] == 29 and s["winner_only_smallest_right"] == 0
    assert separation(r, 1440)["trade_off"] is False  # the same accuracies unpaired: within 2 SE
    line = trade_off_line(r)
    assert line.startswith("A real trade-off: +2.01 points") and "29 test images only the winner" in line
    assert separation_line(r) is None


def test_views_of_one_image_count_as_one_sample():
    a, b = _answers(360, 250, 12, lost=3)
    four_a, four_b, sources = np.tile(a, 4), np.tile(b, 4), np.tile(np.arange(360), 4)
    naive = paired_resolution(four_a, four_b)  # 1,440 images as if independent
    clustered = paired_resolution(four_a, four_b, sources)
    assert clustered["resolution"] == pytest.approx(2 * naive["resolution"], rel=0.02)
    assert clustered["resolution"] == pytest.approx(paired_resolution(a, b)["resolution"], rel=0.02)
    assert clustered["p"] > naive["p"]
