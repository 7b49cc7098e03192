"""Consensus merging with TALL masks (Wang et al., ICML 2024).

Each task's TALL mask marks the entries where that task's vector matters relative to the others:
m_t = |w_t tau_t| >= lambda * |tau_MTL - w_t tau_t|, with tau_MTL = sum_t w_t tau_t the multi-task
vector (each task enters the mask as it enters the sum; unit weights give the paper's rule). Entries
that fewer than k tasks claim are 'selfish' (one task only) or 'catastrophic' (none) and are
removed from the task-arithmetic vector.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from resm_core.errors import ConfigError
from resm_core.merge.api import Param, TensorContext, register, scale_param, task_sum

MASK_LAMBDA = Param(
    "mask_lambda", 0.4, "TALL-mask threshold lambda (the paper tunes it in [0.2, 0.6])", low=0.0, low_open=True
)
MIN_AGREE = Param("min_agree", 2, "k: an entry survives when at least k task masks keep it", kind="int", low=1)


def _check(params: Mapping[str, Any], n_tasks: int) -> None:
    if params["min_agree"] > n_tasks:
        raise ConfigError(f"consensus: min_agree = {params['min_agree']} exceeds the {n_tasks} experts")


@register(
    "consensus",
    params=(MASK_LAMBDA, MIN_AGREE, scale_param(0.3)),
    summary="task arithmetic restricted to entries that at least k TALL masks keep",
    reference="Wang et al., Localizing Task Information for Improved Model Merging and "
    "Compression (TALL masks, Consensus Merging), ICML 2024",
    validate=_check,
    elementwise=True,  # each entry's masks read that entry alone: the 128256 x 4096 matrices go in pieces
)
def consensus(base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    mtl = task_sum(deltas, params["weights"], 1.0)
    votes = torch.zeros(mtl.shape, dtype=torch.int16, device=mtl.device)
    for t, w in enumerate(params["weights"]):  # TALL mask of one (weighted) task at a time
        task = deltas[t] if w == 1.0 else deltas[t] * w  # no copy for the usual unit weight
        votes += task.abs() >= (mtl - task).abs_().mul_(params["mask_lambda"])
    keep = votes >= params["min_agree"]
    _count_kept(ctx, keep)
    return mtl.mul_(keep).mul_(params["scale"])


def _count_kept(ctx: TensorContext, keep: torch.Tensor) -> None:
    """The fraction of the tensor's entries kept, counted over the blocks or pieces it is merged in (they
    share the tensor's diagnostics)."""
    kept = ctx.diagnostics.get("consensus_kept_entries", 0) + int(keep.sum())
    entries = ctx.diagnostics.get("consensus_entries", 0) + keep.numel()
    ctx.record("consensus_kept_entries", kept)
    ctx.record("consensus_entries", entries)
    ctx.record("consensus_kept_fraction", kept / entries)
