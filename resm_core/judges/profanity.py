"""Offensive-language probability from alt-profanity-check's sklearn model (TF-IDF + calibrated linear SVM).

The model ships as joblib pickles; they are loaded only from the pinned, SHA-256-verified wheel."""

from __future__ import annotations

import functools

import numpy as np

from resm_core.assets import asset_path


@functools.lru_cache(maxsize=1)
def _model(root: str | None):
    import joblib

    vectorizer = joblib.load(asset_path("profanity", "profanity_check/data/vectorizer.joblib", root))
    model = joblib.load(asset_path("profanity", "profanity_check/data/model.joblib", root))
    return vectorizer, model


def offensive_probability(texts: list[str], root=None) -> np.ndarray:
    if not texts:
        return np.zeros(0)
    vectorizer, model = _model(None if root is None else str(root))
    return model.predict_proba(vectorizer.transform(texts))[:, 1]
