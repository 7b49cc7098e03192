"""Paired comparisons of two evaluated arms on the items both answered.

Every arm answers the same items, so the comparison resamples items, not arms: one bootstrap draw picks
the same item indices for both arms (independently per benchmark), and the difference is recomputed on
each draw. That removes the between-item variance both arms share, which dominates at small n.

- point: metric(a) - metric(b), the metric being a benchmark mean, a dimension (mean of its
  benchmarks) or balance (harmonic mean of the chosen dimensions);
- interval: percentile of the paired-bootstrap differences;
- p-value: a paired permutation test (each item's two scores swapped between the arms with
  probability 1/2, independently per item), two-sided, add-one;
- training runs (`training.seeds`): an arm trained with several seeds has one score per run per item,
  and its item score is their mean. The bootstrap is then two-level: each draw resamples the runs (the
  same run indices for both arms when they have the same seeds, so a merge and its experts of one seed
  stay together) and then the items, so the interval covers training randomness as well as item
  sampling; the p-value is the bootstrap's (twice the smaller tail mass at 0, add-one), because swapping
  items between arms cannot see the difference between two runs of one recipe;
- mdd_80: the smallest true difference a two-sided test at the family's Holm-adjusted alpha (alpha / m,
  the level the smallest of m p-values must pass) detects with 80% power at this n and this observed
  paired spread, (z_{1 - alpha/2m} + z_0.8) x the bootstrap standard error;
- equivalence (TOST): the 90% paired interval inside +-margin, i.e. both one-sided 5% tests reject a
  difference as large as the margin;
- balance: the harmonic mean of the dimension scores, each normalised by its benchmarks' chance level
  ((score - chance) / (1 - chance), floored at 0): a fixed letter or a fixed Yes/No lean is worth 0, as
  an empty answer is, so dimensions with different chance levels enter it on one scale;
- n_eff (balance rows): Kish's effective number of items, (sum w)^2 / sum w^2, with each item's weight
  its share of the balance's linearisation (the harmonic mean's gradient over its benchmark's items), so
  a balance dominated by a few items says so.

The records are the per-item JSONL lines `resm evaluate` writes; no model runs again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import norm

from resm_core.errors import ReportError
from resm_core.evaluate.scores import harmonic_mean, normalised
from resm_core.jsonfile import read_json

ALPHA = 0.05
POWER = 0.80
MDD_FACTOR = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER))  # 2.80, a family of one
EQUIVALENCE_MARGIN = 0.05  # report.equivalence_margin
MIN_EFFECT = 0.05  # report.min_effect: the gain over the base an arm must show on its own dimension


def mdd_factor(family_size: int, alpha: float = ALPHA) -> float:
    """(z_{1 - alpha/2m} + z_power): the two-sided test the smallest of m Holm-adjusted p-values passes."""
    return float(norm.ppf(1 - alpha / (2 * max(family_size, 1))) + norm.ppf(POWER))


@dataclass(frozen=True)
class ArmItems:
    """One arm's per-item scores on one split: benchmark -> (dim, {item id: score}). An arm with several
    training runs keeps each run's scores (`runs`, benchmark -> {item id: score}, one per seed, items every
    run answered) and its `benchmarks` hold their mean."""

    arm: str
    split: str
    benchmarks: dict[str, tuple[str, dict[str, float]]]
    chance: dict[str, float] = field(default_factory=dict)  # benchmark -> its chance level (0 if unknown)
    runs: tuple[dict[str, dict[str, float]], ...] = ()
    seeds: tuple[int | None, ...] = ()  # each run's seed prefix (None: the plain path)

    @property
    def n_runs(self) -> int:
        return max(len(self.runs), 1)

    def run_scores(self, benchmark: str, ids: list[str]) -> np.ndarray:
        """(runs, items): each run's score on each of `ids`."""
        if not self.runs:
            return np.array([[self.benchmarks[benchmark][1][i] for i in ids]])
        return np.array([[run[benchmark][i] for i in ids] for run in self.runs])


def combine_runs(arm: str, runs: list[ArmItems], seeds: list[int | None]) -> ArmItems:
    """One arm from its training runs: the items every run answered, scored by their mean over runs."""
    if len(runs) == 1:
        return ArmItems(arm, runs[0].split, runs[0].benchmarks, runs[0].chance)
    first = runs[0]
    benchmarks, kept = {}, []
    names = [b for b in first.benchmarks if all(b in r.benchmarks for r in runs)]
    for name in names:
        ids = sorted(set.intersection(*(set(r.benchmarks[name][1]) for r in runs)))
        if ids:
            mean = {i: float(np.mean([r.benchmarks[name][1][i] for r in runs])) for i in ids}
            benchmarks[name] = (first.benchmarks[name][0], mean)
    for r in runs:
        kept.append({name: {i: r.benchmarks[name][1][i] for i in benchmarks[name][1]} for name in benchmarks})
    return ArmItems(arm, first.split, benchmarks, first.chance, tuple(kept), tuple(seeds))


def load_splits(results: Path, arm: str) -> dict[str, ArmItems]:
    """Per-item scores from eval/ARM/*.jsonl, read once, by split; records without a split (older runs)
    count as test. A split with no items is absent. Benchmarks evaluated outside the balance are skipped."""
    folder = Path(results) / "eval" / arm
    if not (folder / "summary.json").is_file():
        raise ReportError(f"{folder}: no summary.json; evaluate arm {arm!r} first")
    benches: dict[str, dict[str, tuple[str, dict[str, float]]]] = {}
    chance: dict[str, float] = {}
    for result in sorted(folder.glob("*.json")):
        if result.name == "summary.json":
            continue
        meta = read_json(result, ReportError)
        if not meta.get("in_balance", True):  # reported beside the balance (grid.csv), not compared in it
            continue
        chance[meta["benchmark"]] = float(meta.get("chance", 0.0))
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
    return {split: ArmItems(arm, split, b, chance) for split, b in benches.items()}


def load_arm(results: Path, arm: str, runs: list[str] | None = None) -> dict[str, ArmItems]:
    """An arm's items by split, from its training runs (run paths under eval/; default: the arm alone)."""
    from resm_core.grid import run_of

    runs = runs or [arm]
    per_run = [load_splits(results, run) for run in runs]
    seeds = [run_of(run)[1] for run in runs]
    splits = [s for s in per_run[0] if all(s in p for p in per_run)]
    return {s: combine_runs(arm, [p[s] for p in per_run], seeds) for s in splits}


def load_items(results: Path, arm: str, split: str = "test", runs: list[str] | None = None) -> ArmItems:
    """One split of `load_arm`; a named error when the arm has no items there."""
    splits = load_arm(results, arm, runs)
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


def _metrics(
    means: dict[str, Any], dim_of: dict[str, str], dims: list[str], chance: dict[str, float] | None = None
) -> dict[str, np.ndarray]:
    """Benchmark means (any shape) -> every benchmark, every dim in `dims` (the mean of its benchmarks), and
    balance over `dims` (the harmonic mean of the chance-normalised dimension scores)."""
    chance = chance or {}
    out = dict(means)
    dim_scores = []
    for dim in dims:
        names = [b for b in means if dim_of[b] == dim]
        out[dim] = np.mean([means[b] for b in names], axis=0)
        dim_scores.append(np.mean([normalised(means[b], chance.get(b, 0.0)) for b in names], axis=0))
    out["balance"] = harmonic_mean(np.stack(dim_scores), axis=0)
    return out


def effective_n(means: dict[str, float], sizes: dict[str, int], dim_of: dict[str, str], dims: list[str], chance):
    """Kish's effective n of balance: item weights from the gradient of balance in each benchmark's mean
    (numerically), spread evenly over that benchmark's items."""
    base = _metrics(means, dim_of, dims, chance)["balance"]
    weights = []
    for b, m in means.items():
        step = 1e-4
        grad = (_metrics({**means, b: m + step}, dim_of, dims, chance)["balance"] - base) / step
        weights += [abs(float(grad)) / sizes[b]] * sizes[b]
    w = np.asarray(weights)
    return float(w.sum() ** 2 / max((w**2).sum(), 1e-300)) if w.sum() > 0 else 0.0


def paired(
    a: ArmItems, b: ArmItems, dims: list[str] | None = None, n_boot: int = 2000, n_perm: int = 2000, seed: int = 0
) -> list[dict]:
    """One row per metric (each shared benchmark of `dims`, each dim, balance): a - b with its paired
    interval, permutation p-value, n and mdd_80."""
    shared, ids_of = {}, {}
    for name, (dim, scores) in a.benchmarks.items():
        if name in b.benchmarks:
            ids = sorted(set(scores) & set(b.benchmarks[name][1]))
            if ids:
                shared[name] = (
                    dim,
                    np.array([scores[i] for i in ids]),
                    np.array([b.benchmarks[name][1][i] for i in ids]),
                )
                ids_of[name] = ids
    have = sorted({d for d, _, _ in shared.values()})
    dims = list(dims) if dims else have
    missing = [d for d in dims if d not in have]
    if missing:
        raise ReportError(f"compare {a.arm} vs {b.arm} ({a.split}): no shared {', '.join(missing)} items")
    shared = {k: v for k, v in shared.items() if v[0] in dims}
    dim_of = {k: v[0] for k, v in shared.items()}
    chance = {k: max(a.chance.get(k, 0.0), b.chance.get(k, 0.0)) for k in shared}
    rng = np.random.default_rng(seed)
    point_a = _metrics({k: v[1].mean() for k, v in shared.items()}, dim_of, dims, chance)
    point_b = _metrics({k: v[2].mean() for k, v in shared.items()}, dim_of, dims, chance)
    two_level = a.n_runs > 1 or b.n_runs > 1
    run_weights = _run_draws(a, b, n_boot, rng) if two_level else None
    boot_a, boot_b, perm_a, perm_b = {}, {}, {}, {}
    for k, (_, xa, xb) in shared.items():
        idx = rng.integers(0, xa.size, size=(n_boot, xa.size))
        if run_weights is None:
            boot_a[k], boot_b[k] = xa[idx].mean(axis=1), xb[idx].mean(axis=1)
        else:  # each run's mean over the drawn items, weighted by how often the draw took that run
            ra, rb = a.run_scores(k, ids_of[k]), b.run_scores(k, ids_of[k])
            boot_a[k] = np.einsum("br,rb->b", run_weights[0], ra[:, idx].mean(axis=2))
            boot_b[k] = np.einsum("br,rb->b", run_weights[1], rb[:, idx].mean(axis=2))
        swap = rng.random((n_perm, xa.size)) < 0.5
        perm_a[k] = np.where(swap, xb, xa).mean(axis=1)
        perm_b[k] = np.where(swap, xa, xb).mean(axis=1)
    mb, mp = _metrics(boot_b, dim_of, dims, chance), _metrics(perm_b, dim_of, dims, chance)
    boot = {m: v - mb[m] for m, v in _metrics(boot_a, dim_of, dims, chance).items()}
    perm = {m: v - mp[m] for m, v in _metrics(perm_a, dim_of, dims, chance).items()}
    sizes = {k: len(v[1]) for k, v in shared.items()}
    pooled = {k: (v[1].mean() + v[2].mean()) / 2 for k, v in shared.items()}
    rows = []
    for metric in [*shared, *dims, "balance"]:
        diff = float(point_a[metric] - point_b[metric])
        lo, hi = np.quantile(boot[metric], [ALPHA / 2, 1 - ALPHA / 2])
        lo90, hi90 = np.quantile(boot[metric], [ALPHA, 1 - ALPHA])
        tol = 1e-12
        if two_level:  # the bootstrap's own test: twice the smaller tail at 0
            tail = min(int(np.sum(boot[metric] <= tol)), int(np.sum(boot[metric] >= -tol)))
            p = 2 * (1 + tail) / (1 + n_boot)
        else:
            p = (1 + int(np.sum(np.abs(perm[metric]) >= abs(diff) - tol))) / (1 + n_perm)
        n_items = (
            len(shared[metric][1])
            if metric in shared
            else sum(len(v[1]) for k, v in shared.items() if metric == "balance" or dim_of[k] == metric)
        )
        se = float(np.std(boot[metric], ddof=1))
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
                "n_eff": effective_n(pooled, sizes, dim_of, dims, chance) if metric == "balance" else float(n_items),
                "ci90_low": float(lo90),
                "ci90_high": float(hi90),
                "se": se,
                "mdd_80": MDD_FACTOR * se,
                "a_runs": a.n_runs,
                "b_runs": b.n_runs,
            }
        )
    return rows


def _run_draws(a: ArmItems, b: ArmItems, n_boot: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per bootstrap draw, the weight of each run of each arm (how often it was drawn / runs): the same run
    indices for both arms when they share their seeds, else drawn apart; an arm of one run weighs it 1."""

    def weights(draws: np.ndarray, runs: int) -> np.ndarray:
        out = np.zeros((n_boot, runs))
        np.add.at(out, (np.repeat(np.arange(n_boot), draws.shape[1]), draws.ravel()), 1.0)
        return out / draws.shape[1]

    draw_a = rng.integers(0, a.n_runs, size=(n_boot, a.n_runs))
    if a.seeds and a.seeds == b.seeds:
        return weights(draw_a, a.n_runs), weights(draw_a, b.n_runs)
    return weights(draw_a, a.n_runs), weights(rng.integers(0, b.n_runs, size=(n_boot, b.n_runs)), b.n_runs)


def verdict(row: dict, arm_a: str, arm_b: str, alpha: float = ALPHA, margin: float = EQUIVALENCE_MARGIN) -> str:
    """The winner's name where the adjusted p-value is below alpha and the 95% interval excludes 0;
    `equivalent` where the 90% interval lies inside +-margin (TOST); else `inconclusive` (the run could
    not tell)."""
    p = row.get("p_adjusted", row["p_value"])
    if p < alpha and row["ci_low"] > 0:
        return arm_a
    if p < alpha and row["ci_high"] < 0:
        return arm_b
    if -margin < row.get("ci90_low", row["ci_low"]) and row.get("ci90_high", row["ci_high"]) < margin:
        return "equivalent"
    return "inconclusive"


def normalised_dims(items: ArmItems, dims: list[str]) -> dict[str, float]:
    """Each dim's chance-normalised score, the quantity balance takes its harmonic mean of."""
    out = {}
    for dim in dims:
        names = [b for b, (d, _) in items.benchmarks.items() if d == dim]
        out[dim] = float(
            np.mean(
                [normalised(np.mean(list(items.benchmarks[b][1].values())), items.chance.get(b, 0.0)) for b in names]
            )
        )
    return out


def point_scores(items: ArmItems, dims: list[str]) -> dict[str, float]:
    """Each benchmark, each dim of `dims` and balance over them: point estimates of one arm."""
    have = {dim for dim, _ in items.benchmarks.values()}
    if set(dims) - have:
        raise ReportError(f"{items.arm} ({items.split}): no {', '.join(sorted(set(dims) - have))} items")
    means = {k: np.mean(list(v[1].values())) for k, v in items.benchmarks.items() if v[0] in dims}
    dim_of = {k: items.benchmarks[k][0] for k in means}
    return {k: float(v) for k, v in _metrics(means, dim_of, dims, items.chance).items()}
