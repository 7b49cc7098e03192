"""Fine-tune an expert (or a data-mixture model) with TRL's SFT or DPO trainer, fully or with LoRA.

Checkpoints go to a hidden work directory next to the output (`.NAME.work/`); the output directory
itself appears only once training finished and the final weights, loss curve and manifest are on disk.
Rerunning the same request after an interruption resumes from the last checkpoint (optimizer, scheduler,
RNG and data position included) and ends with the same weights as an uninterrupted run.
"""

from __future__ import annotations

import csv
import errno
import json
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from resm_core.card import CARD_NAME, trained_card
from resm_core.checkpoint.atomic import AtomicDirectory, prepare_output
from resm_core.checkpoint.finite import check_finite
from resm_core.checkpoint.manifest import ManifestRecorder
from resm_core.checkpoint.reader import check_pickle_policy
from resm_core.data.schema import read_rows
from resm_core.devices import resolve_device, resolve_dtype
from resm_core.errors import ConfigError, TrainingError
from resm_core.jsonfile import read_json
from resm_core.train.launch import rank
from resm_core.train.request import TrainRequest

log = logging.getLogger(__name__)

LOSS_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "learning_rate",
    "grad_norm",
    "rewards/margins",
    "rewards/accuracies",
    "rewards/chosen",
    "rewards/rejected",
    "num_tokens",
    "mean_token_accuracy",
)


def _chat(role: str, text: str) -> list[dict]:
    return [{"role": role, "content": text}]


def build_dataset(rows: list[dict], objective: str):
    """Rows -> TRL's conversational format; TRL applies the chat template."""
    from datasets import Dataset

    if objective == "sft":
        records = [{"prompt": _chat("user", r["prompt"]), "completion": _chat("assistant", r["chosen"])} for r in rows]
    else:
        records = [
            {
                "prompt": _chat("user", r["prompt"]),
                "chosen": _chat("assistant", r["chosen"]),
                "rejected": _chat("assistant", r["rejected"]),
            }
            for r in rows
        ]
    return Dataset.from_list(records)


def _ids(encoded) -> list[int]:
    return encoded["input_ids"] if hasattr(encoded, "keys") else encoded


def token_lengths(tokenizer, rows: list[dict], objective: str) -> list[tuple[int, list[int]]]:
    """Per row: the templated prompt's length and each full conversation's (chosen, and rejected for DPO)."""
    fields = ("chosen",) if objective == "sft" else ("chosen", "rejected")
    out = []
    for r in rows:
        prompt = _chat("user", r["prompt"])
        head = len(_ids(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True)))
        out.append(
            (
                head,
                [
                    len(_ids(tokenizer.apply_chat_template(prompt + _chat("assistant", r[f]), tokenize=True)))
                    for f in fields
                ],
            )
        )
    return out


def count_over_length(lengths: list[tuple[int, list[int]]], max_length: int) -> tuple[int, int]:
    """(examples TRL will truncate, examples whose prompt alone fills max_length, which TRL drops).
    TRL does both silently; they are counted here and logged."""
    dropped = sum(head >= max_length for head, _ in lengths)
    over = sum(head >= max_length or max(full) > max_length for head, full in lengths)
    return over, dropped


def _load_rows(req: TrainRequest) -> tuple[list[dict], dict]:
    path = Path(req.data) / "train.jsonl" if Path(req.data).is_dir() else Path(req.data)
    rows = read_rows(path)
    stats = {"rows": len(rows)}
    if req.objective == "dpo":
        paired = [r for r in rows if r["rejected"] is not None]
        stats["skipped_without_rejected"] = len(rows) - len(paired)
        if stats["skipped_without_rejected"]:
            log.info("dpo: %d row(s) have no rejected answer and are skipped", stats["skipped_without_rejected"])
        rows = paired
    if req.max_examples is not None:
        rows = rows[: req.max_examples]
    if not rows:
        raise TrainingError(f"{path}: no usable rows for {req.objective}")
    stats["used"] = len(rows)
    return rows, stats


def _loss_table(log_history: list[dict]) -> list[dict]:
    rows = []
    for entry in log_history:
        if "loss" in entry and "train_runtime" not in entry:
            rows.append({k: entry.get(k, "") for k in LOSS_COLUMNS})
    return rows


def _write_loss_csv(path: Path, rows: list[dict]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOSS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _work_path(req: TrainRequest) -> Path:
    out = Path(req.out)
    return out.parent / f".{out.name}.work"


def _work_dir(req: TrainRequest, fingerprint: str) -> Path:
    work = _work_path(req)
    stamp = work / "request.json"
    if work.exists():
        same = stamp.is_file() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint
        if not same:
            if not req.force:
                raise TrainingError(
                    f"{work}: holds checkpoints of a different training request; pass --force to discard them"
                )
            shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"fingerprint": fingerprint, "request": asdict(req)}, default=str, indent=2))
    return work


CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
CHECKPOINT_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors")


def _missing_from(checkpoint: Path) -> list[str]:
    """What a checkpoint lacks to be resumed from: transformers writes one in place, so a kill or a full
    disk during a save leaves a `checkpoint-N` without some of its files (or with a truncated state)."""
    missing = [name for name in CHECKPOINT_FILES if not (checkpoint / name).is_file()]
    if not any((checkpoint / name).is_file() for name in CHECKPOINT_WEIGHTS):
        missing.append("weights")
    if "trainer_state.json" not in missing:
        try:
            json.loads((checkpoint / "trainer_state.json").read_text())
        except (json.JSONDecodeError, UnicodeDecodeError):
            missing.append("a readable trainer_state.json")
    return missing


@contextmanager
def _disk_full_is_an_error(where: Path) -> Iterator[None]:
    """A full disk ends the run with one line: what filled up, and that a rerun resumes."""
    try:
        yield
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        raise TrainingError(
            f"{where}: no space left on device while training; free space and rerun the same command "
            f"(it resumes from the last complete checkpoint)"
        ) from None


def _last_checkpoint(work: Path) -> str | None:
    """The newest complete checkpoint. Newer incomplete ones are said and removed: a run saving into one
    again would mix its files with the broken ones."""
    found = sorted(
        (int(step), p)
        for p in work.glob("checkpoint-*")
        if p.is_dir() and (step := p.name.removeprefix("checkpoint-")).isdigit()
    )
    for _, checkpoint in reversed(found):
        missing = _missing_from(checkpoint)
        if not missing:
            return str(checkpoint)
        log.warning(
            "%s is incomplete (no %s; a save was interrupted): skipped and removed", checkpoint, ", ".join(missing)
        )
        shutil.rmtree(checkpoint)
    return None


def _check_trainer_args(extra: dict, objective: str) -> None:
    """--trainer-arg names a field of TRL's config class: a typo is refused before the model loads."""
    import dataclasses
    import difflib

    from trl import DPOConfig, SFTConfig

    config_class = SFTConfig if objective == "sft" else DPOConfig
    fields = {f.name for f in dataclasses.fields(config_class)}
    for key in extra:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"training.extra: {key!r} is not an argument of TRL's {config_class.__name__}{hint}")


def _process_state(req: TrainRequest, on_cuda: bool):
    """This process's place in the run: one process, or a rank of a launched data-parallel run (whose
    process group this starts: gloo on CPU, NCCL on CUDA)."""
    from accelerate import PartialState

    from resm_core.train.launch import launched, world_size

    if req.processes > 1 and not launched():
        raise ConfigError(
            f"training.processes is {req.processes}: several processes are started by `resm train --processes N` "
            f"(or torchrun/accelerate launch), not by a call to train()"
        )
    if launched() and world_size() != req.processes:
        raise ConfigError(
            f"training.processes is {req.processes}, but the launcher started {world_size()} processes "
            f"(WORLD_SIZE); set them equal so the global batch is the one asked for"
        )
    return PartialState(cpu=not on_cuda)


def _gathered_model(trainer: Any, work: Path, req: TrainRequest, dtype: torch.dtype) -> Any:
    """The trained model, whole, on the main process. Under FSDP or DeepSpeed ZeRO-3 each rank holds a
    shard: the Trainer gathers them into `work/final` (every rank must call it) and rank 0 reads it back."""
    if not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        return trainer.model
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    final = work / "final"
    trainer.save_model(str(final))
    trainer.accelerator.wait_for_everyone()
    if not trainer.is_world_process_zero():
        return None
    if req.adapter == "lora":
        base = AutoModelForCausalLM.from_pretrained(req.base, dtype=dtype)
        return PeftModel.from_pretrained(base, final)
    return AutoModelForCausalLM.from_pretrained(final, dtype=dtype)


def train(req: TrainRequest, callbacks: list | None = None) -> dict:
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer

    req.validate()
    if not req.progress:
        import datasets
        import transformers

        datasets.disable_progress_bars()
        transformers.utils.logging.disable_progress_bar()
    if rank() == 0:  # before any work: one process checks the output (a launched run has several)
        prepare_output(Path(req.out), req.force, [req.base, req.data])
    _check_trainer_args(req.extra, req.objective)
    base = Path(req.base)
    if not (base / "config.json").is_file():
        raise TrainingError(f"{base}: not a Hugging Face model directory (no config.json)")
    config = read_json(base / "config.json", TrainingError)
    check_pickle_policy(base, req.allow_pickle)
    if req.architecture and config.get("model_type") != req.architecture:
        raise TrainingError(
            f"{base}: model_type is {config.get('model_type')!r}, but the config asks for {req.architecture!r}"
        )
    tokenizer = AutoTokenizer.from_pretrained(base)
    if not tokenizer.chat_template:
        raise TrainingError(f"{base}: the tokenizer has no chat template; SFT/DPO need one to format turns")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    rows, data_stats = _load_rows(req)
    lengths = token_lengths(tokenizer, rows, req.objective)
    over, dropped = count_over_length(lengths, req.max_length)
    data_stats.update(truncated_sequences=over, dropped_prompt_too_long=dropped)
    if over:
        log.warning(
            "%d of %d examples exceed max_length=%d tokens and will be truncated; %d of them have no room "
            "left for the answer and are dropped",
            over,
            len(rows),
            req.max_length,
            dropped,
        )
    if dropped == len(rows):
        raise TrainingError(
            f"{req.data}: every prompt is at least max_length={req.max_length} tokens long; raise training.max_length"
        )

    device = resolve_device(req.device)
    on_cuda = device.type == "cuda"
    state = _process_state(req, on_cuda)
    model_dtype = (
        resolve_dtype(req.model_dtype, "training.model_dtype")
        if req.model_dtype != "auto"
        else (torch.bfloat16 if on_cuda else torch.float32)
    )
    save_dtype = resolve_dtype(req.save_dtype, "training.save_dtype") if req.save_dtype != "auto" else model_dtype
    recorder = ManifestRecorder({"base": base, "data": Path(req.data)})
    fingerprint = req.fingerprint()  # hashes the base and the data: once per run
    with state.main_process_first():  # rank 0 readies the work directory; then the rest read it
        work = _work_dir(req, fingerprint) if state.is_main_process else _work_path(req)
        resume = _last_checkpoint(work)
    if resume and state.is_main_process:
        log.info("resuming from %s", resume)

    torch.manual_seed(req.seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=model_dtype)
    peft_config = None
    if req.adapter == "lora":
        peft_config = LoraConfig(
            r=req.lora_r,
            lora_alpha=req.lora_alpha,
            lora_dropout=req.lora_dropout,
            target_modules=req.lora_targets,
            task_type="CAUSAL_LM",
        )
    own = dict(  # set by TrainRequest's options: a trainer arg may not say them again
        output_dir=str(work),
        max_steps=req.steps,
        learning_rate=req.learning_rate,
        weight_decay=req.weight_decay,
        per_device_train_batch_size=req.batch_size,
        gradient_accumulation_steps=req.grad_accum,
        lr_scheduler_type=req.scheduler,
        warmup_steps=int(req.warmup) if req.warmup >= 1 else req.warmup,
        save_steps=req.save_steps,
        seed=req.seed,
        data_seed=req.seed,
        use_cpu=not on_cuda,
        bf16=on_cuda and model_dtype == torch.bfloat16,
        disable_tqdm=not req.progress,
        max_length=req.max_length,
    )
    clash = sorted(set(req.extra) & set(own))
    if clash:
        raise ConfigError(f"training.extra: {', '.join(clash)} are set by their own options, not as trainer args")
    defaults = dict(
        logging_steps=1,
        save_total_limit=2,
        report_to=[],
        dataloader_num_workers=0,
        save_only_model=False,
        remove_unused_columns=True,
    )
    common = {**defaults, **req.extra, **own}
    dataset = build_dataset(rows, req.objective)
    trainer: Any
    if req.objective == "sft":
        from trl import SFTConfig, SFTTrainer

        trainer = SFTTrainer(
            model=model,
            args=SFTConfig(**common, completion_only_loss=True),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    else:
        from trl import DPOConfig, DPOTrainer

        trainer = DPOTrainer(
            model=model,
            args=DPOConfig(**common, beta=req.beta),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=peft_config,
            callbacks=callbacks,
        )
    sharding_asked = sorted(k for k in ("fsdp", "deepspeed") if req.extra.get(k))
    if sharding_asked and not (trainer.is_fsdp_enabled or trainer.is_deepspeed_enabled):
        log.warning(
            "training.extra.%s: accelerate shards only across GPUs; this %s run is plain data-parallel",
            sharding_asked[0],
            device.type,
        )
    if not req.progress:
        from transformers.trainer_callback import PrinterCallback

        trainer.remove_callback(PrinterCallback)
    with _disk_full_is_an_error(work):
        result = trainer.train(resume_from_checkpoint=resume)
    loss_rows = _loss_table(trainer.state.log_history)
    trained = _gathered_model(trainer, work, req, model_dtype)  # collective under FSDP/ZeRO-3
    if not state.is_main_process:
        return {}

    with (
        _disk_full_is_an_error(Path(req.out)),
        AtomicDirectory(Path(req.out), force=req.force, inputs=[req.base, req.data]) as staging,
    ):
        if req.adapter == "lora":
            trained.save_pretrained(staging / "adapter")
            trained = trained.merge_and_unload()
        trained = trained.to(save_dtype)
        check_finite(
            trained.state_dict().items(),
            f"training {req.out}",
            f"the run diverged: lower --learning-rate (now {req.learning_rate}) or check the data",
        )
        trained.config.dtype = str(save_dtype).removeprefix("torch.")
        trained.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _write_loss_csv(staging / "loss.csv", loss_rows)
        tokens = sum(full[0] for _, full in lengths) / len(lengths)  # prompt + chosen answer
        manifest = recorder.build(
            relative_to=Path(req.out),
            action="train",
            device=str(device),
            objective=req.objective,
            adapter=req.adapter,
            seed=req.seed,
            request={k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(req).items()},
            fingerprint=fingerprint,
            data=data_stats,
            resumed_from=resume,
            model_dtype=str(model_dtype),
            save_dtype=str(save_dtype),
            steps=trainer.state.global_step,
            train_runtime_s=result.metrics.get("train_runtime"),
            processes=state.num_processes,
            sharding="fsdp" if trainer.is_fsdp_enabled else "deepspeed" if trainer.is_deepspeed_enabled else None,
            sequences_per_step=req.batch_size * req.grad_accum * state.num_processes,
            mean_tokens_per_example=round(tokens, 1),
            final_loss=loss_rows[-1]["loss"] if loss_rows else None,
        )
        text = json.dumps(manifest, indent=2, default=str)
        (staging / "resm_manifest.json").write_text(text + "\n")
        (staging / CARD_NAME).write_text(trained_card(json.loads(text), Path(req.out)))  # as written
    shutil.rmtree(work, ignore_errors=True)
    log.info("trained %s/%s for %d steps into %s", req.objective, req.adapter, trainer.state.global_step, req.out)
    return manifest
