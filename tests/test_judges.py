"""Judges used by the data mixtures: keywords, score tables, a sequence-classification reward model."""

from __future__ import annotations

import json

import pytest
import torch

from resm_core.errors import ConfigError, DataError
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
    with pytest.raises(ConfigError, match="not a model directory"):
        make_judge(f"reward:{tmp_path}")
