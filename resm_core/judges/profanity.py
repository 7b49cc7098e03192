"""Offensive-language probability from alt-profanity-check's sklearn model (TF-IDF + calibrated linear SVM).

The model ships as joblib pickles; they are loaded only when each file's SHA-256 matches its pin, checked
at every load, not only at fetch."""

from __future__ import annotations

import functools

import numpy as np

from resm_core.assets import pickled_path


@functools.lru_cache(maxsize=1)
def _model(root: str | None):
    import joblib

    vectorizer = joblib.load(pickled_path("profanity", "profanity_check/data/vectorizer.joblib", root))
    model = joblib.load(pickled_path("profanity", "profanity_check/data/model.joblib", root))
    return vectorizer, model


def offensive_probability(texts: list[str], root=None) -> np.ndarray:
    if not texts:
        return np.zeros(0)
    vectorizer, model = _model(None if root is None else str(root))
    return model.predict_proba(vectorizer.transform(texts))[:, 1]
