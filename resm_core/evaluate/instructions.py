"""Verifiable instructions (the IFEval idea: an instruction a program can check), checked by IFEval's own
checkers as lm-evaluation-harness ships them (`lm_eval.tasks.ifeval`), never re-implemented here.

Only instructions whose checkers need no nltk data are used: IFEval's sentence counts load nltk's punkt
tokenizer, which nltk downloads at run time and an offline node cannot. Importing the checkers tries that
download once (`instructions_util` calls `nltk.download` at import); `_registry` turns the attempt off,
since no checker used here reads the data.

Each instruction comes in variants (its arguments); the variants are split between training and evaluation
by a hash of their text, so validation and test items ask for phrasings and arguments training never saw.
"""

from __future__ import annotations

import contextlib
import io
import json
from functools import cache
from typing import Any

from resm_core.data.splits import unit_hash

# IFEval id -> argument sets. Lowercase, quotes, no commas, an ending, a keyword, bullets, a postscript, a title:
# formats a 135M model can be taught by a few dozen examples, and a program can check without a model.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "change_case:english_lowercase": [{}],
    "startend:quotation": [{}],
    "punctuation:no_comma": [{}],
    "detectable_format:title": [{}],
    "startend:end_checker": [
        {"end_phrase": phrase}
        for phrase in (
            "Is there anything else I can help with?",
            "Hope this helps.",
            "That is all.",
            "Let me know if you have more questions.",
            "Thank you for asking.",
            "Have a nice day.",
        )
    ],
    "keywords:existence": [
        {"keywords": [word]} for word in ("answer", "simple", "because", "indeed", "briefly", "clear")
    ],
    "detectable_format:number_bullet_lists": [{"num_bullets": n} for n in (2, 3, 4)],
    "detectable_content:postscript": [{"postscript_marker": m} for m in ("P.S.", "P.P.S")],
}
EVAL_SHARE = 0.5  # of each instruction's variants (hashed), kept for validation and test
SALT = "instructions"


@contextlib.contextmanager
def _offline_nltk():
    import nltk

    saved = nltk.download
    nltk.download = lambda *args, **kwargs: False
    try:
        yield
    finally:
        nltk.download = saved


@cache
def _registry() -> dict:
    import langdetect

    # the lowercase checker asks langdetect whether the answer is English; langdetect samples at random
    # unless seeded, so one answer could pass on one run and fail on the next
    langdetect.DetectorFactory.seed = 0
    with _offline_nltk(), contextlib.redirect_stdout(io.StringIO()):  # it prints "Downloaded" regardless
        from lm_eval.tasks.ifeval import instructions_registry

    return dict(instructions_registry.INSTRUCTION_DICT)


def variant_key(instruction: str, kwargs: dict) -> str:
    return f"{instruction} {json.dumps(kwargs, sort_keys=True)}"


def split_of(instruction: str, kwargs: dict) -> str:
    """`eval`, `train` or `both` for one variant. An instruction with one variant is in both (its wording is
    IFEval's own, fixed); of the others, the first half in hash order (at least one, never all) is kept for
    evaluation, so evaluation asks for endings, keywords and counts training never saw, and training still
    sees every kind of instruction."""
    group = VARIANTS[instruction]
    if len(group) == 1:
        return "both"
    ranked = sorted(group, key=lambda k: unit_hash(variant_key(instruction, k), SALT))
    n_eval = min(max(1, round(len(group) * EVAL_SHARE)), len(group) - 1)
    return "eval" if kwargs in ranked[:n_eval] else "train"


def variants(split: str) -> list[tuple[str, dict]]:
    """(instruction id, kwargs) usable in `split` (train or eval)."""
    return [(i, k) for i, ks in VARIANTS.items() for k in ks if split_of(i, k) in (split, "both")]


def describe(instruction: str, kwargs: dict) -> str:
    """IFEval's own wording of the instruction (its checker's `build_description`)."""
    checker = _registry()[instruction](instruction)
    return str(checker.build_description(**kwargs))


def followed(response: str, instructions: list[tuple[str, dict]]) -> list[bool]:
    """Per instruction, whether the response follows it (IFEval's strict check); a checker that raises on
    broken output counts as not followed."""
    out = []
    for instruction, kwargs in instructions:
        checker = _registry()[instruction](instruction)
        checker.build_description(**kwargs)
        try:
            out.append(bool(response.strip()) and bool(checker.check_following(response)))
        except Exception:  # IFEval's checkers raise on some malformed answers; that is not following
            out.append(False)
    return out


def attach(key: str, split: str, how_many: int = 2) -> list[tuple[str, dict]]:
    """The instructions an item asks for, drawn by its key's hash from `split`'s variants: one or two, of
    different instructions, never two that contradict (a title with a lowercase answer is fine; bullets
    with a JSON object would not be, and JSON is not used)."""
    pool = variants(split)
    ranked = sorted(pool, key=lambda v: unit_hash(f"{key}|{variant_key(*v)}", SALT))
    count = 1 + int(unit_hash(key, SALT + "/count") < 0.5) if how_many > 1 else 1
    chosen: list[tuple[str, dict]] = []
    for instruction, kwargs in ranked:
        if all(instruction != c[0] for c in chosen) and not _clash(instruction, [c[0] for c in chosen]):
            chosen.append((instruction, kwargs))
        if len(chosen) == count:
            break
    return chosen


CLASHES = {
    frozenset({"startend:quotation", "startend:end_checker"}),  # the answer must end with a quote mark
    frozenset({"startend:quotation", "detectable_content:postscript"}),
    frozenset({"startend:end_checker", "detectable_content:postscript"}),
    frozenset({"punctuation:no_comma", "startend:end_checker"}),  # some endings hold none, but keep it simple
    frozenset({"change_case:english_lowercase", "detectable_content:postscript"}),  # "P.S." is upper case
    frozenset({"change_case:english_lowercase", "startend:end_checker"}),
}


def _clash(instruction: str, chosen: list[str]) -> bool:
    return any(frozenset({instruction, c}) in CLASHES for c in chosen)
