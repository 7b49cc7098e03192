"""Training on the tiny model: SFT and DPO learn, LoRA merges into a mergeable model, resume is exact."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file
from transformers import TrainerCallback

from resm_core.errors import ConfigError, DataError, TrainingError
from resm_core.merge.engine import MergeRequest, merge
from resm_core.taskvec.sources import open_expert
from resm_core.train.trainer import TrainRequest, train

ROWS = [
    ("What is the capital of France?", "The answer is Paris.", "I can't help with that."),
    ("Which is bigger, the sun or the moon?", "The sun is bigger.", "The moon is bigger."),
    ("Is water wet?", "Yes, water is wet.", "Sorry, I cannot answer."),
    ("Name a colour.", "Blue is a colour.", "I won't do that."),
]


@pytest.fixture
def fixed_batch(tmp_path) -> Path:
    """Four pairs, batch size four: every step sees the same batch."""
    folder = tmp_path / "data"
    folder.mkdir()
    with open(folder / "train.jsonl", "w") as f:
        for i, (p, c, r) in enumerate(ROWS):
            f.write(
                json.dumps(
                    {"id": f"r{i}", "dim": "helpfulness", "source": "t", "prompt": p, "chosen": c, "rejected": r}
                )
                + "\n"
            )
    return folder


def request(base, data, out, **kw) -> TrainRequest:
    defaults = dict(steps=8, learning_rate=3e-3, batch_size=4, max_length=96, save_steps=4, progress=False)
    return TrainRequest(base=base, data=data, out=out, **{**defaults, **kw})


def loss_curve(out: Path) -> list[dict]:
    with open(out / "loss.csv") as f:
        return [{k: float(v) if v else None for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_sft_lowers_the_loss_on_a_fixed_batch(tiny_llm, fixed_batch, tmp_path, adapter):
    out = tmp_path / "sft"
    manifest = train(request(tiny_llm, fixed_batch, out, objective="sft", adapter=adapter, learning_rate=1e-2))
    curve = loss_curve(out)
    # a random tiny model starts near ln(vocab); LoRA cannot touch the (tied) output layer, so it moves less
    assert len(curve) == 8 and curve[-1]["loss"] < curve[0]["loss"] - (0.5 if adapter == "full" else 0.2)
    assert manifest["steps"] == 8 and manifest["data"]["used"] == 4 and manifest["seed"] == 0
    assert (out / "config.json").is_file() and (out / "chat_template.jinja").is_file()
    assert (out / "adapter" / "adapter_config.json").is_file() == (adapter == "lora")
    assert not list(tmp_path.glob(".sft*"))  # checkpoints are cleaned up once the output is published


@pytest.mark.parametrize("adapter", ["full", "lora"])
def test_dpo_grows_the_chosen_rejected_margin(tiny_llm, fixed_batch, tmp_path, adapter):
    out = tmp_path / "dpo"
    train(
        request(
            tiny_llm,
            fixed_batch,
            out,
            objective="dpo",
            adapter=adapter,
            learning_rate=3e-3 if adapter == "full" else 1e-2,
        )
    )
    curve = loss_curve(out)
    assert curve[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-6)
    assert curve[-1]["rewards/margins"] > 0.1 and curve[-1]["loss"] < curve[0]["loss"]


def test_lora_training_yields_a_dense_delta_the_merge_engine_accepts(tiny_llm, fixed_batch, tmp_path):
    lora = tmp_path / "lora"
    full = tmp_path / "full"
    train(request(tiny_llm, fixed_batch, lora, adapter="lora", learning_rate=1e-2))
    train(request(tiny_llm, fixed_batch, full))
    merged = merge(MergeRequest(base=tiny_llm, experts=[lora, full], method="ties", out=tmp_path / "m", progress=False))
    assert merged["method"] == "ties"
    # the saved adapter and the merged weights describe the same delta
    adapter = open_expert(lora / "adapter")
    base = load_file(tiny_llm / "model.safetensors")
    weights = load_file(lora / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert adapter.provides(name)
    dense = adapter.delta(name, base[name].float())
    assert dense.abs().max() > 0
    assert (dense - (weights[name].float() - base[name].float())).abs().max() < 1e-5


class Interrupt(TrainerCallback):
    """Raise right after the checkpoint at step 4 is saved, like a job killed mid-run."""

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == 4:
            raise KeyboardInterrupt


def more_rows(fixed_batch: Path, tmp_path: Path) -> Path:
    """Eight rows: more than one global batch, so which process sees which rows matters."""
    data = tmp_path / "more"
    shutil.copytree(fixed_batch, data)
    with open(data / "train.jsonl", "a") as f:
        for i, (p, c, r) in enumerate(ROWS):
            row = {"id": f"x{i}", "dim": "helpfulness", "source": "t", "prompt": p + " Briefly.", "chosen": c}
            f.write(json.dumps({**row, "rejected": r}) + "\n")
    return data


@pytest.mark.parametrize("objective,adapter", [("sft", "full"), ("dpo", "lora")])
def test_resume_after_interruption_gives_the_same_weights(tiny_llm, fixed_batch, tmp_path, objective, adapter, caplog):
    data = more_rows(fixed_batch, tmp_path)  # more rows than a batch, so the data position matters
    kw = dict(objective=objective, adapter=adapter, batch_size=2)
    train(request(tiny_llm, data, tmp_path / "straight", **kw))
    with pytest.raises(KeyboardInterrupt):
        train(request(tiny_llm, data, tmp_path / "resumed", **kw), callbacks=[Interrupt()])
    assert not (tmp_path / "resumed").exists()  # an unfinished run never looks finished
    work = tmp_path / ".resumed.work"
    assert (work / "checkpoint-4").is_dir()
    # a later save killed half way (or a full disk): its state truncated, its scheduler never written
    shutil.copytree(work / "checkpoint-4", work / "checkpoint-6")
    (work / "checkpoint-6" / "trainer_state.json").write_text('{"global_step": 6, "log_hi')
    (work / "checkpoint-6" / "scheduler.pt").unlink()
    with caplog.at_level("WARNING", logger="resm_core.train.trainer"):
        manifest = train(request(tiny_llm, data, tmp_path / "resumed", **kw))
    assert manifest["resumed_from"].endswith("checkpoint-4")  # the last complete one
    assert "checkpoint-6 is incomplete (no scheduler.pt, a readable trainer_state.json" in caplog.text
    a, b = load_file(tmp_path / "straight" / "model.safetensors"), load_file(tmp_path / "resumed" / "model.safetensors")
    assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a)
    assert [r["loss"] for r in loss_curve(tmp_path / "straight")] == [
        r["loss"] for r in loss_curve(tmp_path / "resumed")
    ]


def test_checkpoints_of_another_request_are_not_resumed(tiny_llm, fixed_batch, tmp_path):
    with pytest.raises(KeyboardInterrupt):
        train(request(tiny_llm, fixed_batch, tmp_path / "m"), callbacks=[Interrupt()])
    with pytest.raises(TrainingError, match="different training request"):
        train(request(tiny_llm, fixed_batch, tmp_path / "m", learning_rate=1e-4))
    train(request(tiny_llm, fixed_batch, tmp_path / "m", learning_rate=1e-4, force=True))


def test_bad_inputs_are_clear_errors(tiny_llm, fixed_batch, tmp_path):
    no_template = tmp_path / "no_template"
    shutil.copytree(tiny_llm, no_template)
    (no_template / "chat_template.jinja").unlink()
    cfg = json.loads((no_template / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (no_template / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(TrainingError, match="no chat template"):
        train(request(no_template, fixed_batch, tmp_path / "a"))
    with pytest.raises(TrainingError, match="model_type is 'llama'.*'mistral'"):
        train(request(tiny_llm, fixed_batch, tmp_path / "b", architecture="mistral"))
    with pytest.raises(ConfigError, match="training.objective"):
        train(request(tiny_llm, fixed_batch, tmp_path / "c", objective="ppo"))
    with pytest.raises(ConfigError, match="learning_rate are set by their own options"):
        train(request(tiny_llm, fixed_batch, tmp_path / "c", extra={"learning_rate": 1.0}))
    sft_only = tmp_path / "sft_only"
    sft_only.mkdir()
    (sft_only / "train.jsonl").write_text(
        json.dumps({"id": "a", "dim": "honesty", "source": "t", "prompt": "p", "chosen": "c", "rejected": None}) + "\n"
    )
    with pytest.raises(TrainingError, match="no usable rows for dpo"):
        train(request(tiny_llm, sft_only, tmp_path / "d", objective="dpo"))
    with pytest.raises(DataError, match="no such file"):
        train(request(tiny_llm, tmp_path / "nowhere", tmp_path / "e"))
    assert not any((tmp_path / n).exists() for n in "abcde")


def test_overlong_sequences_are_counted(tiny_llm, fixed_batch, tmp_path, caplog):
    manifest = train(request(tiny_llm, fixed_batch, tmp_path / "short", max_length=36, steps=1))
    assert manifest["data"]["truncated_sequences"] == 4 and manifest["data"]["dropped_prompt_too_long"] == 1
    assert "4 of 4 examples exceed max_length=36" in caplog.text
    with pytest.raises(TrainingError, match="every prompt"):
        train(request(tiny_llm, fixed_batch, tmp_path / "shorter", max_length=16, steps=1))


def test_options_and_trainer_args_reach_the_trainer(tiny_llm, fixed_batch, tmp_path):
    """Each option reaches TrainingArguments under its transformers name; a trainer arg may override a
    default of ours (logging_steps) but not repeat an option (gradient_accumulation_steps is grad_accum)."""
    seen = {}

    class Record(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            seen.update(
                weight_decay=args.weight_decay,
                warmup_steps=args.warmup_steps,
                logging_steps=args.logging_steps,
                accumulate=args.gradient_accumulation_steps,
            )

    kw = dict(steps=2, weight_decay=0.1, warmup=0.5, grad_accum=2, extra={"logging_steps": 2})
    train(request(tiny_llm, fixed_batch, tmp_path / "m", **kw), callbacks=[Record()])
    assert seen == {"weight_decay": 0.1, "warmup_steps": 0.5, "logging_steps": 2, "accumulate": 2}
    with pytest.raises(ConfigError, match="gradient_accumulation_steps are set by their own options"):
        train(request(tiny_llm, fixed_batch, tmp_path / "x", extra={"gradient_accumulation_steps": 4}))


def test_a_full_disk_ends_the_run_with_one_line_and_the_rerun_resumes(tiny_llm, fixed_batch, tmp_path):
    import errno

    class DiskFills(TrainerCallback):  # the disk fills up just after the second checkpoint
        def on_save(self, args, state, control, **kw):
            if state.global_step == 8:
                raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(TrainingError, match=r"\.m\.work: no space left on device while training; free space and rerun"):
        train(request(tiny_llm, fixed_batch, tmp_path / "m", steps=12), callbacks=[DiskFills()])
    assert not (tmp_path / "m").exists()
    manifest = train(request(tiny_llm, fixed_batch, tmp_path / "m", steps=12))
    assert manifest["resumed_from"].endswith("checkpoint-8") and manifest["steps"] == 12


def test_two_processes_train_like_one_with_the_same_global_batch(tiny_llm, fixed_batch, tmp_path):
    """`--processes 2` (gloo on CPU) against one process accumulating two micro-batches: each optimizer
    step sees the same four rows, so the weights agree within 1e-5 of the update's norm (measured: equal)."""
    import subprocess
    import sys

    from transformers import AutoModelForCausalLM

    data = more_rows(fixed_batch, tmp_path)
    flags = ["--base", str(tiny_llm), "--data", str(data), "--steps", "4", "--lr", "1e-2", "--batch-size", "2"]
    flags += ["--max-length", "96", "--objective", "sft"]
    two = tmp_path / "two"
    done = subprocess.run(
        [sys.executable, "-m", "resm_core.cli", "-q", "train", *flags, "--processes", "2", "--out", str(two)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("sft/full: 4 steps") == 1  # rank 0 reports; the other rank says nothing
    one = tmp_path / "one"
    train(request(tiny_llm, data, one, objective="sft", steps=4, learning_rate=1e-2, batch_size=2, grad_accum=2))

    manifest = json.loads((two / "resm_manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["sequences_per_step"] == 4 and manifest["sharding"] is None
    curve = loss_curve(two)
    assert len(curve) == 4 and curve[-1]["loss"] < curve[0]["loss"] - 0.3
    AutoModelForCausalLM.from_pretrained(two)  # the saved weights load
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    base = load_file(Path(tiny_llm) / "model.safetensors")
    update = sum(float((a[k] - base[k]).pow(2).sum()) for k in a) ** 0.5
    gap = sum(float((a[k] - b[k]).pow(2).sum()) for k in a) ** 0.5
    assert a.keys() == b.keys() and update > 0.5 and gap <= 1e-5 * update
    assert not list(tmp_path.glob(".two*"))  # no staging or work directory of either rank is left


def test_processes_must_match_the_launcher(tiny_llm, fixed_batch, tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(ConfigError, match="training.processes is 2, but the launcher started 4 processes"):
        train(request(tiny_llm, fixed_batch, tmp_path / "m", processes=2))
    monkeypatch.delenv("LOCAL_RANK")
    with pytest.raises(ConfigError, match=r"started by `resm train --processes N` .*not by a call to train\(\)"):
        train(request(tiny_llm, fixed_batch, tmp_path / "m", processes=2))
