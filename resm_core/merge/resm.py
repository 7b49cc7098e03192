"""RESM: Reweighting Enhanced task Singular Merging (Yang et al., arXiv 2502.06876).

The paper describes RESM but does not publish its equations; this module implements the
reconstruction written out in the README ("RESM, and what is reconstructed"), as TSV-M plus three switchable
components:

1. outlier weighting (against preference-noise accumulation): per task and matrix, entries with
   |x| > M * scale (scale = mean |x|, or 1.4826 * MAD of the nonzero entries) are multiplied by
   (M * scale / |x|)^gamma before the SVD (gamma = 1 clips them to M * scale). A low-rank task
   (numerical rank below its kept rank: a LoRA expert) is down-weighted within its own column and
   row spaces, so the clipping adds no direction the expert never used. The outlier ratio D is recorded.
2. task reweighting: each task's singular values are multiplied by a bounded, smoothed function of
   its outlier count c_t in the matrix: w_t = ((c_t + kappa) / (mean c + kappa))^(-power),
   renormalised to mean 1 and clipped to [1/B, B]. The pseudo-count kappa absorbs the Poisson
   noise that makes identical experts' counts differ; B keeps a task with no outliers from
   taking the matrix over.
3. sparsity-aware rank selection (against layer sparsity adaptation), per layer:
   fixed  - floor(rank_fraction * r) per task (1/T when null: TSV-M);
   owl    - OWL-style: rho_l = clip(rho + lambda * zscore(D_l), rho - lambda, rho + lambda), where D_l is
            the block's outlier ratio over all its matrices and tasks (a model-wide statistics pass);
            rho defaults to 1/T - lambda, so rho_l never exceeds TSV-M's 1/T;
   energy - the smallest k whose singular values hold a fraction eta of the task's energy.
   Every rule is capped at floor(r/T) per task, so the concatenated rank never exceeds r, and at
   the task's numerical rank (`rank_tol`), as in TSV-M.

With M = inf (or outlier weighting off), task reweighting off and the fixed rule, RESM is TSV-M.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

import torch

from resm_core.checkpoint.names import layer_group
from resm_core.merge.api import Param, TensorContext, TensorStream, register, weights_column
from resm_core.merge.svd import (
    SVD_PARAMS,
    Components,
    energy_rank,
    leading_components,
    low_rank_components,
    orthogonalised_sum,
    per_task_rank,
    polar_method,
    project,
)
from resm_core.merge.svd_methods import RANK_FRACTION, SCALE, mean_delta, weighted_task

RESM_PARAMS = (
    SCALE,
    Param("outlier_weighting", True, "down-weight outlier entries before the SVD", kind="bool"),
    Param("outlier_m", 5.0, "M: an entry is an outlier when |x| > M * scale (inf disables)", low=0.0, low_open=True),
    Param(
        "outlier_scale",
        "mean",
        "robust scale of a matrix: mean |x| (OWL) or 1.4826 * MAD of its nonzero entries",
        kind="choice",
        choices=("mean", "mad"),
    ),
    Param("outlier_gamma", 1.0, "down-weighting exponent; 1 clips outliers to M * scale", low=0.0, low_open=True),
    Param(
        "task_reweighting",
        True,
        "reweight each task's singular values by its outlier count (smoothed, bounded)",
        kind="bool",
    ),
    Param(
        "reweight_power",
        1.0,
        "strength of task reweighting: w_t = ((c_t + kappa) / (mean c + kappa))^(-power), c_t the task's outlier count",
        low=0.0,
    ),
    Param(
        "reweight_prior",
        25.0,
        "kappa: outliers added to every task's count before comparing them "
        "(absorbs counting noise between equivalent experts)",
        low=0.0,
    ),
    Param("reweight_bound", 2.0, "B: task weights are clipped to [1/B, B] after normalising to mean 1", low=1.0),
    Param(
        "rank_rule",
        "owl",
        "per-layer rank selection: fixed, owl or energy",
        kind="choice",
        choices=("fixed", "owl", "energy"),
    ),
    RANK_FRACTION,
    Param("owl_lambda", 0.05, "lambda of the OWL rule, in units of the rank fraction", low=0.0),
    Param("energy_eta", 0.9, "energy fraction kept by the energy rule", low=0.0, high=1.0, low_open=True),
    *SVD_PARAMS,
)
_EPS = 1e-12


def robust_scale(x: torch.Tensor, kind: str) -> torch.Tensor:
    """mean |x|, or 1.4826 * MAD over the nonzero entries (exact zeros, common in bf16 deltas and
    untouched rows, say nothing about the size of an update; with them the MAD of a mostly-zero
    delta is 0 and every change would count as an outlier). Where the nonzero entries' MAD is
    still 0 (they share one magnitude), sqrt(pi/2) * their mean |x|, Gaussian-consistent like
    the MAD. Zero only for a zero matrix."""
    a = x.abs()
    if kind == "mean":
        return a.mean()
    nonzero = x.reshape(-1)[x.reshape(-1) != 0]
    if nonzero.numel() == 0:
        return a.new_zeros(())
    mad = 1.4826 * (nonzero - nonzero.median()).abs().median()
    return mad if mad > 0 else math.sqrt(math.pi / 2) * nonzero.abs().mean()


def outlier_count(x: torch.Tensor, m: float, kind: str) -> int:
    if math.isinf(m):
        return 0
    return int((x.abs() > m * robust_scale(x, kind)).sum())


def outlier_ratio(x: torch.Tensor, m: float, kind: str) -> float:
    return outlier_count(x, m, kind) / max(1, x.numel())


def downweight_outliers(x: torch.Tensor, m: float, kind: str, gamma: float) -> torch.Tensor:
    """Entries above M * scale are scaled by (M * scale / |x|)^gamma; the rest are untouched."""
    if math.isinf(m):
        return x
    limit = m * robust_scale(x, kind)
    factor = x.abs()
    over = factor > limit
    # (limit / max(|x|, eps))^gamma where over, else 1, then x * factor: computed in one buffer
    factor = torch.div(limit, factor.clamp_min_(_EPS), out=factor).pow_(gamma).masked_fill_(over.logical_not_(), 1.0)
    return factor.mul_(x)


def task_weights(counts: list[int], power: float, prior: float = 25.0, bound: float = 2.0) -> list[float]:
    """w_t = ((c_t + kappa) / (mean c + kappa))^(-power), renormalised to mean 1, clipped to [1/B, B].

    The raw ratio D_t / mean D is unstable: a task with no outliers in a matrix gets an unbounded
    weight and the others vanish, and between statistically identical experts the counts differ
    by Poisson noise (sd sqrt(c)), i.e. by 20% at the ~20 outliers of a 576 x 576 matrix.
    kappa (a pseudo-count) shrinks such differences towards 1; B bounds what is left."""
    mean = sum(counts) / len(counts)
    if power == 0 or mean + prior <= 0:
        return [1.0] * len(counts)
    logs = [-power * math.log(max((c + prior) / (mean + prior), _EPS)) for c in counts]
    raw = [math.exp(v - max(logs)) for v in logs]  # in log space: no overflow for any power
    norm = sum(raw) / len(raw)
    return [min(max(w / norm, 1.0 / bound), bound) for w in raw]


def owl_center(params: Mapping[str, Any], n_tasks: int) -> float:
    rho = params["rank_fraction"]
    return float(1.0 / n_tasks - params["owl_lambda"]) if rho is None else float(rho)


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


def _prepare_owl(stream: TensorStream, params: Mapping[str, Any], n_tasks: int) -> dict[str, Any]:
    """Statistics pass: outlier ratio D_l of every layer block, then its OWL rank fraction."""
    outliers: dict[str, float] = defaultdict(float)
    entries: dict[str, int] = defaultdict(int)
    for name, _, deltas in stream():
        if deltas.dim() != 3:
            continue
        group = layer_group(name)
        for t in range(deltas.shape[0]):
            outliers[group] += (
                outlier_ratio(deltas[t], params["outlier_m"], params["outlier_scale"]) * deltas[t].numel()
            )
            entries[group] += deltas[t].numel()
    ratios = {g: outliers[g] / entries[g] for g in entries}
    if not ratios:
        return {"layer_outlier_ratio": {}, "layer_rank_fraction": {}}
    return {
        "layer_outlier_ratio": ratios,
        "layer_rank_fraction": owl_fractions(ratios, owl_center(params, n_tasks), params["owl_lambda"]),
    }


def _ranks(
    params: Mapping[str, Any], ctx: TensorContext, parts: list[Components], norms_sq: list[float], r: int, T: int
) -> list[int]:
    rule = params["rank_rule"]
    if rule == "fixed":
        return [per_task_rank(r, T, params["rank_fraction"])] * T
    if rule == "owl":
        fraction = ctx.stats["layer_rank_fraction"].get(layer_group(ctx.name), owl_center(params, T))
        return [per_task_rank(r, T, fraction)] * T
    return [energy_rank(p.s, params["energy_eta"], total_energy=n2) for p, n2 in zip(parts, norms_sq)]


@register(
    "resm",
    params=RESM_PARAMS,
    family="svd",
    summary="TSV-M with outlier weighting, task reweighting and sparsity-aware per-layer ranks",
    reference="Yang et al., Mix Data or Merge Models? Balancing the Helpfulness, Honesty, and "
    "Harmlessness of Large Language Model via Model Merging, arXiv 2502.06876 "
    "(reconstructed from the paper's description)",
    prepare=_prepare_owl,
    needs_prepare=lambda p: p["rank_rule"] == "owl",
)
def resm(base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    if deltas.dim() != 3:
        return mean_delta(deltas, params)
    T, m, n = deltas.shape
    r = min(m, n)
    weights = weights_column(params, deltas)
    # No rule keeps more than floor(r/T) per task, and the energy rule takes its total energy from
    # the Frobenius norm, so the spectrum is never needed beyond that.
    k_max = per_task_rank(r, T, params["rank_fraction"] if params["rank_rule"] == "fixed" else None)
    parts, norms_sq, counts = [], [], []
    for t in range(T):
        x = weighted_task(deltas, weights, t)
        counts.append(outlier_count(x, params["outlier_m"], params["outlier_scale"]))
        if params["outlier_weighting"] and counts[t] > 0:
            part, x = _downweighted_components(x, k_max, params, ctx.tensor_seed() + t)
        else:
            part = leading_components(
                x,
                k_max,
                params["svd"],
                params["svd_oversample"],
                params["svd_niter"],
                seed=ctx.tensor_seed() + t,
                rank_tol=params["rank_tol"],
            )
        parts.append(part)
        norms_sq.append(float(x.pow_(2).sum()))  # x is this task's own copy, not needed after
        del x
    ranks = [min(k, p.rank) for k, p in zip(_ranks(params, ctx, parts, norms_sq, r, T), parts)]
    parts = [p.truncate(k) for p, k in zip(parts, ranks)]
    if params["task_reweighting"]:
        reweights = task_weights(counts, params["reweight_power"], params["reweight_prior"], params["reweight_bound"])
        parts = [Components(p.u, p.s * w, p.vh) for p, w in zip(parts, reweights)]
        ctx.record("task_weights", [round(w, 6) for w in reweights])
    ctx.record("rank_per_task", ranks)
    ctx.record("outlier_ratio", [round(c / (m * n), 6) for c in counts])
    return orthogonalised_sum(parts, polar_method(params), params["scale"])


def _downweighted_components(
    x: torch.Tensor, k_max: int, params: Mapping[str, Any], seed: int
) -> tuple[Components, torch.Tensor]:
    """The leading components of x with its outliers down-weighted, and the down-weighted matrix.
    Clipping entries of a low-rank matrix makes it full rank; for a task whose numerical rank is
    below k_max the clipped matrix is therefore taken within x's own column and row spaces."""
    clipped = downweight_outliers(x, params["outlier_m"], params["outlier_scale"], params["outlier_gamma"])
    own = low_rank_components(x, k_max, params["rank_tol"], seed)
    if own is None:
        return leading_components(
            clipped,
            k_max,
            params["svd"],
            params["svd_oversample"],
            params["svd_niter"],
            seed=seed,
            rank_tol=params["rank_tol"],
        ), clipped
    part = project(clipped, own, params["rank_tol"])
    return part, (part.u * part.s) @ part.vh
