"""Per-tensor statistics of a task vector: how big, how sparse, how outlier-heavy, how low-rank.

These are the quantities RESM's design rests on (outlier ratios, sparsity, spectral concentration),
so they are tabulated for every expert before anything is merged.
"""

from __future__ import annotations

import math

import torch

from resm_core.checkpoint.names import layer_group


def tensor_stats(
    name: str,
    delta: torch.Tensor,
    base: torch.Tensor,
    *,
    tol: float,
    outlier_m: float,
    energy_top: float,
    spectrum: bool,
) -> dict:
    """One row of the statistics table. `energy_top` is the fraction of the rank whose singular
    values' share of the energy sum(s^2) is reported (2-D tensors, when `spectrum`)."""
    d = delta.float()
    a = d.abs()
    base_norm = float(base.float().norm())
    norm = float(d.norm())
    mean_abs = float(a.mean()) if d.numel() else 0.0
    row = {
        "tensor": name,
        "layer": layer_group(name),
        "shape": "x".join(map(str, d.shape)),
        "numel": d.numel(),
        "frobenius_norm": norm,
        "relative_norm": norm / base_norm if base_norm > 0 else math.nan,
        "sparsity": float((a <= tol).float().mean()),
        "outlier_ratio": float((a > outlier_m * mean_abs).float().mean()) if mean_abs > 0 else 0.0,
        "spectral_energy_top": math.nan,
    }
    if spectrum and d.dim() == 2 and norm > 0:
        s = torch.linalg.svdvals(d)
        k = max(1, math.ceil(energy_top * s.numel()))
        energy = s.double() ** 2
        row["spectral_energy_top"] = float(energy[:k].sum() / energy.sum())
    return row
