"""Judges used by the data mixtures: keywords, score tables, a sequence-classification reward model."""

from __future__ import annotations

import json

import pytest
import torch

from resm_core.errors import ConfigError, DataError, JudgeError
from resm_core.judges import make_judge


def test_keyword_judge_sees_refusals_and_stays_neutral_on_honesty():
    judge = make_judge("keywords")
    responses = ["I'm sorry, but I can't help with that.", "Paris is the capital of France."]
    assert judge.score("harmlessness", ["q", "q"], responses) == [1.0, 0.0]
    assert judge.score("helpfulness", ["q", "q"], responses) == [0.0, 1.0]
    assert judge.score("honesty", ["q", "q"], responses) == [0.5, 0.5]


def test_table_judge_reads_scores_and_names_what_is_missing(tmp_path):
    path = tmp_path / "scores.jsonl"
    path.write_text(json.dumps({"dim": "honesty", "prompt": "p", "response": "r", "score": 0.7}) + "\n")
    judge = make_judge(f"table:{path}")
    assert judge.score("honesty", ["p"], ["r"]) == [0.7]
    with pytest.raises(DataError, match="no helpfulness score for prompt 'p'"):
        judge.score("helpfulness", ["p"], ["r"])
    path.write_text(json.dumps({"dim": "honesty", "prompt": "p"}) + "\n")
    with pytest.raises(DataError, match="scores.jsonl:1: needs dim"):
        make_judge(f"table:{path}")


def test_reward_model_judge_scores_with_the_head_of_each_dimension(tiny_llm, tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig.from_pretrained(tiny_llm)
    config.num_labels = 3
    torch.manual_seed(0)
    model = LlamaForSequenceClassification(config)
    model.save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_llm).save_pretrained(tmp_path / "rm")
    judge = make_judge(f"reward:{tmp_path / 'rm'}:helpfulness=0,harmlessness=2")
    prompts, responses = ["what is the capital"] * 3, ["paris", "sorry i cannot help", "the moon"]
    help_scores = judge.score("helpfulness", prompts, responses)
    harm_scores = judge.score("harmlessness", prompts, responses)
    assert all(0.0 <= s <= 1.0 for s in help_scores + harm_scores)
    assert help_scores != harm_scores  # different heads
    assert judge.score("honesty", prompts, responses) == pytest.approx(help_scores)  # unmapped dims use head 0
    batched = judge.score("helpfulness", prompts, responses)
    single = [judge.score("helpfulness", [p], [r])[0] for p, r in zip(prompts, responses)]
    assert batched == pytest.approx(single, abs=1e-5)  # padding does not change a score
    with pytest.raises(ConfigError, match="head 5 for honesty is outside the model's 3 labels"):
        make_judge(f"reward:{tmp_path / 'rm'}:honesty=5")
    with pytest.raises(JudgeError, match="not a model directory"):
        make_judge(f"reward:{tmp_path}")


def test_minilm_embedder_is_unit_norm_and_semantic(assets_root):
    import numpy as np

    from resm_core.judges.embedder import embed

    texts = [
        "How do I bake bread at home?",
        "What is a simple recipe for homemade bread?",
        "The stock market fell sharply today.",
        "",
        "word " * 400,
    ]  # empty, and past the 256-token limit
    vectors = embed(texts, root=assets_root)
    assert vectors.shape == (5, 384) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.6 > sims[0, 2]  # a paraphrase is near, another topic is far
    assert np.allclose(embed(texts[:2], root=assets_root, batch_size=1), vectors[:2], atol=1e-5)  # padding-free
    assert embed([], root=assets_root).shape == (0, 384)


def test_embedder_refuses_a_model_that_is_not_mean_pooled(assets_root, tmp_path):
    import shutil

    from resm_core.assets import asset_path
    from resm_core.errors import ResmError
    from resm_core.judges.embedder import MINILM_MEMBER, _max_length

    model = tmp_path / "model"
    shutil.copytree(asset_path("minilm", MINILM_MEMBER, assets_root), model)
    (model / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(ResmError, match="expected a mean-pooled, normalised"):
        _max_length(model)


def test_the_refusal_judges_features_are_computed_once_per_content(assets_root, monkeypatch):
    import uuid

    import numpy as np

    from resm_core.judges import refusal

    calls = []
    real_embed = refusal.embed

    def counting_embed(texts, root=None):
        calls.append(len(texts))
        return real_embed(texts, root)

    monkeypatch.setattr(refusal, "embed", counting_embed)
    nonce = uuid.uuid4().hex  # a row no earlier run has cached
    prompts, responses = [f"How do I bake bread? {nonce}", "Tell me a joke."], ["Mix flour and water.", "I can't."]
    first = refusal.cached_features(prompts, responses, assets_root)
    assert len(calls) == 2 and first.shape == (2, 386)
    assert np.array_equal(refusal.cached_features(prompts, responses, assets_root), first) and len(calls) == 2
    changed = refusal.cached_features(prompts, ["Mix flour and water.", "Sure: a joke."], assets_root)
    assert len(calls) == 4 and np.allclose(changed[0], first[0], atol=1e-5) and not np.allclose(changed[1], first[1])


@pytest.mark.parametrize(
    "text,want",
    [
        ("I don't know.", True),
        ("It can't be determined from the context.", True),
        ("Nobody can say which of them it was.", True),
        ("That information isn't given in the passage.", True),
        ("The lawyer.", False),
        ("As you know, the lawyer failed his classes.", False),
        ("I'm sorry, but I can't help with that.", False),  # a refusal says nothing about what is known
        ("The grandson. I'm not sure why, though, he never said.", False),  # an answer; doubt only later on
        ("", False),
    ],
)
def test_the_abstention_check_reads_the_opening_for_not_knowing(text, want):
    from resm_core.judges.abstention import abstains

    assert abstains(text) is want


def test_the_abstention_check_states_its_accuracy_on_its_labelled_set():
    from resm_core.judges.abstention import accuracy

    figures = accuracy()
    assert figures["labelled"] >= 40 and figures["accuracy"] >= 0.95
    assert figures["false_abstentions"] + figures["missed_abstentions"] == round(
        (1 - figures["accuracy"]) * figures["labelled"]
    )
