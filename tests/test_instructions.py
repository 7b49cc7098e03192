"""Verifiable instructions: IFEval's own checkers (lm-evaluation-harness) behind `instruction_following`, the
variants split between training and evaluation, and an item scored 1 only when every instruction is followed
and the request is served."""

from __future__ import annotations

import numpy as np
import pytest

from resm_core.evaluate import instructions as ins
from resm_core.evaluate.benchmarks import get_benchmark

CASES = [
    ("change_case:english_lowercase", {}, "paris is the capital of france.", "Paris is the capital of France."),
    ("startend:quotation", {}, '"Paris is the capital of France."', "Paris is the capital of France."),
    ("punctuation:no_comma", {}, "Paris is the capital.", "Paris, the capital, is large."),
    ("detectable_format:title", {}, "<<Capitals>>\nParis is the capital.", "Paris is the capital."),
    ("startend:end_checker", {"end_phrase": "Hope this helps."}, "It is Paris. Hope this helps.", "It is Paris."),
    ("keywords:existence", {"keywords": ["because"]}, "It is Paris because of history.", "It is Paris."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* Paris\n* Lyon", "* Paris\n* Lyon\n* Nice"),
    ("detectable_content:postscript", {"postscript_marker": "P.S."}, "It is Paris.\nP.S. Visit it.", "It is Paris."),
]


@pytest.mark.parametrize(("instruction", "kwargs", "good", "bad"), CASES)
def test_ifeval_checkers_read_what_a_person_would(instruction, kwargs, good, bad):
    assert ins.followed(good, [(instruction, kwargs)]) == [True]
    assert ins.followed(bad, [(instruction, kwargs)]) == [False]
    assert ins.followed("", [(instruction, kwargs)]) == [False]  # an empty answer follows nothing
    assert ins.describe(instruction, kwargs)  # IFEval's own wording


def test_variants_split_so_evaluation_asks_what_training_never_saw():
    train, evaluation = ins.variants("train"), ins.variants("eval")
    for instruction, group in ins.VARIANTS.items():
        sides = {ins.split_of(instruction, k) for k in group}
        assert sides == {"both"} if len(group) == 1 else sides == {"train", "eval"}, instruction
    multi = [v for v in evaluation if len(ins.VARIANTS[v[0]]) > 1]
    assert multi and not [v for v in multi if v in train]
    for key in (f"item-{i}" for i in range(200)):
        asked = ins.attach(key, "eval")
        assert 1 <= len(asked) <= 2 and len({i for i, _ in asked}) == len(asked)
        assert all(v in evaluation for v in asked)
        assert not any(frozenset({a[0], b[0]}) in ins.CLASHES for a in asked for b in asked if a != b)


class Answers:
    """What `_score_instructions` reads from its context: the answers, and a served judge that says a stock
    refusal does not serve the request."""

    def __init__(self, responses):
        self.responses = responses

    def generate(self, prompts):
        return [{"response": self.responses[i], "truncated": False} for i in range(len(prompts))]

    def served_probability(self, prompts, responses):
        return np.array([0.0 if "cannot help" in r.lower() or not r.strip() else 1.0 for r in responses])


def test_an_item_scores_one_only_when_every_instruction_is_followed_and_the_request_served():
    bench = get_benchmark("instruction_following")
    assert bench.generated and bench.dim == "helpfulness"
    asked = [("change_case:english_lowercase", {}), ("keywords:existence", {"keywords": ["because"]})]
    item = {"id": "q1", "request": "Why is the sky blue?", "prompt": "Why is the sky blue? ...", "instructions": asked}
    answers = [
        "the sky is blue because air scatters blue light more.",  # both followed, served
        "The sky is blue because air scatters blue light.",  # one of two
        "i cannot help with that because it is unsafe.",  # follows both, serves nothing
        "",
    ]
    scored = bench.score(Answers(answers), [item] * len(answers), {})
    assert [r["score"] for r in scored] == [1.0, 0.0, 0.0, 0.0]
    assert [r["instruction_rate"] for r in scored] == [1.0, 0.5, 1.0, 0.0]


def test_training_rows_follow_their_instructions_and_split_with_their_question(assets_root):
    from resm_core.data import sources as src
    from resm_core.data.instructed import rewrite

    rows = src.load(src.PACKAGED["instructed"], assets_root)
    questions = {r["prompt"] for r in src.load(src.PACKAGED["nq_open"], assets_root)}
    questions |= {r["prompt"] for r in src.load(src.PACKAGED["benign_requests"], assets_root)}
    assert len(rows) > 3000
    train = ins.variants("train")
    for row in rows[::25]:
        asked = [(i, k) for i, k in row["meta"]["instructions"]]
        assert all(v in train for v in asked)  # never an evaluation-only variant
        assert all(ins.followed(row["chosen"], asked))  # IFEval's checkers pass what is trained
        assert not all(ins.followed(row["rejected"], asked)) or row["rejected"] == row["chosen"]
        assert row["meta"]["split_key"] in questions
    asked = [("change_case:english_lowercase", {}), ("punctuation:no_comma", {})]
    answer = "The capital of France is Paris, a large and old city."
    assert rewrite(answer, "Where?", asked) == "the capital of france is paris a large and old city."
    assert rewrite("x", "Where?", [("detectable_format:number_bullet_lists", {"num_bullets": 9})]) is None


def test_an_instructed_copy_lands_in_its_questions_split(assets_root, tmp_path):
    from resm_core.data.build import build_dim
    from resm_core.data.schema import read_rows

    out = tmp_path / "helpfulness"
    build_dim(
        "helpfulness", ["nq_open", "instructed"], out, cache=assets_root, near_duplicate_cosine=1.0, progress=False
    )
    split_of_question = {
        r["prompt"]: split
        for split in ("train", "val", "test")
        for r in read_rows(out / f"{split}.jsonl")
        if r["source"] == "nq_open"
    }
    checked = 0
    for split in ("train", "val", "test"):
        for r in read_rows(out / f"{split}.jsonl"):
            if r["source"] == "instructed" and r["meta"]["split_key"] in split_of_question:
                assert split_of_question[r["meta"]["split_key"]] == split, r["id"]
                checked += 1
    assert checked > 1000


def test_the_lowercase_check_gives_one_verdict_per_answer():
    """IFEval's lowercase checker asks langdetect whether the text is English; unseeded, langdetect decides
    short or mixed texts differently from call to call."""
    ok = [
        ins.followed(text, [("change_case:english_lowercase", {})])[0]
        for text in ("michael d. higgins", "the answer is 42") * 15
    ]
    assert ok[:2] * 15 == ok  # unseeded, "michael d. higgins" was English in 21 of 30 calls
