"""Paired comparisons of two evaluated arms on the items both answered.

Every arm answers the same items, so the comparison resamples items, not arms: one bootstrap draw picks
the same item indices for both arms (independently per benchmark), and the difference is recomputed on
each draw. That removes the between-item variance both arms share, which dominates at small n.

- point: metric(a) - metric(b), the metric being a benchmark mean, a dimension (mean of its
  benchmarks) or balance (harmonic mean of the chosen dimensions);
- interval: percentile of the paired-bootstrap differences;
- p-value: a paired permutation test (each item's two scores swapped between the arms with
  probability 1/2, independently per item), two-sided, add-one;
- mdd_80: the smallest true difference a two-sided 5% test detects with 80% power at this n and this
  observed paired spread, (z_0.975 + z_0.8) x the bootstrap standard error.

The records are the per-item JSONL lines `resm evaluate` writes; no model runs again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from resm_core.errors import ReportError
from resm_core.evaluate.scores import harmonic_mean
from resm_core.jsonfile import read_json

ALPHA = 0.05
POWER = 0.80
MDD_FACTOR = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER))  # 2.80


@dataclass(frozen=True)
class ArmItems:
    """One arm's per-item scores on one split: benchmark -> (dim, {item id: score})."""

    arm: str
    split: str
    benchmarks: dict[str, tuple[str, dict[str, float]]]


def load_splits(results: Path, arm: str) -> dict[str, ArmItems]:
    """Per-item scores from eval/ARM/*.jsonl, read once, by split; records without a split (older runs)
    count as test. A split with no items is absent."""
    folder = Path(results) / "eval" / arm
    if not (folder / "summary.json").is_file():
        raise ReportError(f"{folder}: no summary.json; evaluate arm {arm!r} first")
    benches: dict[str, dict[str, tuple[str, dict[str, float]]]] = {}
    for result in sorted(folder.glob("*.json")):
        if result.name == "summary.json":
            continue
        meta = read_json(result, ReportError)
        records = folder / f"{meta['benchmark']}.jsonl"
        if not records.is_file():
            raise ReportError(f"{records}: missing; the per-item answers are the input of a paired comparison")
        with open(records, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ReportError(f"{records}:{n}: not valid JSON ({exc.msg}); was it cut short?") from None
                split = benches.setdefault(rec.get("split", "test"), {})
                split.setdefault(meta["benchmark"], (meta["dim"], {}))[1][str(rec["id"])] = float(rec["score"])
    return {split: ArmItems(arm, split, b) for split, b in benches.items()}


def load_items(results: Path, arm: str, split: str = "test") -> ArmItems:
    """One split of `load_splits`; a named error when the arm has no items there."""
    splits = load_splits(results, arm)
    if split not in splits:
        raise ReportError(f"{Path(results) / 'eval' / arm}: no {split} items in any benchmark")
    return splits[split]


def holm(p_values: list[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate, no independence assumed)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def _metrics(means: dict[str, Any], dim_of: dict[str, str], dims: list[str]) -> dict[str, np.ndarray]:
    """Benchmark means (any shape) -> every benchmark, every dim in `dims`, and balance over `dims`."""
    out = dict(means)
    dim_scores = []
    for dim in dims:
        names = [b for b in means if dim_of[b] == dim]
        out[dim] = np.mean([means[b] for b in names], axis=0)
        dim_scores.append(out[dim])
    out["balance"] = harmonic_mean(np.stack(dim_scores), axis=0)
    return out


def paired(
    a: ArmItems, b: ArmItems, dims: list[str] | None = None, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0
) -> list[dict]:
    """One row per metric (each shared benchmark of `dims`, each dim, balance): a - b with its paired
    interval, permutation p-value, n and mdd_80."""
    shared = {}
    for name, (dim, scores) in a.benchmarks.items():
        if name in b.benchmarks:
            ids = sorted(set(scores) & set(b.benchmarks[name][1]))
            if ids:
                shared[name] = (
                    dim,
                    np.array([scores[i] for i in ids]),
                    np.array([b.benchmarks[name][1][i] for i in ids]),
                )
    have = sorted({d for d, _, _ in shared.values()})
    dims = list(dims) if dims else have
    missing = [d for d in dims if d not in have]
    if missing:
        raise ReportError(f"compare {a.arm} vs {b.arm} ({a.split}): no shared {', '.join(missing)} items")
    shared = {k: v for k, v in shared.items() if v[0] in dims}
    dim_of = {k: v[0] for k, v in shared.items()}
    rng = np.random.default_rng(seed)
    point_a = _metrics({k: v[1].mean() for k, v in shared.items()}, dim_of, dims)
    point_b = _metrics({k: v[2].mean() for k, v in shared.items()}, dim_of, dims)
    boot_a, boot_b, perm_a, perm_b = {}, {}, {}, {}
    for k, (_, xa, xb) in shared.items():
        idx = rng.integers(0, xa.size, size=(n_boot, xa.size))
        boot_a[k], boot_b[k] = xa[idx].mean(axis=1), xb[idx].mean(axis=1)
        swap = rng.random((n_perm, xa.size)) < 0.5
        perm_a[k] = np.where(swap, xb, xa).mean(axis=1)
        perm_b[k] = np.where(swap, xa, xb).mean(axis=1)
    mb, mp = _metrics(boot_b, dim_of, dims), _metrics(perm_b, dim_of, dims)
    boot = {m: v - mb[m] for m, v in _metrics(boot_a, dim_of, dims).items()}
    perm = {m: v - mp[m] for m, v in _metrics(perm_a, dim_of, dims).items()}
    rows = []
    for metric in [*shared, *dims, "balance"]:
        diff = float(point_a[metric] - point_b[metric])
        lo, hi = np.quantile(boot[metric], [ALPHA / 2, 1 - ALPHA / 2])
        tol = 1e-12
        p = (1 + int(np.sum(np.abs(perm[metric]) >= abs(diff) - tol))) / (1 + n_perm)
        n_items = (
            len(shared[metric][1])
            if metric in shared
            else sum(len(v[1]) for k, v in shared.items() if metric == "balance" or dim_of[k] == metric)
        )
        rows.append(
            {
                "metric": metric,
                "a_score": float(point_a[metric]),
                "b_score": float(point_b[metric]),
                "difference": diff,
                "ci_low": float(lo),
                "ci_high": float(hi),
                "p_value": float(min(p, 1.0)),
                "n_items": int(n_items),
                "mdd_80": MDD_FACTOR * float(np.std(boot[metric], ddof=1)),
            }
        )
    return rows


def verdict(row: dict, arm_a: str, arm_b: str, alpha: float = ALPHA) -> str:
    """The winner's name only where the adjusted p-value is below alpha and the interval excludes 0."""
    p = row.get("p_adjusted", row["p_value"])
    if p < alpha and row["ci_low"] > 0:
        return arm_a
    if p < alpha and row["ci_high"] < 0:
        return arm_b
    return "inconclusive"


def point_scores(items: ArmItems, dims: list[str]) -> dict[str, float]:
    """Each benchmark, each dim of `dims` and balance over them: point estimates of one arm."""
    have = {dim for dim, _ in items.benchmarks.values()}
    if set(dims) - have:
        raise ReportError(f"{items.arm} ({items.split}): no {', '.join(sorted(set(dims) - have))} items")
    means = {k: np.mean(list(v[1].values())) for k, v in items.benchmarks.items() if v[0] in dims}
    return {k: float(v) for k, v in _metrics(means, {k: items.benchmarks[k][0] for k in means}, dims).items()}
