"""What a training run is asked to do: the single declaration of every training option (its flag, its key
in the workflow config's `training` section, its default, help and range; see resm_core.options)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from resm_core.devices import DTYPE_NAMES
from resm_core.errors import ConfigError
from resm_core.options import check, device_option, key_value, option, pickle_option

OBJECTIVES = ("sft", "dpo")
ADAPTERS = ("full", "lora")


def lora_targets(text: str) -> list[str] | str:
    """all-linear, or module names separated by commas (or a JSON list, as the workflow passes them)."""
    if text.startswith("["):
        return list(json.loads(text))
    return text if text == "all-linear" else [t.strip() for t in text.split(",") if t.strip()]


@dataclass
class TrainRequest:
    SECTION: ClassVar[str] = "training"  # where its options sit in a config; errors name it

    base: Path = option(help="base model directory", config=False)
    data: Path = option(help="dataset or mixture directory (train.jsonl, optional val.jsonl)", config=False)
    out: Path = option(help="output directory", config=False)
    objective: str = option("sft", help="training objective", choices=OBJECTIVES)
    adapter: str = option("full", help="full fine-tune or LoRA adapter", choices=ADAPTERS)
    steps: int = option(
        100, help="optimizer steps (workflow: per expert; a mixture of k dims trains k times as many)", minimum=1
    )
    learning_rate: float = option(1e-5, help="peak learning rate", flags=("--lr",), exclusive_minimum=0)
    batch_size: int = option(4, help="sequences per device step", minimum=1)
    grad_accum: int = option(1, help="gradient accumulation steps", minimum=1)
    max_length: int = option(256, help="tokens per sequence; longer ones are truncated and counted", minimum=16)
    seed: int = option(0, help="seed of the model's initialisation, data order and dropout")
    beta: float = option(0.1, help="DPO temperature", exclusive_minimum=0)
    lora_r: int = option(16, help="LoRA rank", minimum=1)
    lora_alpha: int = option(32, help="LoRA alpha (the update is scaled by alpha / r)", minimum=1)
    lora_dropout: float = option(0.0, help="LoRA dropout", minimum=0, maximum=1)
    lora_targets: list[str] | str = option(
        "all-linear", help="all-linear or comma-separated module names", parse=lora_targets
    )
    weight_decay: float = option(0.0, help="AdamW weight decay (transformers skips biases and norms)", minimum=0)
    warmup: float = option(
        0.0, help="learning-rate warmup: a fraction of the steps (< 1) or a step count (>= 1)", minimum=0
    )
    scheduler: str = option("linear", help="transformers learning-rate scheduler type")
    save_steps: int = option(50, help="checkpoint interval (the resume point)", minimum=1)
    max_examples: int | None = option(None, help="train on at most this many rows", minimum=1)
    architecture: str | None = option(
        None, help="refuse a base whose config.model_type differs (e.g. llama)", flags=("--arch",), config=False
    )
    processes: int = option(
        1,
        help="data-parallel processes on this node, one per GPU (gloo on CPU); the global batch is "
        "batch_size x grad_accum x processes. FSDP/ZeRO-3: training.extra",
        minimum=1,
    )
    device: str = device_option()
    allow_pickle: bool = pickle_option()
    model_dtype: str = option(
        "auto", help="weights while training: auto is float32 on CPU, bfloat16 on CUDA", choices=("auto", *DTYPE_NAMES)
    )
    save_dtype: str = option(
        "auto",
        help="weights on disk: auto is the training dtype (float32 keeps small deltas exact)",
        choices=("auto", *DTYPE_NAMES),
    )
    force: bool = option(False, help="replace the output and discard foreign checkpoints", config=False)
    progress: bool = option(True, config=False, cli=False)
    extra: dict = option(
        help="any other transformers TrainingArguments field, repeatable (e.g. gradient_checkpointing=true)",
        flag="--trainer-arg",
        parse=key_value,
        append=True,
        metavar="KEY=VALUE",
        default_factory=dict,
    )

    def validate(self) -> None:
        check(self, self.SECTION)
        if self.warmup >= 1 and self.warmup != int(self.warmup):
            raise ConfigError(f"{self.SECTION}.warmup: a step count must be whole, got {self.warmup!r}")

    def fingerprint(self) -> str:
        """What must match for a work directory to be resumed: the settings (not out, force, progress,
        save_steps, device) and the content of the base and the data, not just their paths."""
        from resm_core.checkpoint.digests import input_files, sha256_file

        keep = {
            k: (str(v) if isinstance(v, Path) else v)
            for k, v in asdict(self).items()
            if k not in ("out", "force", "progress", "save_steps", "device")
        }
        keep["content"] = {
            str(f): sha256_file(f)
            for f in input_files(Path(self.base)) + input_files(Path(self.data))
            if f.suffix in (".safetensors", ".json", ".jsonl", ".jinja")
        }
        return hashlib.sha256(json.dumps(keep, sort_keys=True, default=str).encode()).hexdigest()[:16]
