"""Merge methods on the experts this project actually merges: low-rank (LoRA) deltas, mostly-zero
bf16 deltas, and agreement with the reference implementations the field uses (PEFT, SciPy)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import scipy.linalg
import torch

from resm_core.merge.api import TensorContext
from resm_core.merge.catalogue import get_method
from resm_core.merge.resm import downweight_outliers, outlier_count, robust_scale
from resm_core.merge.sparsify import dare


def run(method: str, deltas: torch.Tensor, stats=None, name="w", seed=0, weights=None, **params):
    m = get_method(method)
    resolved = m.resolve(params, deltas.shape[0], weights)
    ctx = TensorContext(name=name, seed=seed, stats=stats or {})
    return m.fn(torch.zeros(deltas.shape[1:]), deltas, resolved, ctx), ctx


def lora_deltas(rank=4, m=64, n=48, tasks=3, seed=0, dtype=torch.float32) -> torch.Tensor:
    """Task vectors as LoRA experts make them: B_t A_t of rank `rank`, each task in its own subspace."""
    g = torch.Generator().manual_seed(seed)
    return torch.stack(
        [
            (torch.randn(m, rank, generator=g, dtype=dtype) @ torch.randn(rank, n, generator=g, dtype=dtype)) * 0.01
            for _ in range(tasks)
        ]
    )


def energy_outside(merged: torch.Tensor, deltas: torch.Tensor) -> float:
    """Share of the merged delta's energy outside the column space, or the row space, spanned by the
    experts' deltas (the larger of the two)."""
    cols = torch.linalg.svd(torch.cat(list(deltas), dim=1).double(), full_matrices=False)
    rows = torch.linalg.svd(torch.cat(list(deltas), dim=0).double(), full_matrices=False)
    k_col = int((1e-5 * cols.S[0] < cols.S).sum())  # float32 inputs: their null space sits near 1e-7
    k_row = int((1e-5 * rows.S[0] < rows.S).sum())
    assert k_col < merged.shape[0] and k_row < merged.shape[1], "the experts span everything: no test"
    q, p = cols.U[:, :k_col], rows.Vh[:k_row].T
    x = merged.double()
    total = float(x.pow(2).sum())
    return max(float((x - q @ (q.T @ x)).pow(2).sum()) / total, float((x - (x @ p) @ p.T).pow(2).sum()) / total)


OWL_STATS = {"layer_rank_fraction": {"other": 0.2}}
SVD_MERGES = [
    ("tsv_m", {}),
    ("tsv_m", {"svd": "lowrank", "svd_oversample": 4}),
    ("tsv_m", {"rank_fraction": 0.1}),
    ("iso_c", {}),
    ("resm", {"rank_rule": "fixed"}),
    ("resm", {"rank_rule": "owl"}),
    ("resm", {"rank_rule": "energy"}),
    ("resm", {"rank_rule": "owl", "svd": "lowrank", "svd_oversample": 4}),
    ("resm", {"rank_rule": "fixed", "outlier_scale": "mad", "outlier_m": 2.0}),
]


@pytest.mark.parametrize("method,params", SVD_MERGES, ids=lambda x: str(x))
def test_svd_merges_of_lora_experts_stay_in_the_experts_subspaces(method, params):
    """floor(r/T) = 16 components per task but rank-4 deltas: the 12 extra directions per task have zero
    singular values and are arbitrary. Kept, they entered the polar factor and rotated the real ones
    out of the experts' column space (20-22% of the energy for TSV-M, 81% for Iso-C)."""
    d = lora_deltas()
    merged, ctx = run(method, d, stats=OWL_STATS, **params)
    assert float(merged.norm()) > 0.1 * float(d.sum(0).norm())
    assert energy_outside(merged, d) < 1e-6, ctx.diagnostics
    if "rank_per_task" in ctx.diagnostics:
        assert all(k <= 4 for k in ctx.diagnostics["rank_per_task"])


@pytest.mark.parametrize("method", ["tsv_m", "iso_c"])
def test_rank_tol_zero_is_the_reference_and_leaves_the_subspace(method):
    """The reference behaviour, kept for whoever wants it, is what the tolerance fixes."""
    d = lora_deltas()
    merged, _ = run(method, d, rank_tol=0.0)
    assert energy_outside(merged, d) > 1e-3


def _polar(a: np.ndarray) -> np.ndarray:
    wide = a.shape[0] < a.shape[1]
    u = scipy.linalg.polar(a.T if wide else a)[0]
    return u.T if wide else u


def test_tsv_m_on_lora_experts_equals_tsv_m_truncated_at_the_true_rank():
    """An independent TSV-M (NumPy SVD, SciPy polar) that keeps each task's true rank, 4."""
    d = lora_deltas(dtype=torch.float64)
    us, ss, vhs = [], [], []
    for t in range(3):
        u, s, vh = np.linalg.svd(d[t].numpy(), full_matrices=False)
        us.append(u[:, :4]), ss.append(s[:4]), vhs.append(vh[:4])
    expected = _polar(np.concatenate(us, axis=1)) @ np.diag(np.concatenate(ss)) @ _polar(np.concatenate(vhs, axis=0))
    for params in ({}, {"svd": "lowrank", "svd_oversample": 4}):
        merged, ctx = run("tsv_m", d, **params)
        assert ctx.diagnostics["rank_per_task"] == [4, 4, 4]
        assert np.allclose(merged.numpy(), expected, atol=1e-9 * np.abs(expected).max() * 1e3), params


def test_full_rank_deltas_are_untouched_by_the_tolerance():
    d = torch.randn(3, 40, 30, generator=torch.Generator().manual_seed(1))
    for method in ("tsv_m", "iso_c", "resm"):
        a, _ = run(method, d, rank_rule="fixed") if method == "resm" else run(method, d)
        b, _ = run(method, d, rank_tol=0.0, rank_rule="fixed") if method == "resm" else run(method, d, rank_tol=0.0)
        assert torch.equal(a, b), method


def test_a_task_that_does_not_touch_a_matrix_contributes_nothing():
    """A LoRA expert that does not target this module: zero delta, rank 0, no arbitrary direction."""
    d = lora_deltas()
    d[2] = 0
    for method, params in SVD_MERGES:
        merged, ctx = run(method, d, stats=OWL_STATS, **params)
        assert energy_outside(merged, d[:2]) < 1e-6, (method, params)
        if "rank_per_task" in ctx.diagnostics:
            assert ctx.diagnostics["rank_per_task"][2] == 0
    zero, _ = run("tsv_m", torch.zeros(3, 8, 6))
    assert torch.equal(zero, torch.zeros(8, 6))


def test_iso_c_flattens_only_within_the_rank_of_the_sum():
    d = lora_deltas()
    merged, ctx = run("iso_c", d, scale=1.0)
    s_sum = torch.linalg.svdvals(d.sum(0))
    assert ctx.diagnostics["rank"] == 12
    s = torch.linalg.svdvals(merged)
    assert torch.allclose(s[:12], torch.full((12,), float(s_sum[:12].mean())), rtol=1e-4)
    assert float(s[12]) < 1e-6 * float(s[0])


def test_resm_outlier_weighting_of_a_lora_expert_stays_in_its_subspace_and_still_clips():
    d = lora_deltas(rank=4, m=96, n=80)
    d[0, 3, 5] += 0.5  # an outlier entry: the expert is no longer exactly low-rank there
    clean = lora_deltas(rank=4, m=96, n=80)
    clean[0] = d[0]
    merged, ctx = run("resm", d, rank_rule="fixed", task_reweighting=False)
    unclipped, _ = run("resm", d, rank_rule="fixed", task_reweighting=False, outlier_weighting=False)
    assert ctx.diagnostics["outlier_ratio"][0] > 0
    assert not torch.allclose(merged, unclipped, atol=1e-6)  # the clipping did something
    assert abs(float(merged[3, 5])) < abs(float(unclipped[3, 5]))


# -- the MAD scale on mostly-zero deltas ----------------------------------------------------------


def test_mad_scale_of_a_mostly_zero_delta_is_not_zero():
    """bf16 deltas are often mostly exact zeros: the MAD is then 0, and every nonzero entry counted as
    an outlier and was clipped to 0, erasing the task."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(64, 64, generator=g) * 0.01
    x[torch.rand(64, 64, generator=g) < 0.8] = 0.0  # 80% exact zeros
    scale = robust_scale(x, "mad")
    nonzero = x[x != 0]
    assert 0.7 * float(nonzero.std()) < float(scale) < 1.3 * float(nonzero.std())
    clipped = downweight_outliers(x, 5.0, "mad", 1.0)
    assert outlier_count(x, 5.0, "mad") == 0
    assert torch.equal(clipped, x)
    spikes = x.clone()
    spikes[0, 0] = 1.0  # a real outlier is still clipped
    assert float(downweight_outliers(spikes, 5.0, "mad", 1.0)[0, 0]) == pytest.approx(
        5 * float(robust_scale(spikes, "mad"))
    )
    merged, _ = run("resm", torch.stack([x, x * 0.5]), outlier_scale="mad", rank_rule="fixed")
    assert float(merged.norm()) > 0.5 * float(x.norm())


def test_mad_scale_when_every_nonzero_entry_has_the_same_magnitude():
    x = torch.zeros(10, 10)
    x[0, :4] = torch.tensor([0.25, -0.25, 0.25, 0.25])
    assert float(robust_scale(x, "mad")) > 0
    assert torch.equal(downweight_outliers(x, 2.0, "mad", 1.0), x)
    assert float(robust_scale(torch.zeros(3, 3), "mad")) == 0.0


# -- agreement with PEFT's merge_utils -------------------------------------------------------------

peft_merge = pytest.importorskip("peft.utils.merge_utils")


def _tasks(seed=21, shape=(20, 30)):
    return torch.randn(3, *shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).float()


@pytest.mark.parametrize("density", [0.2, 0.5, 0.9])
def test_ties_equals_peft(density):
    """Unit weights and the same density: entry for entry. (PEFT takes k = int(density n), resm
    round(density n): the densities here make them equal. With weights, PEFT divides by the count of
    agreeing tasks and elects on the unweighted vectors; resm, like mergekit, uses the weights in both.)"""
    d = _tasks()
    ours, _ = run("ties", d, density=density, scale=1.0)
    ref = peft_merge.ties(list(d), torch.ones(3), density)
    assert torch.allclose(ours, ref, atol=1e-7)


def test_magnitude_prune_equals_peft():
    """PEFT's magnitude_prune (trim, then weighted sum) is resm's breadcrumbs with no outlier removal."""
    d = _tasks(seed=22)
    ours, _ = run("breadcrumbs", d, density=0.3, gamma=0.0, scale=1.0)
    ref = peft_merge.magnitude_prune(list(d), torch.ones(3), 0.3)
    assert torch.allclose(ours, ref, atol=1e-7)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_equals_peft_with_the_same_mask(method, monkeypatch):
    d = _tasks(seed=23)
    density, name, seed = 0.3, "layer.w", 7
    masks = iter(list(dare(d, density, TensorContext(name, seed=seed).uniform(d.shape)) != 0))
    monkeypatch.setattr(peft_merge.torch, "bernoulli", lambda p: next(masks).to(p.dtype))
    ours, _ = run(method, d, name=name, seed=seed, density=density, scale=1.0)
    ref = getattr(peft_merge, method)(list(d), torch.ones(3), density)
    assert torch.allclose(ours, ref, atol=1e-6)


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_equals_mergekit_with_the_same_mask(method, monkeypatch):
    """mergekit 0.1.5's DARE with our mask injected. mergekit rescales the kept entries so that each task
    vector keeps its L1 norm (`rescale: true`, its default); resm by 1/density (the DARE paper, PEFT). So the
    injected mask carries 1/density and mergekit's norm rescaling is off: the rest (drop, election, weighted
    disjoint mean, lambda) must then agree entry for entry, with unequal weights."""
    from mergekit import sparsify as mk_sparsify
    from mergekit.merge_methods import registry

    d = _tasks(seed=24)
    base = torch.randn(d.shape[1:], generator=torch.Generator().manual_seed(25))
    density, name, seed, weights, scale = 0.3, "layer.w", 7, [1.0, 0.5, 2.0], 0.8
    kept = dare(d.clone(), density, TensorContext(name, seed=seed).uniform(d.shape)) != 0
    masks = iter(list(kept.float() * (1.0 / density)))
    monkeypatch.setattr(mk_sparsify.torch, "bernoulli", lambda p: next(masks).to(p.dtype))
    ours, _ = run(method, d, name=name, seed=seed, weights=weights, density=density, scale=scale)
    entries = [SimpleNamespace(id=t, tensor=base + d[t]) for t in range(3)]
    group = SimpleNamespace(base=SimpleNamespace(tensor=base), non_base=entries)
    parameters = {
        "density": dict(enumerate([density] * 3)),
        "weight": dict(enumerate(weights)),
        "rescale": False,
        "normalize": method == "dare_ties",
        "lambda": scale,
        "int8_mask": False,
    }
    theirs = registry.get(method).merge_group(group, **parameters) - base
    assert kept.any() and not kept.all()
    assert torch.allclose(ours, theirs, atol=1e-6), (ours - theirs).abs().max()
