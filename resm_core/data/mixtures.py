"""Data mixtures: the data-level answer to "mix or merge?" for a combo of 2 or 3 dimensions.

- `uniform`: an equal share of the budget per dimension;
- `ratio`: shares in given proportions (a zero share leaves its dimension out: a frontier's vertex);
- `reward_weighted` (ArmoRM-style): every pair gets the combo's aggregate reward margin
  sum_d w_d [J_d(chosen) - J_d(rejected)] from a judge (w: the ratios, equal by default); each
  dimension's share is then sampled without replacement with probability proportional to
  exp(margin / temperature), so the mixture differs from `uniform` in which pairs, not how many;
- `conflict_filtered` (Hummer-style): a pair of dimension d is dropped when the judge of another combo
  dimension prefers its rejected answer by more than `margin` (e.g. a helpfulness pair whose rejected
  answer is a refusal, which harmlessness prefers); shares as in `uniform`/`ratio` over what is left.

The budget defaults to the experts' combined training examples, so a mixture sees as many examples as
its experts did together. Shares are exact (largest remainder); a share larger than its pool cycles
through the pool in a seeded order, and the composition file says how many rows repeat.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.checkpoint.manifest import ManifestRecorder
from resm_core.data.request import STRATEGIES, MixRequest
from resm_core.data.schema import DIMS, read_rows, write_jsonl
from resm_core.errors import DataError
from resm_core.options import build as build_request

log = logging.getLogger(__name__)

NEUTRAL = 0.5  # the reference score when a pair has no rejected answer


def combo_name(dims: list[str]) -> str:
    return "+".join(sorted(dims))


def allocate(budget: int, weights: list[float]) -> list[int]:
    """Integer shares summing exactly to `budget`, proportional to `weights` (largest remainder)."""
    w = np.asarray(weights, dtype=float)
    if budget < 0 or len(w) == 0 or (w < 0).any() or w.sum() <= 0:
        raise DataError(f"mixture: cannot split a budget of {budget} by weights {list(weights)}")
    exact = budget * w / w.sum()
    shares = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - shares), kind="stable")[: budget - shares.sum()]:
        shares[i] += 1
    return shares.tolist()


def draw(rows: list[dict], n: int, rng: np.random.Generator) -> list[dict]:
    """n rows in a seeded order; beyond the pool size the order repeats."""
    if n and not rows:
        raise DataError("mixture: a dimension has no rows left to draw from")
    order = rng.permutation(len(rows)) if rows else np.array([], dtype=int)
    return [rows[order[i % len(rows)]] for i in range(n)]


def _weighted_draw(
    rows: list[dict], margin: np.ndarray, n: int, temperature: float, rng: np.random.Generator
) -> list[dict]:
    """n rows drawn with probability proportional to exp(margin / temperature); without replacement
    (Efraimidis-Spirakis keys) while the pool lasts, with replacement beyond it."""
    prob = np.exp((margin - margin.max()) / temperature)
    if n <= len(rows):
        keys = np.log(rng.random(len(rows))) / prob
        picked = np.argsort(-keys, kind="stable")[:n]
    else:
        picked = rng.choice(len(rows), size=n, p=prob / prob.sum())
    return [rows[i] for i in picked]


def _margins(judge, dim: str, rows: list[dict]) -> np.ndarray:
    prompts = [r["prompt"] for r in rows]
    chosen = np.asarray(judge.score(dim, prompts, [r["chosen"] for r in rows]), dtype=float)
    with_rejected = [i for i, r in enumerate(rows) if r["rejected"] is not None]
    rejected = np.full(len(rows), NEUTRAL)
    if with_rejected:
        scores = judge.score(dim, [prompts[i] for i in with_rejected], [rows[i]["rejected"] for i in with_rejected])
        rejected[with_rejected] = scores
    return chosen - rejected


def _read_inputs(inputs: dict[str, Path]) -> dict[str, list[dict]]:
    pools = {}
    for dim, path in inputs.items():
        path = Path(path)
        path = path / "train.jsonl" if path.is_dir() else path
        rows = read_rows(path)
        wrong = {r["dim"] for r in rows} - {dim}
        if wrong:
            raise DataError(f"{path}: given as {dim} data but holds rows of {', '.join(sorted(wrong))}")
        if not rows:
            raise DataError(f"{path}: no rows")
        pools[dim] = rows
    return pools


def mix(strategy: str, inputs: dict[str, Path], out: Path, judge=None, **options) -> dict:
    """A mixture; `judge` is a judge object (resm_core.judges), `options` are MixRequest fields."""
    req = build_request(MixRequest, {"strategy": strategy, "inputs": dict(inputs), "out": Path(out), **options})
    return mix_request(req, judge)


def mix_request(req: MixRequest, judge=None) -> dict:
    strategy, inputs, out, budget, ratios = req.strategy, req.inputs, req.out, req.budget, req.ratios
    temperature, margin, seed, force = req.temperature, req.margin, req.seed, req.force
    if strategy not in STRATEGIES:
        raise DataError(f"mixture strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    dims = sorted(inputs)
    if not 2 <= len(dims) <= 3 or set(dims) - set(DIMS):
        raise DataError(f"mixture: a combo is 2 or 3 of {', '.join(DIMS)}, got {', '.join(dims) or 'none'}")
    if strategy == "ratio" and not ratios:
        raise DataError("mixture ratio: give ratios for every dimension (e.g. helpfulness=2,harmlessness=1)")
    if ratios and strategy == "uniform":
        raise DataError("mixture uniform: takes no ratios (use --strategy ratio, or drop --ratios)")
    if ratios and set(ratios) != set(dims):
        raise DataError(f"mixture: ratios name {', '.join(sorted(ratios))} but the combo is {', '.join(dims)}")
    if strategy in ("reward_weighted", "conflict_filtered") and judge is None:
        raise DataError(f"mixture {strategy}: needs a judge (e.g. --judge keywords or --judge reward:MODEL_DIR)")
    bad = {d: r for d, r in (ratios or {}).items() if not (math.isfinite(r) and r >= 0)}
    if bad or (ratios and not any(ratios.values())):
        raise DataError(f"mixture: ratios must be numbers >= 0, at least one positive, got {bad or ratios}")
    recorder = ManifestRecorder({f"input_{d}": Path(p) for d, p in inputs.items()})
    pools = _read_inputs(inputs)
    budget = sum(len(p) for p in pools.values()) if budget is None else int(budget)
    weights = [float((ratios or {}).get(d, 1.0)) for d in dims]
    rng = np.random.default_rng(seed)
    composition: dict = {
        "strategy": strategy,
        "combo": combo_name(dims),
        "budget": budget,
        "seed": seed,
        "pool_sizes": {d: len(p) for d, p in pools.items()},
    }

    judged: dict[str, np.ndarray] = {}
    if strategy == "reward_weighted":  # aggregate margin of every pair under the combo's objective weights
        w = np.asarray(weights) / sum(weights)
        judged = {d: sum(w[k] * _margins(judge, other, pools[d]) for k, other in enumerate(dims)) for d in dims}
        composition.update(judge=judge.name, temperature=temperature, objective_weights=dict(zip(dims, w.tolist())))
    if strategy == "conflict_filtered":
        dropped = {}
        for d in dims:
            keep = np.ones(len(pools[d]), dtype=bool)
            has_rejected = np.asarray([r["rejected"] is not None for r in pools[d]])
            for other in dims:
                if other != d:
                    contradicted = (_margins(judge, other, pools[d]) < -margin) & has_rejected
                    dropped[f"{d}_by_{other}"] = int((contradicted & keep).sum())
                    keep &= ~contradicted
            if not keep.any():
                raise DataError(
                    f"mixture conflict_filtered: the {judge.name} judge contradicts every {d} pair "
                    f"(margin {margin}); it cannot tell the dimensions apart. Raise --margin or use "
                    f"a judge with a real signal for each dimension"
                )
            pools[d] = [r for r, k in zip(pools[d], keep) if k]
        composition.update(judge=judge.name, margin=margin, dropped=dropped, kept={d: len(p) for d, p in pools.items()})

    shares = allocate(budget, weights)
    rows = []
    for d, n in zip(dims, shares):
        if strategy == "reward_weighted":
            rows += _weighted_draw(pools[d], judged[d], n, temperature, rng)
            composition.setdefault("margin_mean", {})[d] = float(judged[d].mean())
        else:
            rows += draw(pools[d], n, rng)
    rows = [rows[i] for i in rng.permutation(len(rows))]

    per_dim = {d: sum(r["dim"] == d for r in rows) for d in dims}
    composition.update(
        sizes=per_dim,
        total=len(rows),
        shares={d: n / max(len(rows), 1) for d, n in per_dim.items()},
        unique_rows=len({r["id"] for r in rows}),
        repeated_rows=len(rows) - len({r["id"] for r in rows}),
    )
    if composition["repeated_rows"]:
        log.warning(
            "mixture %s: %d rows repeat (a share exceeds its pool)", composition["combo"], composition["repeated_rows"]
        )
    val_rows = []
    for p in inputs.values():
        val_path = Path(p) / "val.jsonl" if Path(p).is_dir() else Path(p).with_name("val.jsonl")
        if val_path.is_file():
            val_rows += read_rows(val_path)
    with AtomicDirectory(out, force=force, inputs=list(inputs.values())) as staging:
        write_jsonl(staging / "train.jsonl", rows)
        write_jsonl(staging / "val.jsonl", val_rows)
        (staging / "composition.json").write_text(json.dumps(composition, indent=2) + "\n")
        manifest = recorder.build(action="data mix", device="cpu", composition=composition)
        (staging / "resm_manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    log.info("mixture %s %s: %s", strategy, composition["combo"], per_dim)
    return composition
