"""Weights are checked for NaN and Inf before they are published: a merge or a training run that diverged
must fail by name, not leave a model that looks finished and generates garbage."""

from __future__ import annotations

from collections.abc import Iterable

import torch

from resm_core.errors import NumericError


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf. A sum is non-finite whenever an entry is (inf + x = inf, inf - inf = nan,
    nan + x = nan), so one reduction without a mask usually decides; an overflowing sum of
    finite values falls back to the elementwise test."""
    total = t.sum()
    return bool(torch.isfinite(total)) or bool(torch.isfinite(t).all())


def fits(t: torch.Tensor, dtype: torch.dtype, what: str) -> torch.Tensor:
    """`t` in `dtype` on the CPU, or a NumericError when a finite value overflows it (1e8 in float16 is Inf)."""
    out = t.to(dtype=dtype).cpu()
    if out.is_floating_point() and not all_finite(out):
        largest = float(t.abs().max())
        raise NumericError(
            f"{what} overflows {str(dtype).removeprefix('torch.')} (largest |value| {largest:.3g}, the dtype's "
            f"largest {torch.finfo(dtype).max:.3g}); nothing was written: choose a wider --out-dtype or smaller weights"
        )
    return out


def check_finite(tensors: Iterable[tuple[str, torch.Tensor]], what: str, hint: str) -> None:
    """A NumericError naming the first tensor with NaN or Inf, and how many there are."""
    bad = [name for name, t in tensors if t.is_floating_point() and not all_finite(t)]
    if bad:
        raise NumericError(
            f"{what}: {len(bad)} tensor(s) hold NaN or Inf, first {bad[0]}; nothing was written ({hint})"
        )
