"""The score arithmetic and the evidence check: plain functions, no I/O."""

from __future__ import annotations

import functools
import re
import statistics
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

MIN_QUOTE_WORDS = 3


@dataclass(frozen=True)
class Thresholds:
    """Overall-score thresholds of the recommendations (0 to 100)."""

    strong_hire: float
    hire: float
    no_hire: float


def criterion_percent(score: float) -> float:
    """A 1-to-5 score on the 0-to-100 scale: 1 is 0, 3 is 50, 5 is 100."""
    if not 1 <= score <= 5:
        raise ValueError(f"score out of range: {score}")
    return (score - 1) / 4 * 100


def interview_score(criteria: Iterable[tuple[float | None, float]]) -> float | None:
    """The weighted mean of the scored criteria on 0 to 100; abstentions are left out and the
    remaining weights renormalised. None when every criterion abstained."""
    scored = [(score, weight) for score, weight in criteria if score is not None]
    total_weight = sum(weight for _, weight in scored)
    if not scored or total_weight <= 0:
        return None
    return sum(criterion_percent(score) * weight for score, weight in scored) / total_weight


def overall_score(
    interview: float | None, portfolio: int | None, *, portfolio_weight: float
) -> float | None:
    """The interview score blended with the portfolio score when there is one, to 1 decimal."""
    if interview is None:
        return None
    if portfolio is None:
        return round(interview, 1)
    return round((1 - portfolio_weight) * interview + portfolio_weight * portfolio, 1)


def recommendation(overall: float | None, thresholds: Thresholds) -> str:
    """The recommendation that the overall score falls into."""
    if overall is None:
        return "insufficient_evidence"
    if overall >= thresholds.strong_hire:
        return "strong_hire"
    if overall >= thresholds.hire:
        return "hire"
    if overall >= thresholds.no_hire:
        return "no_hire"
    return "strong_no_hire"


def median_and_spread(samples: Sequence[int | None]) -> tuple[int | float | None, int]:
    """The median of the samples' scores and their spread (max minus min).

    A criterion abstains when most samples abstain."""
    scores = [s for s in samples if s is not None]
    if not scores or (len(samples) > 1 and len(scores) * 2 <= len(samples)):
        return None, 0
    median = statistics.median(scores)
    # A whole median stays a whole score (4, not 4.0); two middle scores give a half (3.5).
    return (int(median) if median == int(median) else median), max(scores) - min(scores)


_PUNCT = re.compile(r"[^\w\s]", re.UNICODE)
_SPACE = re.compile(r"\s+")


# One request folds each answer several times (the quality gate, the quote checks): the last
# few hundred foldings are remembered.
@functools.lru_cache(maxsize=512)
def normalise(text: str) -> str:
    """Text folded for quote matching: case, width, punctuation and whitespace ignored."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


def quote_verified(quote: str, normalised_answers: Sequence[str]) -> bool:
    """Whether the quote (of at least a few words) appears in one of the answers."""
    needle = normalise(quote)
    if len(needle.split()) < MIN_QUOTE_WORDS:
        return False
    return any(f" {needle} " in f" {answer} " for answer in normalised_answers)
