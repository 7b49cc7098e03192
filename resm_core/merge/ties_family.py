"""TIES, DARE, Model Breadcrumbs and DELLA as one pattern: sparsify each task vector, then combine
by a plain weighted sum (the '+TA' variants) or by TIES sign election with a disjoint mean.

Defaults follow the papers: TIES keeps the top 20% with lambda = 1 (Yadav et al., 2023); DARE
drops 90% (Yu et al., 2024); Breadcrumbs keeps 90% after removing the top 1% (Davari & Belilovsky,
2023, as popularised by mergekit); DELLA keeps 30% with a spread of 0.1 (Deep et al., 2024). Methods
that sum task vectors default to lambda = 0.3, those that average them (disjoint mean) to 1.
Names follow mergekit: `X_ties` / `X` elect signs and `X_linear` / `X` sum, as each paper defines
X (`della` is the paper's drop-elect-fuse, `della_linear` the variant without election).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from resm_core.errors import ConfigError
from resm_core.merge.api import (
    GRANULARITY,
    Param,
    PrepareFn,
    TensorContext,
    TensorStream,
    density_param,
    register,
    scale_param,
    task_sum,
)
from resm_core.merge.sparsify import crumbs, dare, magprune, model_wide_thresholds, trim

GAMMA = Param(
    "gamma", 0.01, "fraction of largest-magnitude entries removed as outliers", low=0.0, high=1.0, high_open=True
)
EPSILON = Param(
    "epsilon",
    0.1,
    "keep probabilities run from density - epsilon (smallest magnitude) to "
    "density + epsilon (largest), as in mergekit's DELLA",
    low=0.0,
)
DELLA_GRANULARITY = Param(
    "granularity",
    "row",
    "where magnitudes are ranked: per row (DELLA) or per tensor",
    kind="choice",
    choices=("row", "tensor"),
)


def sum_combine(sparse: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """Task arithmetic: lambda * sum_t w_t tau_t."""
    return task_sum(sparse, params["weights"], params["scale"])


def ties_combine(sparse: torch.Tensor, params: Mapping[str, Any]) -> torch.Tensor:
    """TIES 'elect' and 'disjoint merge': the sign of the total (weighted) mass wins per entry,
    and the entry is the weighted mean of the tasks that agree with it (zeros do not vote).
    Where the mass is exactly zero (+a and -a, common in bf16 deltas) the sign is +1, as in
    mergekit and PEFT (the TIES code takes the model-wide majority sign there): the entry is then
    the mean of the positive tasks instead of being dropped.

    `sparse` must be the sparsifier's own temporary: it is overwritten, which keeps the
    peak memory of a [T, ...] tensor at about two copies instead of five."""
    weights = params["weights"]
    elected = task_sum(sparse, weights, 1.0).ge_(0).mul_(2).sub_(1)  # +1 where the mass is >= 0, else -1
    den = torch.zeros_like(elected)
    for t, w in enumerate(weights):
        agreeing = torch.mul(sparse[t], elected).clamp_min_(0)  # |x| where x has the elected sign, else 0
        torch.mul(agreeing, elected, out=sparse[t])  # x where it agrees, else 0
        den.add_(agreeing.sign_(), alpha=w)  # the weights of the agreeing tasks
    del elected
    num = task_sum(sparse, weights, params["scale"])
    return num.div_(den.masked_fill_(den == 0, 1.0))  # entries no task agrees on are 0 / 1


def _model_thresholds(fractions_of: Callable[[Mapping[str, Any]], list[float]]) -> PrepareFn:
    """A statistics pass computing exact top-k thresholds for the given fractions over its stream: the whole
    model (`prepare`) or the row blocks of one tensor (`tensor_prepare`)."""

    def prepare(stream: TensorStream, params: Mapping[str, Any], n_tasks: int) -> dict[str, Any]:
        def mags() -> Iterator[tuple[str, torch.Tensor]]:
            return ((name, d.abs()) for name, _, d in stream())

        return model_wide_thresholds(mags(), fractions_of(params), mags(), mags())

    return prepare


def _is_model_wide(params: Mapping[str, Any]) -> bool:
    return params.get("granularity") == "model"


def _per_tensor(params: Mapping[str, Any]) -> bool:
    return not _is_model_wide(params)


def _thresholds(params: Mapping[str, Any], ctx: TensorContext) -> Mapping[str, Any] | None:
    """Model-wide thresholds, or the whole tensor's when it comes in row blocks; None: rank here."""
    return ctx.stats if _is_model_wide(params) else ctx.tensor_stats


def _trim(deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    return trim(deltas, params["density"], _thresholds(params, ctx), ctx.key)


def _crumbs(deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    return crumbs(deltas, params["density"], params["gamma"], _thresholds(params, ctx), ctx.key)


def _check_band(params: Mapping[str, Any], n_tasks: int) -> None:
    if params["density"] + params["gamma"] > 1.0 + 1e-9:
        raise ConfigError(f"breadcrumbs: density + gamma = {params['density'] + params['gamma']:g} exceeds 1")


def _check_della(params: Mapping[str, Any], n_tasks: int) -> None:
    lo, hi = params["density"] - params["epsilon"], params["density"] + params["epsilon"]
    if lo <= 0 or hi > 1:
        raise ConfigError(f"della: density +- epsilon must stay in (0, 1], got [{lo:g}, {hi:g}]")


_TIES_REF = "Yadav et al., TIES-Merging, NeurIPS 2023"
_DARE_REF = "Yu et al., Language Models are Super Mario (DARE), ICML 2024"
_CRUMBS_REF = "Davari & Belilovsky, Model Breadcrumbs, ECCV 2024"
_DELLA_REF = "Deep et al., DELLA-Merging, 2024"


@register(
    "ties",
    params=(density_param(0.2), scale_param(1.0), GRANULARITY),
    summary="trim to top-k magnitudes, elect signs, disjoint mean",
    reference=_TIES_REF,
    prepare=_model_thresholds(lambda p: [p["density"]]),
    needs_prepare=_is_model_wide,
    blockwise=True,
    tensor_prepare=_model_thresholds(lambda p: [p["density"]]),
    needs_tensor_prepare=_per_tensor,
)
def ties(base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    return ties_combine(_trim(deltas, params, ctx), params)


def register_pair(
    linear: str,
    ties_name: str,
    sparsify: Callable[[torch.Tensor, Mapping[str, Any], TensorContext], torch.Tensor],
    params: tuple[Param, ...],
    what: str,
    reference: str,
    random: bool = False,
    linear_affine: bool = False,
    **extra: Any,
) -> None:
    """Register a sparsifier twice: summed (task arithmetic, scale 0.3) and TIES-combined (scale 1).
    `linear_affine`: the sparsifier's mask does not depend on the values (DARE), so the sum is `affine`."""
    register(
        linear,
        params=(*params, scale_param(0.3)),
        summary=f"{what}, then task arithmetic",
        reference=reference,
        random=random,
        affine=linear_affine,
        **extra,
    )(lambda base, deltas, p, ctx: sum_combine(sparsify(deltas, p, ctx), p))
    register(
        ties_name,
        params=(*params, scale_param(1.0)),
        summary=f"{what}, then TIES sign election and disjoint mean",
        reference=reference,
        random=random,
        **extra,
    )(lambda base, deltas, p, ctx: ties_combine(sparsify(deltas, p, ctx), p))


register_pair(
    "dare_linear",
    "dare_ties",
    lambda d, p, ctx: dare(d, p["density"], ctx.uniform(d.shape)),
    (density_param(0.1),),
    "DARE random drop and rescale",
    _DARE_REF,
    random=True,
    linear_affine=True,
    elementwise=True,
)

_band_fractions = lambda p: [p["gamma"], min(1.0, p["gamma"] + p["density"])]  # noqa: E731
register_pair(
    "breadcrumbs",
    "breadcrumbs_ties",
    _crumbs,
    (density_param(0.9, "fraction of entries kept per task, below the removed outliers"), GAMMA, GRANULARITY),
    "drop both magnitude tails (outliers and small entries)",
    _CRUMBS_REF,
    validate=_check_band,
    prepare=_model_thresholds(_band_fractions),
    needs_prepare=_is_model_wide,
    blockwise=True,
    tensor_prepare=_model_thresholds(_band_fractions),
    needs_tensor_prepare=_per_tensor,
)

register_pair(
    "della_linear",
    "della",
    lambda d, p, ctx: magprune(d, p["density"], p["epsilon"], ctx.uniform(d.shape), p["granularity"]),
    (density_param(0.3, "mean keep probability per task"), EPSILON, DELLA_GRANULARITY),
    "MagPrune (magnitude-ranked keep probabilities, rescaled)",
    _DELLA_REF,
    random=True,
    validate=_check_della,
    blockwise=lambda p: p["granularity"] == "row",  # ranks within a row: any block of whole rows
)
