"""Checks that base and experts can be merged, run before any tensor arithmetic.

A merge of mismatched checkpoints often *succeeds* numerically and yields a silently broken model,
so every mismatch is an error that names the file and the key.
"""

from __future__ import annotations

import hashlib
import json
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

NAMING_KEYS = ("model_type", "architectures")
SIZE_KEYS = ("hidden_size", "num_hidden_layers", "vocab_size", "intermediate_size", "num_attention_heads")

VOCABULARY_HINT = (
    "an expert with added tokens can be merged with --base-vocabulary (config `base_vocabulary: true`): "
    "the base's tokenizer and vocabulary are kept and the expert's extra embedding rows dropped"
)


def check_config(
    base_dir: Path,
    base_cfg: dict[str, Any] | None,
    other_dir: Path,
    other_cfg: dict[str, Any] | None,
    base_vocabulary: bool = False,
) -> None:
    if base_cfg is None or other_cfg is None:
        return
    for cfg, where in ((base_cfg, base_dir), (other_cfg, other_dir)):
        named = {key: cfg.get(key) for key in NAMING_KEYS}
        if not all(named.values()):
            raise CompatibilityError(
                f"{where / 'config.json'}: must name its architecture ({', '.join(NAMING_KEYS)}), has {named}; "
                f"without them the architecture check compares nothing"
            )
        for key in SIZE_KEYS:
            if key in cfg and (isinstance(cfg[key], bool) or not isinstance(cfg[key], int)):
                raise CompatibilityError(f"{where / 'config.json'}: {key} = {cfg[key]!r} is not a whole number")
    for key in ARCH_KEYS:
        if key in base_cfg and key in other_cfg and base_cfg[key] != other_cfg[key]:
            if key == "vocab_size" and base_vocabulary and other_cfg[key] > base_cfg[key]:
                continue
            hint = f"; {VOCABULARY_HINT}" if key == "vocab_size" and other_cfg[key] > base_cfg[key] else ""
            raise CompatibilityError(
                f"{other_dir / 'config.json'}: {key} = {other_cfg[key]!r} but the base "
                f"{base_dir / 'config.json'} has {base_cfg[key]!r}{hint}"
            )


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_tokenizer(base_dir: Path, other_dir: Path, base_vocabulary: bool = False) -> None:
    """Same token <-> id files; with `base_vocabulary`, the base's vocabulary must be the start of the
    expert's (added tokens come after it), so the base's rows mean the same tokens in both."""
    for name in TOKENIZER_FILES:
        a, b = base_dir / name, other_dir / name
        if not (a.is_file() and b.is_file()) or _digest(a) == _digest(b):
            continue
        if base_vocabulary and name == "tokenizer.json" and _extends(a, b):
            continue
        if not base_vocabulary:
            raise CompatibilityError(
                f"{b}: differs from the base's {a}; experts must share the base tokenizer ({VOCABULARY_HINT})"
            )
        if name == "tokenizer.json":
            raise CompatibilityError(f"{b}: its tokens do not extend the base's {a} (ids of base tokens differ)")


def _vocabulary(path: Path) -> dict[str, int]:
    data = json.loads(path.read_text())
    vocab = dict((data.get("model") or {}).get("vocab") or {})
    vocab.update({t["content"]: t["id"] for t in data.get("added_tokens") or []})
    return vocab


def _extends(base_file: Path, other_file: Path) -> bool:
    base, other = _vocabulary(base_file), _vocabulary(other_file)
    return all(other.get(token) == i for token, i in base.items())


def check_tensors(
    base_shapes: dict[str, tuple[int, ...]],
    other_shapes: dict[str, tuple[int, ...]],
    other_path: Path,
    require_all: bool = True,
    required: set[str] | None = None,
    extra_rows_of: set[str] | None = None,
) -> dict[str, int]:
    """No keys the base lacks, every `required` base key present (all of them by default, none
    when not `require_all`), and the same shape for every shared key. For the tensors of `extra_rows_of`
    (vocabulary matrices, with --base-vocabulary) more rows than the base's are allowed: the count per tensor
    is returned, and those rows are dropped."""
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
    dropped: dict[str, int] = {}
    for name, shape in other_shapes.items():
        want = tuple(base_shapes[name])
        if tuple(shape) == want:
            continue
        more_rows = len(shape) == len(want) and shape[0] > want[0] and tuple(shape[1:]) == want[1:]
        if more_rows and name in (extra_rows_of or set()):
            dropped[name] = shape[0] - want[0]
            continue
        hint = f"; {VOCABULARY_HINT}" if more_rows else ""
        raise CompatibilityError(f"{other_path}: tensor {name} has shape {tuple(shape)}, the base has {want}{hint}")
    return dropped
