"""Helpfulness as instruction following, for training: packaged questions and benign requests with one or two
verifiable instructions attached (the variants kept for training, evaluate/instructions.py), answered by their
reference answer rewritten to follow them. Every rewritten answer is checked by IFEval's own checkers, the
ones that score the benchmark; a rewrite that does not pass is dropped, never trained on.

The rewritten answer is the row's `chosen`; the reference answer as it was (ignoring the instructions) is its
`rejected`, so DPO learns the difference and SFT the behaviour. Each row splits by its original prompt
(`meta.split_key`), so an instructed copy of a test question is a test row too.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from resm_core.data.schema import make_row
from resm_core.evaluate import instructions

SOURCE = "instructed"
POINTS = ("This is the short answer.", "It comes from the reference.", "Ask again for more.", "Hope it is useful.")


def _title(question: str) -> str:
    words = re.findall(r"[A-Za-z]+", question)[:4]
    return " ".join(words).lower() or "answer"


def _bullets(answer: str, n: int) -> str:
    flat = re.sub(r"\s+", " ", re.sub(r"(?m)^\s*(?:\d+\.|[-*#]+)\s*", "", answer))  # no list markup left
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", flat) if len(s.split()) >= 3]
    points = (sentences + [p for p in POINTS if p not in sentences])[:n]
    return "\n".join(f"* {p}" for p in points)


def _keyword(answer: str, word: str) -> str:
    if re.search(rf"\b{re.escape(word)}\b", answer, re.IGNORECASE):
        return answer
    openers = {"answer": "The answer:", "because": "Because you asked:", "simple": "In simple terms:"}
    return f"{openers.get(word, word.capitalize() + ':')} {answer}"


REWRITE: dict[str, Callable[[str, str, dict], str]] = {
    "change_case:english_lowercase": lambda a, q, k: a.lower(),
    "startend:quotation": lambda a, q, k: f'"{a}"',
    "punctuation:no_comma": lambda a, q, k: a.replace(",", ""),
    "detectable_format:title": lambda a, q, k: f"<<{_title(q)}>>\n{a}",
    "startend:end_checker": lambda a, q, k: f"{a} {k['end_phrase']}",
    "keywords:existence": lambda a, q, k: _keyword(a, k["keywords"][0]),
    "detectable_format:number_bullet_lists": lambda a, q, k: _bullets(a, k["num_bullets"]),
    "detectable_content:postscript": lambda a, q, k: f"{a}\n{k['postscript_marker']} Ask if anything is unclear.",
}
# applied in this order, whatever order they were asked in: the form first (bullets, title, keyword), then the
# text-wide rules (case, commas), then what must come last (ending, postscript, quotes around everything)
ORDER = (
    "detectable_format:number_bullet_lists",
    "keywords:existence",
    "detectable_format:title",
    "punctuation:no_comma",
    "change_case:english_lowercase",
    "startend:end_checker",
    "detectable_content:postscript",
    "startend:quotation",
)


def rewrite(answer: str, question: str, asked: list[tuple[str, dict]]) -> str | None:
    """The answer rewritten to follow every instruction, or None when IFEval's checkers say it does not."""
    text = answer
    for instruction, kwargs in sorted(asked, key=lambda v: ORDER.index(v[0])):
        text = REWRITE[instruction](text, question, kwargs)
    return text if all(instructions.followed(text, asked)) else None


def instructed(rows: list[dict]) -> tuple[list[dict], int]:
    """(instructed rows, rewrites dropped by the checkers): one per row, with its training instructions."""
    out, dropped = [], 0
    for row in rows:
        asked = instructions.attach(row["id"], "train")
        answer = rewrite(row["chosen"], row["prompt"], asked)
        if answer is None:
            dropped += 1
            continue
        text = " ".join(instructions.describe(i, k) for i, k in asked)
        out.append(
            make_row(
                SOURCE,
                "helpfulness",
                f"{row['prompt']}\n\n{text}",
                answer,
                row["chosen"] if row["chosen"] != answer else None,  # it followed already: SFT-only, no pair
                split_key=row["prompt"],
                instructions=[[i, k] for i, k in asked],
                from_source=row["source"],
            )
        )
    return out, dropped
