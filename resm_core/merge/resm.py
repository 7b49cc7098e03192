"""RESM: Reweighting Enhanced task Singular Merging (Yang et al., arXiv 2502.06876).

The paper describes RESM but does not publish its equations; this module implements the
reconstruction specified in DESIGN.md, as TSV-M plus three switchable components:

1. outlier weighting (against preference-noise accumulation): per task and matrix, entries with
   |x| > M * scale (scale = mean |x|, or 1.4826 * MAD) are multiplied by (M * scale / |x|)^gamma
   before the SVD (gamma = 1 clips them to M * scale). The outlier ratio D is recorded.
2. task reweighting: each task's singular values are multiplied by w_t = (D_t / mean D)^(-power),
   renormalised to mean 1, so the task whose update is dominated by outliers counts less.
3. sparsity-aware rank selection (against layer sparsity adaptation), per layer:
   fixed  - floor(rank_fraction * r) per task (1/T when null: TSV-M);
   owl    - OWL-style: rho_l = clip(rho + lambda * zscore(D_l), rho - lambda, rho + lambda), where D_l is
            the block's outlier ratio over all its matrices and tasks (a model-wide statistics pass);
            rho defaults to 1/T - lambda, so rho_l never exceeds TSV-M's 1/T;
   energy - the smallest k whose singular values hold a fraction eta of the task's energy.
   Every rule is capped at floor(r/T) per task, so the concatenated rank never exceeds r.

With M = inf (or outlier weighting off), task reweighting off and the fixed rule, RESM is TSV-M.
"""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any, Mapping

import torch

from resm_core.checkpoint.names import layer_group
from resm_core.merge.registry import Param, TensorContext, register, weights_column
from resm_core.merge.svd import (SVD_PARAMS, Components, energy_rank, leading_components,
                                 orthogonalised_sum, per_task_rank, polar_method)
from resm_core.merge.svd_methods import ALPHA, RANK_FRACTION, mean_delta

RESM_PARAMS = (
    ALPHA,
    Param("outlier_weighting", True, "down-weight outlier entries before the SVD", kind="bool"),
    Param("outlier_m", 5.0, "M: an entry is an outlier when |x| > M * scale (inf disables)", low=0.0, low_open=True),
    Param("outlier_scale", "mean", "robust scale of a matrix: mean |x| (OWL) or 1.4826 * MAD",
          kind="choice", choices=("mean", "mad")),
    Param("outlier_gamma", 1.0, "down-weighting exponent; 1 clips outliers to M * scale", low=0.0, low_open=True),
    Param("task_reweighting", True, "reweight each task's singular values by its outlier ratio", kind="bool"),
    Param("reweight_power", 1.0, "strength of task reweighting: w_t = (D_t / mean D)^(-power)", low=0.0),
    Param("rank_rule", "owl", "per-layer rank selection: fixed, owl or energy",
          kind="choice", choices=("fixed", "owl", "energy")),
    RANK_FRACTION,
    Param("owl_lambda", 0.05, "lambda of the OWL rule, in units of the rank fraction", low=0.0),
    Param("energy_eta", 0.9, "energy fraction kept by the energy rule", low=0.0, high=1.0, low_open=True),
    *SVD_PARAMS,
)
_EPS = 1e-12


def robust_scale(x: torch.Tensor, kind: str) -> torch.Tensor:
    a = x.abs()
    if kind == "mean":
        return a.mean()
    flat = x.reshape(-1)
    return 1.4826 * (flat - flat.median()).abs().median()


def outlier_ratio(x: torch.Tensor, m: float, kind: str) -> float:
    if math.isinf(m):
        return 0.0
    return float((x.abs() > m * robust_scale(x, kind)).float().mean())


def downweight_outliers(x: torch.Tensor, m: float, kind: str, gamma: float) -> torch.Tensor:
    """Entries above M * scale are scaled by (M * scale / |x|)^gamma; the rest are untouched."""
    if math.isinf(m):
        return x
    limit = m * robust_scale(x, kind)
    a = x.abs()
    over = a > limit
    factor = torch.where(over, (limit / a.clamp_min(_EPS)) ** gamma, torch.ones_like(a))
    return x * factor


def task_weights(ratios: list[float], power: float) -> list[float]:
    """w_t = (D_t / mean D)^(-power), renormalised to mean 1 (all 1 when no task has outliers)."""
    mean = sum(ratios) / len(ratios)
    if mean <= 0 or power == 0:
        return [1.0] * len(ratios)
    raw = [((d + _EPS) / (mean + _EPS)) ** (-power) for d in ratios]
    norm = sum(raw) / len(raw)
    return [w / norm for w in raw]


def owl_center(params: Mapping[str, Any], n_tasks: int) -> float:
    rho = params["rank_fraction"]
    return (1.0 / n_tasks - params["owl_lambda"]) if rho is None else rho


def owl_fractions(group_ratios: Mapping[str, float], center: float, lam: float) -> dict[str, float]:
    """rho_l = clip(rho + lambda * zscore(D_l), rho - lambda, rho + lambda)."""
    values = list(group_ratios.values())
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    out = {}
    for group, d in group_ratios.items():
        z = (d - mean) / std if std > 0 else 0.0
        out[group] = min(max(center + lam * z, center - lam), center + lam)
    return out


def _prepare_owl(stream, params: Mapping[str, Any], n_tasks: int) -> dict:
    """Statistics pass: outlier ratio D_l of every layer block, then its OWL rank fraction."""
    outliers: dict[str, float] = defaultdict(float)
    entries: dict[str, int] = defaultdict(int)
    for name, _, deltas in stream():
        if deltas.dim() != 3:
            continue
        group = layer_group(name)
        for t in range(deltas.shape[0]):
            outliers[group] += outlier_ratio(deltas[t], params["outlier_m"], params["outlier_scale"]) * deltas[t].numel()
            entries[group] += deltas[t].numel()
    ratios = {g: outliers[g] / entries[g] for g in entries}
    if not ratios:
        return {"layer_outlier_ratio": {}, "layer_rank_fraction": {}}
    return {"layer_outlier_ratio": ratios,
            "layer_rank_fraction": owl_fractions(ratios, owl_center(params, n_tasks), params["owl_lambda"])}


def _ranks(params, ctx: TensorContext, parts: list[Components], norms_sq: list[float], r: int, T: int) -> list[int]:
    rule = params["rank_rule"]
    if rule == "fixed":
        return [per_task_rank(r, T, params["rank_fraction"])] * T
    if rule == "owl":
        fraction = ctx.stats["layer_rank_fraction"].get(layer_group(ctx.name), owl_center(params, T))
        return [per_task_rank(r, T, fraction)] * T
    return [energy_rank(p.s, params["energy_eta"], total_energy=n2) for p, n2 in zip(parts, norms_sq)]


@register("resm", params=RESM_PARAMS, family="svd",
          summary="TSV-M with outlier weighting, task reweighting and sparsity-aware per-layer ranks",
          reference="Yang et al., Mix Data or Merge Models? Balancing the Helpfulness, Honesty, and "
                    "Harmlessness of Large Language Model via Model Merging, arXiv 2502.06876 "
                    "(reconstructed from the paper's description)",
          prepare=_prepare_owl, needs_prepare=lambda p: p["rank_rule"] == "owl")
def resm(base, deltas, params, ctx):
    if deltas.dim() != 3:
        return mean_delta(deltas, params)
    T, m, n = deltas.shape
    r = min(m, n)
    weighted = weights_column(params, deltas) * deltas
    ratios = [outlier_ratio(weighted[t], params["outlier_m"], params["outlier_scale"]) for t in range(T)]
    if params["outlier_weighting"]:
        weighted = torch.stack([downweight_outliers(weighted[t], params["outlier_m"], params["outlier_scale"],
                                                    params["outlier_gamma"]) for t in range(T)])
    # No rule keeps more than floor(r/T) per task, and the energy rule takes its total energy from
    # the Frobenius norm, so the spectrum is never needed beyond that.
    k_max = per_task_rank(r, T, params["rank_fraction"] if params["rank_rule"] == "fixed" else None)
    parts = [leading_components(weighted[t], k_max, params["svd"], params["svd_oversample"],
                                  params["svd_niter"], seed=ctx.tensor_seed() + t)
             for t in range(T)]
    norms_sq = [float(weighted[t].pow(2).sum()) for t in range(T)]
    ranks = _ranks(params, ctx, parts, norms_sq, r, T)
    parts = [p.truncate(k) for p, k in zip(parts, ranks)]
    if params["task_reweighting"]:
        weights = task_weights(ratios, params["reweight_power"])
        parts = [Components(p.u, p.s * w, p.vh) for p, w in zip(parts, weights)]
        ctx.record("task_weights", [round(w, 6) for w in weights])
    ctx.record("rank_per_task", ranks)
    ctx.record("outlier_ratio", [round(d, 6) for d in ratios])
    return params["scale"] * orthogonalised_sum(parts, polar_method(params))
