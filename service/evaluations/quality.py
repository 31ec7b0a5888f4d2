"""The transcript-quality gate: whether a transcript can be scored at all, before any LLM call.

A transcript that gives the model nothing to judge would be scored anyway by an LLM, with
made-up confidence. These rules reject it first, with a 422 that names the rule:

- too_short: the answers hold fewer than MIN_TOTAL_WORDS words in all.
- unanswered: more than MAX_UNANSWERED_SHARE of the questions are unanswered. An answer is
  unanswered when, once fillers ("um", "uh", "pass", "n/a", a bare "yes" or "no"...) and
  noise markers ("[inaudible]", "[crosstalk]"...) are removed, fewer than MIN_ANSWER_WORDS
  words remain.
- garbled: the answers look like a failed transcription, because either
  - letters are less than MIN_LETTER_SHARE of their non-space characters (symbol soup), or
  - noise markers are more than MAX_NOISE_SHARE of their tokens, or
  - in an answer of at least LOOP_MIN_WORDS words, more than MAX_REPEATED_SHARE of its runs
    of LOOP_NGRAM words repeat an earlier run (a speech-to-text loop: "thank you thank you
    ..."). Natural speech, however long, rarely repeats four words in a row.

Words are counted on the normalised text (case, punctuation and width folded, as for the
quote check); letters are Unicode letters, so Korean transcripts pass as English ones do.
The rules are plain functions of the transcript: no I/O, no settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from service.evaluations.scoring import normalise

MIN_TOTAL_WORDS = 8
MIN_ANSWER_WORDS = 2
MAX_UNANSWERED_SHARE = 0.5
MIN_LETTER_SHARE = 0.5
MAX_NOISE_SHARE = 0.3
LOOP_MIN_WORDS = 20
LOOP_NGRAM = 4
MAX_REPEATED_SHARE = 0.5

FILLERS = frozenset(
    (
        "um",
        "umm",
        "uh",
        "uhh",
        "er",
        "erm",
        "hmm",
        "hm",
        "mm",
        "ah",
        "eh",
        "pass",
        "skip",
        "next",
        "n",
        "idk",
        "dunno",
        "ok",
        "okay",
        "yes",
        "no",
    )
)
# Bracketed markers that transcription services put in place of speech they could not read.
_NOISE = re.compile(
    r"[\[(<](?:inaudible|unintelligible|crosstalk|silence|noise|static|music|"
    r"indiscernible|garbled|no audio|blank_audio)[^\])>]*[\])>]",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Verdict:
    """Why a transcript cannot be scored: the rule that failed and a sentence for the client."""

    rule: str
    detail: str


def _meaningful_words(answer: str) -> list[str]:
    return [w for w in normalise(_NOISE.sub(" ", answer)).split() if w not in FILLERS]


# The ASCII characters that str.isspace() and str.isalpha() accept: an ASCII transcript's
# letters and spaces are counted by deleting them (bytes.translate, in C), not one by one.
_ASCII_SPACES = bytes(c for c in range(128) if chr(c).isspace())
_ASCII_LETTERS = bytes(c for c in range(128) if chr(c).isalpha())


def _letters_and_characters(text: str) -> tuple[int, int]:
    """How many letters (str.isalpha) and non-space characters `text` holds."""
    if text.isascii():
        raw = text.encode("ascii")
        spaces = len(raw) - len(raw.translate(None, _ASCII_SPACES))
        return len(raw) - len(raw.translate(None, _ASCII_LETTERS)), len(raw) - spaces
    # Mapped str methods, still in C: a Python loop per character cost a tenth of a request.
    return sum(map(str.isalpha, text)), len(text) - sum(map(str.isspace, text))


def _garbled(answers: Sequence[str]) -> str | None:
    letters, chars = _letters_and_characters("".join(answers))
    if chars and letters / chars < MIN_LETTER_SHARE:
        return (
            f"only {letters / chars:.0%} of the answers' characters are letters "
            f"(at least {MIN_LETTER_SHARE:.0%} are needed)"
        )
    noise = tokens = 0
    for answer in answers:
        # Each marker becomes one token: the share of tokens that are markers.
        replaced, markers = _NOISE.subn(" x ", answer)
        noise += markers
        tokens += len(replaced.split())
    if tokens and noise / tokens > MAX_NOISE_SHARE:
        return (
            f"{noise / tokens:.0%} of the answers' words are transcription-noise markers "
            f"such as [inaudible] (at most {MAX_NOISE_SHARE:.0%} are allowed)"
        )
    for index, answer in enumerate(answers):
        words = normalise(answer).split()
        if len(words) < LOOP_MIN_WORDS:
            continue
        runs = list(zip(*(words[i:] for i in range(LOOP_NGRAM)), strict=False))
        repeated = len(runs) - len(set(runs))
        if repeated / len(runs) > MAX_REPEATED_SHARE:
            return (
                f"answer {index + 1} repeats itself ({repeated} of its {len(runs)} runs of "
                f"{LOOP_NGRAM} words are repeats), which looks like a transcription loop"
            )
    return None


def assess(answers: Sequence[str]) -> Verdict | None:
    """The first rule the answers fail, or None when the transcript can be scored."""
    garbled = _garbled(answers)
    if garbled:
        return Verdict("garbled", f"The transcript looks garbled: {garbled}.")
    per_answer = [_meaningful_words(a) for a in answers]
    total = sum(len(words) for words in per_answer)
    if total < MIN_TOTAL_WORDS:
        return Verdict(
            "too_short",
            f"The answers hold {total} meaningful words; at least {MIN_TOTAL_WORDS} are needed "
            "to score an interview.",
        )
    unanswered = sum(len(words) < MIN_ANSWER_WORDS for words in per_answer)
    if unanswered / len(answers) > MAX_UNANSWERED_SHARE:
        return Verdict(
            "unanswered",
            f"{unanswered} of {len(answers)} questions are unanswered; at most "
            f"{MAX_UNANSWERED_SHARE:.0%} may be.",
        )
    return None
