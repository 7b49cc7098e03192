"""What `resm merge` is asked to do: the single declaration of each merge option (its flag, its key in a
merge recipe, default, help and range). A recipe file and the flags both become one MergeRequest."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from resm_core.devices import DTYPE_CHOICES
from resm_core.options import base_vocabulary_option, device_option, key_value, option, pickle_option

VOCAB_RULES = ("method", "task_arithmetic", "mean", "base")


def weights(text: str) -> list[float]:
    """Comma-separated numbers, or a JSON list (as the workflow passes them)."""
    try:
        return [float(w) for w in text.strip().strip("[]").split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights expects comma-separated numbers, got {text!r}") from None


@dataclass
class MergeRequest:
    """Everything a merge needs."""

    SECTION: ClassVar[str] = "merge"  # where its options sit in a config; errors name it

    base: Path = option(help="base model directory (Hugging Face layout)", config=False)
    experts: list[Path] = option(
        help="expert model, task-vector (resm extract) or PEFT LoRA adapter directories",
        nargs="+",
        parse=Path,
        config=False,
    )
    method: str = option(help="merge method (see `resm methods`)", config=False)
    out: Path = option(help="output directory (must not exist unless --force)", config=False)
    params: dict[str, Any] = option(
        help="method hyperparameter, repeatable (e.g. --param density=0.2)",
        flag="--param",
        parse=key_value,
        append=True,
        metavar="KEY=VALUE",
        config=False,
        default_factory=dict,
    )
    weights: list[float] | None = option(None, help="per-expert weights, comma-separated", parse=weights, config=False)
    device: str = device_option(config=True)
    out_dtype: str | None = option(
        None, help="output dtype (default: the base's, or the experts' when wider)", choices=DTYPE_CHOICES
    )
    seed: int = option(0, help="seed of random methods (DARE, DELLA)", minimum=0)
    shard_size: str = option("2GB", help="maximum output shard size")
    block_mb: float = option(
        64,
        help="working memory of a tensor merged in row blocks (elementwise methods, and the vocabulary rules "
        "of every method): larger tensors are read, merged and written a block of rows at a time",
        exclusive_minimum=0,
    )
    vocab_rule: str | None = option(
        None,
        help="how embedding and LM-head matrices are merged (default: "
        "task_arithmetic for the SVD family, the method itself otherwise)",
        choices=VOCAB_RULES,
    )
    allow_pickle: bool = pickle_option(config=True)
    base_vocabulary: bool = base_vocabulary_option(config=True)
    allow_other_base: bool = option(
        False,
        help="merge task vectors or LoRA adapters onto a base other than the one they were made on",
        config=False,
    )
    force: bool = option(False, help="replace the output if it exists")
    records: Path | None = option(
        None,
        help="also put the card, recipe, manifest and diagnostics here: they outlive a merged model that is "
        "deleted after its evaluation (the recipe rebuilds it)",
        config=False,
    )
    progress: bool = option(True, config=False, cli=False)
