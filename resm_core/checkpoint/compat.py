"""Checks that base and experts can be merged, run before any tensor arithmetic.

A merge of mismatched checkpoints often *succeeds* numerically and yields a silently broken model,
so every mismatch is an error that names the file and the key.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from resm_core.errors import CompatibilityError

# Files whose content defines the token <-> id mapping; tokenizer_config.json is left out because
# fine-tuning scripts routinely rewrite it (chat template, padding side) without changing ids.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt")
ARCH_KEYS = (
    "model_type",
    "architectures",
    "hidden_size",
    "num_hidden_layers",
    "vocab_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "tie_word_embeddings",
)


def check_config(
    base_dir: Path, base_cfg: dict[str, Any] | None, other_dir: Path, other_cfg: dict[str, Any] | None
) -> None:
    if base_cfg is None or other_cfg is None:
        return
    for key in ARCH_KEYS:
        if key in base_cfg and key in other_cfg and base_cfg[key] != other_cfg[key]:
            raise CompatibilityError(
                f"{other_dir / 'config.json'}: {key} = {other_cfg[key]!r} but the base "
                f"{base_dir / 'config.json'} has {base_cfg[key]!r}"
            )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_tokenizer(base_dir: Path, other_dir: Path) -> None:
    for name in TOKENIZER_FILES:
        a, b = base_dir / name, other_dir / name
        if a.is_file() and b.is_file() and _digest(a) != _digest(b):
            raise CompatibilityError(f"{b}: differs from the base's {a}; experts must share the base tokenizer")


def check_tensors(
    base_shapes: dict[str, tuple[int, ...]],
    other_shapes: dict[str, tuple[int, ...]],
    other_path: Path,
    require_all: bool = True,
    required: set[str] | None = None,
) -> None:
    """No keys the base lacks, every `required` base key present (all of them by default, none
    when not `require_all`), and the same shape for every shared key."""
    extra = sorted(set(other_shapes) - set(base_shapes))
    if extra:
        raise CompatibilityError(
            f"{other_path}: tensor {extra[0]} is not in the base"
            + (f" (and {len(extra) - 1} more)" if len(extra) > 1 else "")
        )
    if require_all:
        missing = sorted((set(base_shapes) if required is None else required) - set(other_shapes))
        if missing:
            raise CompatibilityError(
                f"{other_path}: tensor {missing[0]} of the base is missing"
                + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
            )
    for name, shape in other_shapes.items():
        if tuple(base_shapes[name]) != tuple(shape):
            raise CompatibilityError(
                f"{other_path}: tensor {name} has shape {tuple(shape)}, the base has {tuple(base_shapes[name])}"
            )
