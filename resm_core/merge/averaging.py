"""Dense averaging methods: weighted model average, task arithmetic, Model Stock."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from resm_core.errors import ConfigError
from resm_core.merge.api import TensorContext, TensorStream, register, scale_param, weights_column
from resm_core.merge.ties_family import sum_combine


def _nonzero_weight_sum(params: Mapping[str, Any], n_tasks: int) -> None:
    if abs(sum(params["weights"])) < 1e-12:
        raise ConfigError("linear: weights sum to zero, so the weighted average is undefined")


@register(
    "linear",
    summary="weighted average of the models (model soup)",
    reference="Wortsman et al., Model Soups, ICML 2022",
    validate=_nonzero_weight_sum,
    elementwise=True,
    affine=True,
)
def linear(base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext) -> torch.Tensor:
    """sum_t w_t tau_t / sum_t w_t, accumulated one task at a time: the same products and the same
    left-to-right sum as (w * deltas).sum(0), bit for bit, without the [T, ...] temporary."""
    w = weights_column(params, deltas)
    total = deltas[0] * w[0]
    product = torch.empty_like(total)
    for t in range(1, deltas.shape[0]):
        total.add_(torch.mul(deltas[t], w[t], out=product))
    return total.div_(w.sum())


@register(
    "task_arithmetic",
    params=(scale_param(0.3),),
    summary="lambda * sum of task vectors",
    reference="Ilharco et al., Editing Models with Task Arithmetic, ICLR 2023 "
    "(lambda tuned on validation; 0.3 is typical)",
    elementwise=True,
    affine=True,
)
def task_arithmetic(
    base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext
) -> torch.Tensor:
    return sum_combine(deltas, params)


GRAM_ENTRIES = 2**18  # entries of each task vector per product in the Gram matrix (see TaskGram)


class TaskGram:
    """The T x T Gram matrix of a tensor's task vectors, fed its entries in row-major order, in any slices (the
    whole tensor, its row blocks, cache-sized pieces). Entries are taken GRAM_ENTRIES at a time, counted from
    the tensor's first entry whatever the slices, each group's fp32 product added to an fp64 total in order:
    the same Gram matrix, bit for bit, from any split (a merge in blocks or pieces equals the whole tensor's)."""

    def __init__(self) -> None:
        self.total: torch.Tensor | None = None
        self._pending: torch.Tensor | None = None  # entries short of a whole group, carried to the next slice

    def add(self, deltas: torch.Tensor) -> TaskGram:
        flat = deltas.reshape(deltas.shape[0], -1)
        at = 0  # where the next whole group starts in `flat`
        if self._pending is not None:
            at = GRAM_ENTRIES - self._pending.shape[1]
            self._pending = torch.cat([self._pending, flat[:, :at]], dim=1)
            if self._pending.shape[1] < GRAM_ENTRIES:
                return self
            self._add_group(self._pending)
            self._pending = None
        whole = at + (flat.shape[1] - at) // GRAM_ENTRIES * GRAM_ENTRIES
        for start in range(at, whole, GRAM_ENTRIES):
            self._add_group(flat[:, start : start + GRAM_ENTRIES])
        if whole < flat.shape[1]:
            self._pending = flat[:, whole:].clone()  # a copy: the caller may reuse its buffer
        return self

    def _add_group(self, flat: torch.Tensor) -> None:
        group = (flat @ flat.T).double()
        self.total = group if self.total is None else self.total.add_(group)

    def result(self) -> torch.Tensor:
        if self._pending is not None:
            self._add_group(self._pending)
            self._pending = None
        assert self.total is not None, "TaskGram.result before any entries"
        return self.total


def model_stock_ratio(deltas: torch.Tensor, gram: torch.Tensor | None = None) -> torch.Tensor:
    """t = N cos(theta) / (1 + (N-1) cos(theta)), cos(theta) the mean pairwise cosine between the
    task vectors of this tensor (from their Gram matrix `gram`, computed here when not given). As in
    mergekit, a pair with a zero task vector (a LoRA expert that does not touch this tensor) counts as
    cos = 0 instead of discarding the tensor; unlike mergekit, only exact zeros do (mergekit floors
    |a||b| at 1e-6, which shrinks the cosine of small deltas), and the mean cosine is clamped to [0, 1]
    so t stays an interpolation weight."""
    n = deltas.shape[0]
    if n == 1:
        return torch.tensor(1.0, device=deltas.device)
    if gram is None:
        gram = TaskGram().add(deltas).result()
    norms = gram.diagonal().sqrt()
    pair_norms = torch.outer(norms, norms)
    cosines = gram / torch.where(pair_norms > 0, pair_norms, torch.ones_like(pair_norms))
    cos = (cosines.sum() - cosines.diagonal().sum()) / (n * (n - 1))
    cos = cos.clamp(0.0, 1.0)
    return (n * cos / (1 + (n - 1) * cos)).float()


def _prepare_gram(stream: TensorStream, params: Mapping[str, Any], n_tasks: int) -> dict[str, Any]:
    """Statistics pass over the row blocks of one tensor: its task Gram matrix (Model Stock's angle)."""
    gram = TaskGram()
    for _, _, deltas in stream():
        gram.add(deltas)
    return {"gram": gram.result()}


@register(
    "model_stock",
    summary="interpolate the expert average towards the base by the angle between experts",
    reference="Jang et al., Model Stock, ECCV 2024",
    uses_weights=False,
    elementwise=True,  # given the tensor's Gram matrix
    tensor_prepare=_prepare_gram,
)
def model_stock(
    base: torch.Tensor, deltas: torch.Tensor, params: Mapping[str, Any], ctx: TensorContext
) -> torch.Tensor:
    t = model_stock_ratio(deltas, None if ctx.tensor_stats is None else ctx.tensor_stats["gram"])
    ctx.record("model_stock_t", float(t))
    return deltas.mean(0).mul_(t)
