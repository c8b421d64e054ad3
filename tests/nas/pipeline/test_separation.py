"""The report says in one line when the task cannot separate the candidates, instead of presenting a winner."""

from __future__ import annotations

import pytest

from nas.pipeline.report import difference_resolution, separation, separation_line


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
