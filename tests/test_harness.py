"""Benchmarks of kind lm_eval: lm-evaluation-harness tasks run by lm-eval itself, scored item by item, split and
paired like the embedded benchmarks (evaluate/harness.py). Custom YAML tasks over local JSONL, a tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from resm_core.errors import ConfigError

pytest.importorskip("lm_eval")

QUESTIONS = [(a, b) for a in range(3, 40, 3) for b in (a + 2, a + 7)]  # 26 two-choice documents


def write_tasks(root: Path, aggregation: str = "mean") -> Path:
    """A multiple-choice task (acc, acc_norm), a generation task (exact_match) and, for `aggregation`, a task
    whose acc lm-eval aggregates that way; all over one local JSONL."""
    root.mkdir(parents=True, exist_ok=True)
    data = root / "pairs.jsonl"
    with open(data, "w") as f:
        for i, (a, b) in enumerate(QUESTIONS):
            pair = [a, b] if i % 2 else [b, a]
            f.write(
                json.dumps(
                    {
                        "q": f"Which is larger, {pair[0]} or {pair[1]}?",
                        "c": [str(x) for x in pair],
                        "label": pair.index(max(pair)),
                    }
                )
                + "\n"
            )
    common = f"dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    mc = 'output_type: multiple_choice\ndoc_to_text: "Q: {{q}}\\nA:"\ndoc_to_choice: "{{c}}"\ndoc_to_target: label\n'
    (root / "pairs_mc.yaml").write_text(
        f"task: pairs_mc\n{common}{mc}metric_list:\n  - metric: acc\n    aggregation: mean\n"
        f"    higher_is_better: true\n  - metric: acc_norm\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "pairs_gen.yaml").write_text(
        f"task: pairs_gen\n{common}output_type: generate_until\n"
        'doc_to_text: "Q: {{q}}\\nA:"\ndoc_to_target: "{{c[label]}}"\n'
        "generation_kwargs:\n  until: ['\\n']\n  max_gen_toks: 4\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "pairs_agg.yaml").write_text(
        f"task: pairs_agg\n{common}{mc}metric_list:\n  - metric: acc\n    aggregation: {aggregation}\n"
        f"    higher_is_better: true\n"
    )
    return root


@pytest.fixture(scope="module")
def tasks(tmp_path_factory) -> Path:
    return write_tasks(tmp_path_factory.mktemp("lm_eval_tasks"), aggregation="median")


def evaluate(model, tasks: Path, out: Path, benchmarks: dict) -> dict:
    from resm_core.evaluate.request import request_from
    from resm_core.evaluate.run import evaluate as run

    opts = {name: {"kind": "lm_eval", "include_path": str(tasks), **o} for name, o in benchmarks.items()}
    req = request_from({"model": model, "data_root": out.parent, "out": out, "progress": False}, options=opts)
    return run(req)


def records(folder: Path, name: str) -> list[dict]:
    return [json.loads(line) for line in (folder / f"{name}.jsonl").read_text().splitlines()]


def test_item_scores_average_to_lm_evals_own_aggregate(tiny_llm, tasks, tmp_path):
    """Run whole, the item mean is lm-eval's aggregate (for the task run by our wrapper and by lm-eval from the
    model's path, as its CLI does); a metric lm-eval aggregates otherwise keeps its aggregate beside the mean."""
    from lm_eval import simple_evaluate

    from resm_core.evaluate.harness import task_manager

    out = tmp_path / "base"
    evaluate(
        tiny_llm,
        tasks,
        out,
        {
            "mc": {"task": "pairs_mc", "dim": "helpfulness"},
            "gen": {
                "task": "pairs_gen",
                "dim": "honesty",
                "gen_kwargs": {"max_gen_toks": 4},
            },  # the task's own, restated
            "agg": {"task": "pairs_agg", "dim": "harmlessness"},
        },
    )
    own = simple_evaluate(
        model="hf",
        model_args={"pretrained": str(tiny_llm), "dtype": "float32", "device": "cpu"},
        tasks=["pairs_mc", "pairs_gen"],
        task_manager=task_manager(str(tasks), False),
        bootstrap_iters=0,
    )["results"]
    for name, task, metric in (("mc", "pairs_mc", "acc"), ("gen", "pairs_gen", "exact_match")):
        result = json.loads((out / f"{name}.json").read_text())
        recs = records(out, name)
        assert len(recs) == len(QUESTIONS) == result["n"] + result["val"]["n"]  # every document, once
        assert sorted(int(r["id"]) for r in recs) == list(range(len(QUESTIONS)))
        mean = float(np.mean([r["score"] for r in recs]))
        assert result["lm_eval"]["aggregate"] == pytest.approx(mean, abs=1e-12)
        assert result["lm_eval"]["aggregate"] == pytest.approx(own[task][f"{metric},none"], abs=1e-12)
        assert result["lm_eval"]["aggregation"] == ["mean"] and result["metric"] == metric
    mc = records(out, "mc")
    assert {tuple(r["metrics"]) for r in mc} == {("acc_norm",)}  # the other metric kept in the record
    assert all(r["prompt"].startswith("Q: Which is larger") for r in mc)
    assert all("response" in r for r in records(out, "gen"))  # a person can read what the model said
    agg = json.loads((out / "agg.json").read_text())
    scores = [r["score"] for r in records(out, "agg")]
    assert agg["lm_eval"]["aggregation"] == ["median"]
    assert agg["lm_eval"]["aggregate"] == pytest.approx(float(np.median(scores)))
    assert agg["lm_eval"]["item_mean"] == pytest.approx(float(np.mean(scores)))


def test_lm_evals_own_command_line_prints_the_aggregate_resm_stores(tiny_llm, tmp_path):
    """`lm_eval --tasks TASK` run by hand on the model directory, and the same task through `resm evaluate`
    (kind lm_eval, run whole): the same aggregate, which is the mean of resm's item scores."""
    tasks = write_tasks(tmp_path / "tasks")
    out = tmp_path / "resm"
    evaluate(tiny_llm, tasks, out, {"mc": {"task": "pairs_mc", "dim": "helpfulness"}})
    result = json.loads((out / "mc.json").read_text())
    cmd = [
        sys.executable,
        "-m",
        "lm_eval",
        "--model",
        "hf",
        "--model_args",
        f"pretrained={tiny_llm},dtype=float32",
        "--tasks",
        "pairs_mc",
        "--include_path",
        str(tasks),
        "--device",
        "cpu",
        "--batch_size",
        "8",
        "--output_path",
        str(tmp_path / "lm_eval"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    (own,) = (tmp_path / "lm_eval").rglob("results_*.json")
    acc = json.loads(own.read_text())["results"]["pairs_mc"]["acc,none"]
    assert acc == pytest.approx(result["lm_eval"]["aggregate"], abs=1e-12)
    assert acc == pytest.approx(np.mean([r["score"] for r in records(out, "mc")]), abs=1e-12)


def test_documents_split_by_the_hashed_rule_and_pair_across_arms(tiny_llm, tasks, tmp_path):
    """n and n_val choose documents by the embedded items' rule (validation or test from the question's text,
    the same for every arm; a larger n adds documents); two arms pair on shared items in the report."""
    from resm_core.evaluate.run import eval_split
    from resm_core.report.paired import load_splits, paired

    perturbed = tmp_path / "other"
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(tiny_llm, perturbed)
    state = load_file(perturbed / "model.safetensors")
    gen = torch.Generator().manual_seed(1)
    state = {k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    save_file(state, perturbed / "model.safetensors", metadata={"format": "pt"})
    results = tmp_path / "results"
    for arm, model in (("a", tiny_llm), ("b", perturbed)):
        evaluate(
            model, tasks, results / "eval" / arm, {"mc": {"task": "pairs_mc", "dim": "helpfulness", "n": 8, "n_val": 4}}
        )
    ra, rb = records(results / "eval" / "a", "mc"), records(results / "eval" / "b", "mc")
    assert [(r["id"], r["split"]) for r in ra] == [(r["id"], r["split"]) for r in rb]
    assert sum(r["split"] == "test" for r in ra) == 8 and sum(r["split"] == "val" for r in ra) == 4
    assert all(eval_split(r["prompt"]) == r["split"] for r in ra)  # zero-shot: the prompt is the question's text
    bigger = tmp_path / "bigger"
    evaluate(tiny_llm, tasks, bigger, {"mc": {"task": "pairs_mc", "dim": "helpfulness", "n": 10, "n_val": 4}})
    assert {r["id"] for r in ra} < {r["id"] for r in records(bigger, "mc")}
    a, b = load_splits(results, "a")["test"], load_splits(results, "b")["test"]
    rows = {row["metric"]: row for row in paired(a, b, dims=["helpfulness"], n_boot=200, n_perm=200)}
    assert rows["mc"]["n_items"] == 8
    test_a = {r["id"]: r["score"] for r in ra if r["split"] == "test"}
    test_b = {r["id"]: r["score"] for r in rb if r["split"] == "test"}
    assert rows["mc"]["difference"] == pytest.approx(np.mean([test_a[i] - test_b[i] for i in test_a]))


def test_a_bad_task_name_is_refused_at_config_check_with_close_matches(tasks):
    from resm_core.workflow_config import load_config

    config = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml")
    config["evaluation"]["benchmarks"]["tqa"] = {"kind": "lm_eval", "task": "truthfulqa_mc", "dim": "honesty"}
    from resm_core.workflow_config import check_config

    with pytest.raises(ConfigError, match=r"evaluation\.benchmarks\.tqa\.task: 'truthfulqa_mc' .*truthfulqa_mc2"):
        check_config(config)
    config["evaluation"]["benchmarks"]["tqa"] = {"kind": "lm-eval", "task": "truthfulqa_mc2", "dim": "honesty"}
    with pytest.raises(ConfigError, match=r"tqa\.kind: 'lm-eval' is not one of \['lm_eval'\]"):
        check_config(config)
    # `resm evaluate --options` has no schema before it: the same mistakes, named by the benchmark's own checks
    from resm_core.evaluate.request import request_from

    flags = {"model": tasks, "data_root": tasks, "out": tasks / "o"}
    with pytest.raises(ConfigError, match=r"tqa\.kind: 'lm-eval' is not a benchmark kind"):
        request_from(flags, options={"tqa": {"kind": "lm-eval", "task": "pairs_mc", "dim": "honesty"}})
    with pytest.raises(ConfigError, match=r"tqa\.dim: 'truth' must be one of"):
        request_from(flags, options={"tqa": {"kind": "lm_eval", "task": "pairs_mc", "dim": "truth"}})


def test_a_task_not_in_the_offline_cache_fails_before_the_model_loads(tiny_llm, tmp_path):
    """Offline (as a compute node), a hub dataset nobody fetched: the evaluation stops while choosing items, naming
    the benchmark, the task and the command that fetches it; no model is loaded."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "unfetched.yaml").write_text(
        "task: unfetched\ndataset_path: resm-tests/never-fetched\ntest_split: test\noutput_type: multiple_choice\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{c}}"\ndoc_to_target: label\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    config = tmp_path / "eval.yaml"
    config.write_text(
        json.dumps(
            {
                "benchmarks": {
                    "tq": {"kind": "lm_eval", "task": "unfetched", "dim": "honesty", "include_path": str(tasks)}
                }
            }
        )
    )
    from resm_core.evaluate.harness import cache_env

    env = {**os.environ, **cache_env(tmp_path / "cache", offline=True)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "resm_core.cli",
            "evaluate",
            "--model",
            str(tiny_llm),
            "--config",
            str(config),
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode != 0
    err = done.stderr
    assert "evaluation.benchmarks.tq: lm-eval task 'unfetched': its data could not be loaded" in err, err[-2000:]
    assert "this job is offline" in err and f"resm lm-eval fetch --task unfetched --include-path {tasks}" in err
    assert "Loading weights" not in err and not (tmp_path / "out").exists()


def test_answers_and_unknown_options_are_refused_by_name(tiny_llm, tasks, tmp_path):
    from resm_core.evaluate.request import request_from
    from resm_core.evaluate.run import evaluate as run

    answers = tmp_path / "answers.jsonl"
    answers.write_text("")
    opts = {"mc": {"kind": "lm_eval", "task": "pairs_mc", "dim": "helpfulness", "include_path": str(tasks)}}
    with pytest.raises(ConfigError, match="--answers: mc runs the model through lm-eval"):
        run(request_from({"answers": answers, "data_root": tmp_path, "out": tmp_path / "o"}, options=opts))
    with pytest.raises(ConfigError, match=r"mc\.fewshot: not an option of mc"):
        request_from(
            {"model": tiny_llm, "data_root": tmp_path, "out": tmp_path / "o"},
            options={"mc": {**opts["mc"], "fewshot": 2}},
        )
    with pytest.raises(ConfigError, match=r"logs no 'f1' per document \(it logs acc, acc_norm\)"):
        evaluate(
            tiny_llm,
            tasks,
            tmp_path / "m",
            {"mc": {"task": "pairs_mc", "dim": "helpfulness", "metric": "f1", "n": 2, "n_val": 0}},
        )


def test_only_the_options_that_choose_documents_reach_the_decontamination_pool():
    """A metric, a filter or a few-shot count re-scores; it never changes what training is checked against."""
    from resm_core.evaluate.benchmarks import item_options

    opts = {
        "kind": "lm_eval",
        "task": "ifeval",
        "dim": "helpfulness",
        "metric": "prompt_level_strict_acc",
        "num_fewshot": 0,
        "apply_chat_template": True,
        "n": 100,
        "in_balance": False,
    }
    assert item_options("ifeval", opts) == {"kind": "lm_eval", "task": "ifeval", "dim": "helpfulness"}
    assert item_options("qa_mc", {"n": 10, "sources": ["openbookqa"]}) == {"sources": ["openbookqa"]}
