"""The score arithmetic and the quote check, on their own."""

from __future__ import annotations

import pytest

from service.evaluations.scoring import (
    Thresholds,
    criterion_percent,
    interview_score,
    median_and_spread,
    normalise,
    overall_score,
    quote_verified,
    recommendation,
)

THRESHOLDS = Thresholds(strong_hire=85, hire=65, no_hire=40)


@pytest.mark.parametrize(
    ("score", "percent"), [(1, 0.0), (2, 25.0), (3, 50.0), (4, 75.0), (5, 100.0)]
)
def test_criterion_scale_maps_1_to_5_onto_0_to_100(score: int, percent: float) -> None:
    assert criterion_percent(score) == percent


@pytest.mark.parametrize("score", [0, 6, -1])
def test_criterion_scale_rejects_scores_outside_1_to_5(score: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        criterion_percent(score)


def test_interview_score_is_the_weighted_mean() -> None:
    # technical_depth 4 (75) weight 2, communication 3 (50) weight 1: (150 + 50) / 3
    assert interview_score([(4, 2), (3, 1)]) == pytest.approx(200 / 3)


def test_abstaining_criteria_are_left_out_and_weights_renormalised() -> None:
    assert interview_score([(5, 1), (None, 3)]) == 100.0
    assert interview_score([(None, 1), (None, 2)]) is None


def test_overall_blends_portfolio_by_weight_and_rounds() -> None:
    assert overall_score(200 / 3, 82, portfolio_weight=0.2) == pytest.approx(69.7)
    assert overall_score(200 / 3, None, portfolio_weight=0.2) == pytest.approx(66.7)
    assert overall_score(50.0, 100, portfolio_weight=0.0) == 50.0
    assert overall_score(None, 90, portfolio_weight=0.2) is None


@pytest.mark.parametrize(
    ("overall", "expected"),
    [
        (100, "strong_hire"),
        (85, "strong_hire"),
        (84.9, "hire"),
        (65, "hire"),
        (64.9, "no_hire"),
        (40, "no_hire"),
        (39.9, "strong_no_hire"),
        (None, "insufficient_evidence"),
    ],
)
def test_recommendation_follows_thresholds(overall: float | None, expected: str) -> None:
    assert recommendation(overall, THRESHOLDS) == expected


def test_median_and_spread_of_samples() -> None:
    assert median_and_spread([4]) == (4, 0)
    assert isinstance(median_and_spread([4])[0], int)
    assert median_and_spread([3, 5, 4]) == (4.0, 2)
    assert median_and_spread([2, 3]) == (2.5, 1)
    assert median_and_spread([None]) == (None, 0)
    # Most samples abstain: the criterion abstains.
    assert median_and_spread([None, None, 4]) == (None, 0)


def test_quotes_match_ignoring_case_punctuation_and_whitespace() -> None:
    answers = [normalise("For CPU-bound work, the event loop gives   nothing.")]
    assert quote_verified("for cpu bound work the EVENT loop", answers)
    assert quote_verified("“the event loop gives nothing”", answers)
    assert not quote_verified("the event loop gives everything", answers)
    # Too short to prove anything, and no partial-word matches.
    assert not quote_verified("event loop", answers)
    assert not quote_verified("or CPU bound work", answers)
