"""Trade-off fronts: which balances of the dimensions merging reaches, which mixing reaches, and which front is
ahead, with a paired interval.

A family's front is its non-dominated arms (per-dimension scores, higher is better). How far a front reaches
is the hypervolume it dominates above a reference point (the base's scores, or each dimension's minimum over
every arm compared, as the caller states). The difference merge minus mixture gets a paired bootstrap
interval: each draw resamples every benchmark's items once, for every arm of both families (and the base),
recomputes every arm's dimension scores, the reference point and both hypervolumes. A hypervolume counts only
non-dominated points, so each draw chooses its own fronts: which points make the front is inside the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from resm_core.errors import ReportError
from resm_core.report.paired import ALPHA, ArmItems


def non_dominated(points: np.ndarray) -> np.ndarray:
    """Mask of the rows of `points` (arms x dims) no other row dominates (at least as good on every dim and
    better on one). Equal rows do not dominate each other: both stay."""
    points = np.asarray(points, dtype=float)
    keep = np.ones(len(points), dtype=bool)
    for i, p in enumerate(points):
        better_or_equal = np.all(points >= p, axis=1)
        strictly = np.any(points > p, axis=1)
        keep[i] = not np.any(better_or_equal & strictly)
    return keep


def hypervolume(points: np.ndarray, ref: np.ndarray) -> float:
    """The volume of the union of the boxes between `ref` and each point (maximising), exactly, by slicing
    along the last dimension: a point not above `ref` on every dimension adds nothing."""
    points = np.asarray(points, dtype=float)
    ref = np.asarray(ref, dtype=float)
    if points.size == 0:
        return 0.0
    points = points[np.all(points > ref, axis=1)]
    if len(points) == 0:
        return 0.0
    points = points[non_dominated(points)]
    if points.shape[1] == 1:
        return float(points[:, 0].max() - ref[0])
    # slabs between consecutive levels of the last coordinate, from the top down: each slab's cross-section is
    # the (d-1)-volume of the points that reach at least its upper level
    order = np.argsort(-points[:, -1], kind="stable")
    levels = points[order, -1]
    volume = 0.0
    for k in range(len(order)):
        lower = levels[k + 1] if k + 1 < len(order) else ref[-1]
        height = levels[k] - lower
        if height > 0:
            volume += height * hypervolume(points[order[: k + 1], :-1], ref[:-1])
    return float(volume)


@dataclass(frozen=True)
class FrontComparison:
    dims: tuple[str, ...]
    reference: str  # "base" or "minimum"
    ref_point: tuple[float, ...]
    merge_front: tuple[str, ...]  # the arms on each family's front (test items, the point estimate)
    mixture_front: tuple[str, ...]
    merge_hv: float
    mixture_hv: float
    difference: float  # merge minus mixture
    ci_low: float
    ci_high: float
    ci90_low: float
    ci90_high: float
    p_value: float
    n_boot: int
    verdict: str


def _shared(arms: list[ArmItems], dims: list[str]) -> dict[str, tuple[str, list[str]]]:
    """benchmark -> (dim, item ids every arm has), for the benchmarks of `dims` every arm was scored on."""
    out = {}
    first = arms[0]
    for name, (dim, scores) in first.benchmarks.items():
        if dim not in dims or not all(name in a.benchmarks for a in arms):
            continue
        ids = sorted(set(scores).intersection(*(set(a.benchmarks[name][1]) for a in arms[1:])))
        if ids:
            out[name] = (dim, ids)
    missing = [d for d in dims if d not in {dim for dim, _ in out.values()}]
    if missing:
        raise ReportError(f"fronts on {'+'.join(dims)}: no items of {', '.join(missing)} shared by every arm")
    return out


def _dim_scores(means: dict[str, np.ndarray], dim_of: dict[str, str], dims: list[str]) -> np.ndarray:
    """(..., dims): each dim's score, the mean of its benchmarks' means (as the grid reports it)."""
    return np.stack([np.mean([means[b] for b in means if dim_of[b] == d], axis=0) for d in dims], axis=-1)


def compare_fronts(
    merges: list[ArmItems],
    mixtures: list[ArmItems],
    dims: list[str],
    base: ArmItems | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    margin: float = 0.01,
    alpha: float = ALPHA,
) -> FrontComparison:
    """Hypervolume of the merges' front minus the mixtures' front over `dims`, with its paired bootstrap
    interval; the reference point is the base's scores when `base` is given, else each dim's minimum over all
    arms compared (in each draw). Verdict: `merge` or `mixture` where the 95% interval excludes 0 (bootstrap
    p < alpha), `equivalent` where the 90% interval lies inside +-margin, else `inconclusive`."""
    if not merges or not mixtures:
        raise ReportError("fronts: need at least one merge and one mixture")
    everyone = [*merges, *mixtures, *([base] if base is not None else [])]
    shared = _shared(everyone, dims)
    dim_of = {name: dim for name, (dim, _) in shared.items()}
    rng = np.random.default_rng(seed)
    # per benchmark: (arms, items) scores, then (arms, draws) means over the same resampled items for every arm
    point_means, boot_means = {}, {}
    for name, (_, ids) in shared.items():
        matrix = np.array([[arm.benchmarks[name][1][i] for i in ids] for arm in everyone])
        point_means[name] = matrix.mean(axis=1)
        idx = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        boot_means[name] = matrix[:, idx].mean(axis=2)
    point = _dim_scores(point_means, dim_of, dims)  # (arms, dims)
    boot = _dim_scores(boot_means, dim_of, dims)  # (arms, draws, dims)
    n_merge, n_mix = len(merges), len(mixtures)

    def volumes(scores: np.ndarray) -> tuple[float, float, np.ndarray]:
        ref = scores[-1] if base is not None else scores.min(axis=0)
        return (
            hypervolume(scores[:n_merge], ref),
            hypervolume(scores[n_merge : n_merge + n_mix], ref),
            ref,
        )

    merge_hv, mixture_hv, ref = volumes(point)
    draws = np.array([np.subtract(*volumes(boot[:, b, :])[:2]) for b in range(n_boot)])
    diff = merge_hv - mixture_hv
    lo, hi = np.quantile(draws, [alpha / 2, 1 - alpha / 2])
    lo90, hi90 = np.quantile(draws, [alpha, 1 - alpha])
    tol = 1e-12
    p = min(1.0, 2 * (1 + min(int(np.sum(draws <= tol)), int(np.sum(draws >= -tol)))) / (1 + n_boot))
    if p < alpha and lo > 0:
        verdict = "merge"
    elif p < alpha and hi < 0:
        verdict = "mixture"
    elif -margin < lo90 and hi90 < margin:
        verdict = "equivalent"
    else:
        verdict = "inconclusive"
    merge_front = [a.arm for a, keep in zip(merges, non_dominated(point[:n_merge])) if keep]
    mixture_front = [a.arm for a, keep in zip(mixtures, non_dominated(point[n_merge : n_merge + n_mix])) if keep]
    return FrontComparison(
        dims=tuple(dims),
        reference="base" if base is not None else "minimum",
        ref_point=tuple(float(x) for x in ref),
        merge_front=tuple(merge_front),
        mixture_front=tuple(mixture_front),
        merge_hv=float(merge_hv),
        mixture_hv=float(mixture_hv),
        difference=float(diff),
        ci_low=float(lo),
        ci_high=float(hi),
        ci90_low=float(lo90),
        ci90_high=float(hi90),
        p_value=float(p),
        n_boot=n_boot,
        verdict=verdict,
    )
