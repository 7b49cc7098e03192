"""What a tensor is, from its name, shape and the model config: layer index, vocabulary-sized."""

from __future__ import annotations

import re

_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks|block|layer)\.(\d+)\.")
_VOCAB_NAME_RE = re.compile(r"(embed_tokens|lm_head|wte|embed_in|embed_out|word_embeddings|output)\.weight$")


def layer_index(name: str) -> int | None:
    """Transformer block index parsed from a tensor name, None for embeddings, final norm, head."""
    m = _LAYER_RE.search(name)
    return int(m.group(1)) if m else None


def layer_group(name: str) -> str:
    """Group label for per-layer tables: 'layer.07', or the tensor's own role outside the blocks."""
    idx = layer_index(name)
    if idx is not None:
        return f"layer.{idx:03d}"
    return "embed" if "embed" in name or "wte" in name else ("head" if "head" in name else "other")


def is_vocab_tensor(name: str, shape: tuple[int, ...], vocab_size: int | None) -> bool:
    """Embedding and LM-head matrices: one dimension equals the vocabulary size."""
    if len(shape) != 2:
        return False
    if vocab_size:
        return vocab_size in shape
    return bool(_VOCAB_NAME_RE.search(name))
