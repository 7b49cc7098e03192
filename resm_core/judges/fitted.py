"""Fitted judges are JSON files (coefficients, thresholds and their held-out figures), never pickles:
written atomically by `resm judge fit`, read back with an error that says how to make them."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from resm_core.errors import JudgeError
from resm_core.jsonfile import read_json


def write_report(out_dir: str | Path, name: str, report: dict) -> None:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".{name}.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    tmp.rename(out_dir / name)


def read_report(judge_dir: str | Path, name: str, what: str) -> dict:
    path = Path(judge_dir) / name
    if not path.is_file():
        raise JudgeError(f"{path}: the {what} is not fitted; run `resm judge fit --out {judge_dir}`")
    report: dict = read_json(path, JudgeError)
    return report


def fit_logistic_cv(X: Any, y: Any, cs: Sequence[float], folds: list, **options: Any) -> Any:
    """scikit-learn's LogisticRegressionCV with today's behaviour written out (accuracy picks C), fitted without
    the FutureWarnings about defaults that change in scikit-learn 1.10 and 1.11: each judge fit printed three."""
    from sklearn.linear_model import LogisticRegressionCV

    model = LogisticRegressionCV(Cs=list(cs), cv=folds, max_iter=5000, scoring="accuracy", **options)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=".*(l1_ratios|use_legacy_attributes).*")
        return model.fit(X, y)


def chosen_c(model: Any) -> float:
    """The C cross-validation chose (an array of one before scikit-learn 1.10, a number after)."""
    import numpy as np

    return float(np.ravel(model.C_)[0])
