"""Scores with uncertainty: a percentile bootstrap per benchmark, and per dimension, 3H mean and balance
computed replicate by replicate, so their intervals carry every benchmark's sampling noise.

Balance is the harmonic mean of the three dimension scores, each first normalised by its benchmarks'
chance level ((score - chance) / (1 - chance), floored at 0), so a fixed letter or a fixed Yes/No lean
counts as nothing, as an empty answer does. Unlike the arithmetic mean it cannot be
kept up by trading one dimension for another (0.9/0.9/0.1 has mean 0.63 but balance 0.25), and unlike
the minimum it uses all three scores, so it is less noisy on small benchmarks. The minimum is reported too.
"""

from __future__ import annotations

import numpy as np

from resm_core.errors import EvaluationError

CI_LEVEL = 0.95


def bootstrap(values, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """Replicates of the mean of `values` (resampled with replacement)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise EvaluationError("bootstrap: no values (an empty benchmark)")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, values.size, size=(n_boot, values.size))
    return values[idx].mean(axis=1)


def interval(replicates: np.ndarray, level: float = CI_LEVEL) -> tuple[float, float]:
    lo, hi = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def harmonic_mean(scores: np.ndarray, axis: int = 0) -> np.ndarray:
    scores = np.clip(np.asarray(scores, dtype=float), 0.0, None)
    with np.errstate(divide="ignore"):
        inv = np.where(scores > 0, 1.0 / np.where(scores > 0, scores, 1.0), np.inf)
    return scores.shape[axis] / inv.sum(axis=axis)


def normalised(score, chance: float):
    """(score - chance) / (1 - chance), floored at 0: chance-level behaviour is worth nothing in balance."""
    return np.clip((np.asarray(score, dtype=float) - chance) / (1.0 - chance), 0.0, None)


def summarise(
    point: dict[str, dict[str, float]],
    replicates: dict[str, dict[str, np.ndarray]],
    chance: dict[str, float] | None = None,
) -> dict:
    """point[dim][benchmark] = benchmark score; replicates likewise; chance[benchmark] its chance level.
    -> dims (raw), mean_3h and min_dim (raw), balance (of the chance-normalised dims), with intervals."""
    chance = chance or {}
    dims = {}
    dim_reps = {}
    norm_point, norm_reps = {}, {}
    for dim, benches in point.items():
        reps = np.mean([replicates[dim][b] for b in benches], axis=0)
        dim_reps[dim] = reps
        norm_point[dim] = float(np.mean([normalised(v, chance.get(b, 0.0)) for b, v in benches.items()]))
        norm_reps[dim] = np.mean([normalised(replicates[dim][b], chance.get(b, 0.0)) for b in benches], axis=0)
        lo, hi = interval(reps)
        dims[dim] = {
            "score": float(np.mean(list(benches.values()))),
            "ci_low": lo,
            "ci_high": hi,
            "benchmarks": sorted(benches),
        }
    out: dict = {"dims": dims}
    if dims:
        scores = np.array([d["score"] for d in dims.values()])
        reps = np.stack(list(dim_reps.values()))
        norm_scores, norm_stack = np.array(list(norm_point.values())), np.stack(list(norm_reps.values()))
        for key, value, rep in (
            ("mean_3h", scores.mean(), reps.mean(axis=0)),
            ("balance", harmonic_mean(norm_scores), harmonic_mean(norm_stack)),
            ("min_dim", scores.min(), reps.min(axis=0)),
        ):
            lo, hi = interval(rep)
            out[key] = {"score": float(value), "ci_low": lo, "ci_high": hi}
        out["balance"]["aggregate"] = "harmonic mean of the dimension scores, each normalised by its chance level"
        out["complete"] = len(dims) == 3
    return out
