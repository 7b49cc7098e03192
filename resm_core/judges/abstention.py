"""The abstention check: does an answer say that it does not know (or that the question cannot be answered
from what is given) instead of answering? Read from the answer's opening sentence by phrase, because
abstention, unlike refusal, has a small vocabulary (know, tell, determine, say, information, sure) that a
model trained on some wordings uses in others. Its accuracy on a labelled set written apart from the
phrases (`embedded/abstention_labels.jsonl`: abstentions in stock and unusual words, answers that mention
knowing, refusals, guesses) is measured and written beside every score that uses it. The set is not blind:
three phrases ("isn't given", "hard to say", "dunno") were added after a first reading of it."""

from __future__ import annotations

import re
from functools import cache

from resm_core.data.schema import read_jsonl
from resm_core.data.sources import EMBEDDED_DIR

ABSTAIN = re.compile(
    r"\b("
    r"(i|we|you|one|nobody|no one|no-one|anyone) (really |honestly |simply |just )?"
    r"(don't|do not|can't|cannot|couldn't|could not|won't|wouldn't|have no way to|has no way to)"
    r" (really |possibly |truly |actually )?(know|tell|say|determine|be sure|be certain|answer|work out|infer|guess)"
    r"|(no one|nobody|no-one) (knows|can know|can say|can tell|could know)"
    r"|(can't|cannot|could not|couldn't|impossible to|no way to|not possible to) (be )?"
    r"(determined|determine|tell|know|known|say|said|answered|answer|inferred|infer)"
    r"|(\w*n't|not) (be )?"
    r"(known|knowable|determinable|stated|mentioned|specified|given|said|recorded|clear|certain|sure)"
    r"|(\w*n't|not|no|insufficient) (enough |sufficient )?(info|information|details?|context|evidence|data)"
    r"|no (idea|clue|record|way of knowing|way to know)|(hard|impossible) to (say|tell)|dunno"
    r"|(doesn't|does not|didn't|did not|don't|do not) "
    r"(say|mention|state|specify|tell us|indicate|reveal|give|provide|establish)"
    r"|unknown|unknowable|undetermined|indeterminate|unclear|uncertain|unsure|not sure|unanswerable"
    r")\b",
    re.I,
)
SENTENCE = re.compile(r"(?<=[.!?;])\s+")


def abstains(response: str, sentences: int = 1) -> bool:
    """An abstention in the answer's opening sentence: "The grandson. I'm not sure why." answered (the doubt
    comes after the answer), "I can't tell from this." did not."""
    opening = " ".join(SENTENCE.split(response.strip())[:sentences])
    return bool(ABSTAIN.search(opening.replace("’", "'")))


@cache
def accuracy() -> dict:
    """The check against its labelled set: accuracy, and the misses by kind (the numbers every result using
    the check carries)."""
    rows = read_jsonl(EMBEDDED_DIR / "abstention_labels.jsonl")
    wrong = [r for r in rows if abstains(r["response"]) != bool(r["abstains"])]
    return {
        "check": "abstention phrases in the opening sentence (judges/abstention.py)",
        "labelled": len(rows),
        "accuracy": round(1 - len(wrong) / len(rows), 4),
        "false_abstentions": sum(not r["abstains"] for r in wrong),
        "missed_abstentions": sum(bool(r["abstains"]) for r in wrong),
    }
