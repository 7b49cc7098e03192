"""TSV-M (Gargiulo et al., CVPR 2025) and Iso-C (Marczak et al., ICML 2025).

Both act on 2-D matrices; 1-D tensors (norms, biases) take the mean of the (weighted) deltas, as in
the TSV code. Vocabulary-sized matrices are routed by the engine's vocab rule (task arithmetic by
default). No task contributes directions beyond its numerical rank (`rank_tol`): a LoRA expert's
delta has rank r_lora, and the zero-singular-value directions an SVD returns beyond it are
arbitrary; in the polar factor they would rotate the real ones out of the experts' column space.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from resm_core.merge.api import Param, TensorContext, register, task_sum, weights_column
from resm_core.merge.svd import (
    RANK_TOL,
    SVD_PARAMS,
    leading_components,
    numerical_rank,
    orthogonalised_sum,
    per_task_rank,
    polar_method,
    robust_svd,
)

SCALE = Param("scale", 1.0, "scaling coefficient alpha on the merged delta", low=0.0, low_open=True)
RANK_FRACTION = Param(
    "rank_fraction",
    None,
    "components kept per task as a fraction of min(m, n); null = 1/T (floor(r/T) each)",
    low=0.0,
    high=1.0,
    low_open=True,
    nullable=True,
)


def weighted_task(deltas: torch.Tensor, weights: torch.Tensor, t: int) -> torch.Tensor:
    """w_t tau_t, one task at a time: the same products as the [T, m, n] weighted stack, in a third of its memory."""
    return weights[t] * deltas[t]


def mean_delta(deltas: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """The SVD family's rule for tensors that are not matrices: the mean of the weighted deltas,
    (1/T) sum_t w_t tau_t, so a weight scales a task's 1-D deltas as it scales its matrices."""
    return task_sum(deltas, params["weights"], params["scale"] / deltas.shape[0])


@register(
    "tsv_m",
    params=(SCALE, RANK_FRACTION, *SVD_PARAMS),
    family="svd",
    summary="per-task truncated SVD, concatenate, orthogonalise U and V (polar), reconstruct",
    reference="Gargiulo et al., Task Singular Vectors: Reducing Task Interference in Model Merging, CVPR 2025",
)
def tsv_m(base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    if deltas.dim() != 3:
        return mean_delta(deltas, params)
    T, m, n = deltas.shape
    k = per_task_rank(min(m, n), T, params["rank_fraction"])
    weights = weights_column(params, deltas)
    parts = [
        leading_components(
            weighted_task(deltas, weights, t),
            k,
            params["svd"],
            params["svd_oversample"],
            params["svd_niter"],
            seed=ctx.tensor_seed() + t,
            rank_tol=params["rank_tol"],
        )
        for t in range(T)
    ]
    ctx.record("rank_per_task", [p.rank for p in parts])
    return orthogonalised_sum(parts, polar_method(params), params["scale"])


@register(
    "iso_c",
    params=(SCALE, RANK_TOL),
    family="svd",
    summary="task-arithmetic sum with its spectrum flattened to the mean singular value "
    "(within the sum's numerical rank)",
    reference="Marczak et al., No Task Left Behind: Isotropic Model Merging with Common and "
    "Task-Specific Subspaces, ICML 2025",
)
def iso_c(base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    if deltas.dim() != 3:
        return mean_delta(deltas, params)
    summed = task_sum(deltas, params["weights"], 1.0)
    u, s, vh = robust_svd(summed)
    k = numerical_rank(s, params["rank_tol"])
    ctx.record("rank", k)
    if k == 0:
        return torch.zeros_like(summed)
    del summed
    flattened: torch.Tensor = (u[:, :k] @ vh[:k]).mul_(params["scale"] * s[:k].mean())
    return flattened
