"""Each merge method against its paper's equations, on hand-made tensors."""

from __future__ import annotations

import math

import pytest
import torch

from resm_core.errors import ConfigError
from resm_core.merge.api import TensorContext
from resm_core.merge.averaging import TaskGram, model_stock_ratio
from resm_core.merge.catalogue import all_methods, get_method
from resm_core.merge.draws import uniform
from resm_core.merge.resm import downweight_outliers, owl_fractions, robust_scale, task_weights
from resm_core.merge.sparsify import exact_top_k, magprune, model_wide_thresholds, ties_for, top_mask
from resm_core.merge.svd import energy_rank, polar_factor


def run(
    method: str,
    deltas: torch.Tensor,
    base: torch.Tensor | None = None,
    stats=None,
    name="w",
    seed=0,
    weights=None,
    **params,
):
    m = get_method(method)
    resolved = m.resolve(params, deltas.shape[0], weights)
    ctx = TensorContext(name=name, seed=seed, stats=stats or {})
    base = torch.zeros(deltas.shape[1:]) if base is None else base
    return m.fn(base, deltas, resolved, ctx), ctx


def test_catalogue_has_the_paper_benchmark_and_resm():
    assert set(all_methods()) == {
        "linear",
        "task_arithmetic",
        "ties",
        "dare_linear",
        "dare_ties",
        "breadcrumbs",
        "breadcrumbs_ties",
        "della",
        "della_linear",
        "consensus",
        "model_stock",
        "tsv_m",
        "iso_c",
        "resm",
    }
    with pytest.raises(ConfigError, match="della_ties' was renamed.*use della"):
        get_method("della_ties")


def test_linear_is_weighted_average():
    d = torch.tensor([[1.0, 2.0], [3.0, 6.0]])
    out, _ = run("linear", d, weights=[1.0, 3.0])
    assert torch.allclose(out, (1 * d[0] + 3 * d[1]) / 4)


def test_task_arithmetic_scales_the_weighted_sum():
    d = torch.tensor([[1.0, -2.0], [3.0, 1.0]])
    out, _ = run("task_arithmetic", d, scale=0.5, weights=[1.0, 2.0])
    assert torch.allclose(out, 0.5 * (d[0] + 2 * d[1]))


def test_ties_sign_election_and_disjoint_mean():
    d = torch.tensor(
        [
            [1.0, -2.0, 3.0, 0.1, 0.5, -0.25, 0.0],
            [-1.0, -1.0, 2.0, 0.2, -0.5, 0.25, 0.0],
            [2.0, 0.5, -4.0, 0.0, 0.0, 0.0, 0.0],
        ]
    )
    out, _ = run("ties", d, density=1.0, scale=1.0)
    # col0: mass +2 -> mean(1, 2); col1: mass -2.5 -> mean(-2, -1); col2: mass +1 -> mean(3, 2);
    # col3: zeros do not vote -> mean(0.1, 0.2); col4, col5: the mass is exactly 0, the sign is +1 (mergekit,
    # PEFT) -> the positive task survives; col6: nobody voted -> 0
    assert torch.allclose(out, torch.tensor([1.5, -1.5, 2.5, 0.15, 0.5, 0.25, 0.0]))


def test_ties_zero_mass_with_weights_elects_plus_one():
    d = torch.tensor([[1.0, -3.0], [-2.0, 1.0]])
    out, _ = run("ties", d, density=1.0, scale=1.0, weights=[2.0, 1.0])
    # weighted mass: col0 2 - 2 = 0 -> +1 -> task 0 alone: 2 * 1 / 2; col1 -6 + 1 < 0 -> task 0: -6 / 2
    assert torch.allclose(out, torch.tensor([1.0, -3.0]))


def test_ties_trims_each_task_to_its_top_k():
    d = torch.tensor([[4.0, -3.0, 2.0, 1.0], [1.0, 2.0, -3.0, 4.0]])
    out, _ = run("ties", d, density=0.5, scale=1.0)
    # task0 keeps 4, -3; task1 keeps -3, 4 -> no overlap, each entry is its single survivor
    assert torch.allclose(out, torch.tensor([4.0, -3.0, -3.0, 4.0]))


@pytest.mark.parametrize("density", [0.1, 0.5, 0.9])
def test_dare_keeps_each_entry_with_probability_density_and_rescales_it(density):
    """Over 3 x 200,000 entries the kept fraction is within 4.5 standard errors of the density, per task
    and for pairs of tasks (independent streams: both kept with probability density^2); survivors are
    the delta / density, so the expectation of every entry is unchanged."""
    n = 200_000
    masks = TensorContext("w", seed=0).uniform((3, n)) < density  # what DARE keeps of tensor "w"
    err = 4.5 * math.sqrt(density * (1 - density) / n)
    for t in range(3):
        assert abs(masks[t].float().mean().item() - density) < err, t
    both = (masks[0] & masks[1]).float().mean().item()
    assert abs(both - density**2) < 4.5 * math.sqrt(density**2 * (1 - density**2) / n)
    single, _ = run("dare_linear", torch.full((1, n), 0.7), density=density, scale=1.0)
    survivors = single[single != 0]
    assert torch.allclose(survivors, torch.tensor(0.7 / density)) and torch.equal(single != 0, masks[0])
    assert abs(single.mean().item() - 0.7) < 4.5 * 0.7 * math.sqrt((1 - density) / density / n)


def test_any_rows_of_the_draws_equal_those_rows_of_the_whole_tensor_drawn_in_any_order():
    """Counter-based draws: a block starting mid-stream (rows whose entries are not a multiple of the
    generator's 8 draws per step) gives the same numbers as the whole tensor's draws at those rows."""
    shape = (37, 13)
    whole = uniform(5, "model.layers.0.w", 3, shape)
    for start, stop in [(30, 37), (0, 1), (11, 29), (1, 2), (36, 37)]:  # out of order
        assert torch.equal(uniform(5, "model.layers.0.w", 3, (stop - start, 13), first_row=start), whole[:, start:stop])
    assert torch.equal(TensorContext("model.layers.0.w", seed=5).uniform((3, *shape)), whole)
    assert not torch.equal(uniform(6, "model.layers.0.w", 3, shape), whole)  # another seed
    assert not torch.equal(uniform(5, "model.layers.1.w", 3, shape), whole)  # another tensor
    assert not torch.equal(whole[0], whole[1]) and whole.min() >= 0 and whole.max() < 1


def test_random_methods_are_reproducible_per_seed():
    d = torch.randn(3, 64, 32, generator=torch.Generator().manual_seed(0))
    for method in ("dare_linear", "dare_ties", "della", "della_linear"):
        a, _ = run(method, d, seed=5)
        b, _ = run(method, d, seed=5)
        c, _ = run(method, d, seed=6)
        assert torch.equal(a, b), method
        assert not torch.equal(a, c), method


def test_breadcrumbs_drops_both_tails():
    d = torch.arange(1.0, 11.0).unsqueeze(0)  # magnitudes 1..10
    out, _ = run("breadcrumbs", d, density=0.5, gamma=0.2, scale=1.0)
    # top 20% (10, 9) removed as outliers, next 50% (8..4) kept, small tail (3, 2, 1) removed
    assert out.tolist() == [0, 0, 0, 4, 5, 6, 7, 8, 0, 0]


def test_della_keep_probability_spans_density_plus_minus_epsilon_and_expectation_holds():
    row = torch.linspace(0.01, 1.0, 201).repeat(1, 1, 1)  # [T=1, 1 row, 201]
    kept = torch.zeros(201)
    mean = torch.zeros(201)
    trials = 2000
    for s in range(trials):
        out = magprune(
            row, density=0.5, epsilon=0.2, uniform=torch.rand(row.shape, generator=torch.Generator().manual_seed(s))
        )
        kept += (out[0, 0] != 0).float()
        mean += out[0, 0]
    kept /= trials
    mean /= trials
    # mergekit's spread: p runs linearly from density - epsilon (0.3) to density + epsilon (0.7)
    expected = torch.linspace(0.3, 0.7, 201)
    assert kept[:20].mean().item() == pytest.approx(expected[:20].mean().item(), abs=0.02)
    assert kept[-20:].mean().item() == pytest.approx(expected[-20:].mean().item(), abs=0.02)
    assert kept.mean().item() == pytest.approx(0.5, abs=0.01)
    assert torch.allclose(mean, row[0, 0], rtol=0.25)


def test_della_ranks_ties_by_position_as_a_stable_sort_does():
    """Equal magnitudes rank by position, the earlier entry lower: the keep probability of each entry is
    density - eps + 2 eps * rank / (n - 1) with that rank, whatever the sort does with equal keys."""
    rng = torch.Generator().manual_seed(0)
    row = torch.randint(-4, 5, (1, 1, 300), generator=rng).float()  # 9 values: every magnitude ties
    draws = torch.full(row.shape, 0.0)  # every entry kept: out = row / p_keep shows each p
    out = magprune(row, density=0.5, epsilon=0.2, uniform=draws)
    mags = row[0, 0].abs()
    ranks = torch.empty(300)
    ranks[sorted(range(300), key=lambda i: (mags[i].item(), i))] = torch.arange(300.0)  # by magnitude, then position
    expected = (0.3 + 0.4 * ranks / 299).clamp(min=1e-6)
    assert torch.allclose(row[0, 0] / expected, out[0, 0], rtol=1e-6)
    again = magprune(row.clone(), density=0.5, epsilon=0.2, uniform=draws)
    assert torch.equal(again, out)


def test_della_elects_signs_and_della_linear_sums():
    """The field's names: `della` is DELLA's drop-elect-fuse, `della_linear` the summing variant."""
    from resm_core.merge.ties_family import ties_combine

    d = torch.randn(3, 16, 24, generator=torch.Generator().manual_seed(9))
    params = {"density": 0.4, "epsilon": 0.1}
    elected, ctx = run("della", d, name="layer.w", seed=3, scale=1.0, **params)
    pruned = magprune(d, 0.4, 0.1, TensorContext("layer.w", seed=3).uniform(d.shape))
    assert torch.allclose(elected, ties_combine(pruned.clone(), {"weights": [1.0] * 3, "scale": 1.0}))
    summed, _ = run("della_linear", d, name="layer.w", seed=3, scale=0.5, **params)
    assert torch.allclose(summed, 0.5 * pruned.sum(0), atol=1e-6)
    assert not torch.allclose(elected, 2 * summed, atol=1e-3)


def test_model_stock_ratio_from_the_angle_between_experts():
    theta = math.radians(60)
    d = torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)]])
    cos = math.cos(theta)
    assert model_stock_ratio(d).item() == pytest.approx(2 * cos / (1 + cos))
    out, ctx = run("model_stock", d)
    assert torch.allclose(out, (2 * cos / (1 + cos)) * d.mean(0))
    assert ctx.diagnostics["model_stock_t"] == pytest.approx(2 / 3)
    with pytest.raises(ConfigError, match="takes no per-model weights"):
        run("model_stock", d, weights=[1.0, 2.0])


def test_model_stock_counts_a_zero_expert_as_cosine_zero():
    """A LoRA expert that does not touch a tensor has a zero delta there; as in mergekit its pairs
    count as cos = 0, and the others still move the tensor (it used to stay at the base)."""
    theta = math.radians(60)
    d = torch.tensor([[1.0, 0.0], [math.cos(theta), math.sin(theta)], [0.0, 0.0]])
    cos = (0.5 + 0.0 + 0.0) / 3  # mean over the three pairs
    t = 3 * cos / (1 + 2 * cos)
    out, ctx = run("model_stock", d)
    assert ctx.diagnostics["model_stock_t"] == pytest.approx(t)
    assert torch.allclose(out, t * d.mean(0))
    tiny = d * 1e-5  # small deltas keep their cosine (mergekit floors |a||b| at 1e-6)
    assert model_stock_ratio(tiny).item() == pytest.approx(t, rel=1e-5)
    assert model_stock_ratio(torch.zeros(3, 4)).item() == 0.0


def test_model_stock_gram_is_the_same_from_any_row_blocks():
    """Model Stock's angle comes from the Gram matrix of the whole tensor's task vectors, which a merge in row
    blocks or pieces gathers slice by slice: any split (slices shorter and longer than a group of GRAM_ENTRIES,
    mid-row, a group cut in three) gives the whole tensor's Gram matrix and t bit for bit, and the Gram
    matrix is the deltas' own."""
    deltas = torch.randn(3, 1000, 600, generator=torch.Generator().manual_seed(0))  # 2.3 groups per task
    whole = TaskGram().add(deltas).result()
    exact = deltas.reshape(3, -1).double() @ deltas.reshape(3, -1).double().T
    assert torch.allclose(whole, exact, rtol=0, atol=1e-6 * float(exact.diagonal().max()))
    flat = deltas.reshape(3, -1)
    for cuts in ([0, 600_000], [0, 7, 100_000, 100_001, 500_000, 600_000], [0, 2**18, 2**19, 600_000], [0, 9e4]):
        cuts = [int(c) for c in cuts] + ([] if cuts[-1] == 600_000 else [600_000])
        gram = TaskGram()
        for start, stop in zip(cuts, cuts[1:]):
            gram.add(flat[:, start:stop].clone())
        blocked = gram.result()
        assert torch.equal(blocked, whole), cuts
        assert torch.equal(model_stock_ratio(deltas, blocked), model_stock_ratio(deltas))


def test_consensus_keeps_entries_claimed_by_at_least_k_tall_masks():
    d = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 5.0]])
    # mtl = [3, 1, 5]. masks (lambda=0.5): |tau_t| >= 0.5 |mtl - tau_t|
    # col0: 1 >= 1 for all -> 3 tasks; col1: task0 1 >= 0 yes, task1 0 >= 0.5 no, task2 no -> 1;
    # col2: only task2 (5 >= 0) -> 1 ("selfish").
    out, ctx = run("consensus", d, mask_lambda=0.5, min_agree=2, scale=1.0)
    assert out.tolist() == [3.0, 0.0, 0.0]
    assert ctx.diagnostics["consensus_kept_fraction"] == pytest.approx(1 / 3)


def test_consensus_counts_its_kept_fraction_over_the_pieces_of_a_tensor():
    """Merged in pieces (elementwise), Consensus gives the whole tensor's entries and kept fraction."""
    d = torch.randn(3, 40, 30, generator=torch.Generator().manual_seed(1))
    whole, ctx = run("consensus", d)
    method = get_method("consensus")
    params = method.resolve({}, 3)
    shared = TensorContext(name="w")
    flat = d.reshape(3, -1)
    pieces = [method.fn(None, flat[:, a:b], params, shared) for a, b in [(0, 7), (7, 1000), (1000, 1200)]]
    assert torch.equal(torch.cat(pieces).view(40, 30), whole)
    assert shared.diagnostics["consensus_kept_fraction"] == ctx.diagnostics["consensus_kept_fraction"]
    assert shared.diagnostics["consensus_entries"] == 1200


def test_consensus_masks_the_weighted_task_vectors():
    d = torch.tensor([[1.0], [1.0]])
    # weights [1, 4]: mtl = 5. TALL masks of the weighted tasks with lambda 1: task0 1 >= |5 - 1| no,
    # task1 4 >= |5 - 4| yes -> claimed once, kept with k = 1. (Comparing the unweighted task vectors
    # with the weighted sum, task1 would have been 1 >= |5 - 1|, no, and the entry removed.)
    out, _ = run("consensus", d, mask_lambda=1.0, min_agree=1, scale=1.0, weights=[1.0, 4.0])
    assert out.tolist() == [5.0]
    out, _ = run("consensus", d, mask_lambda=5.0, min_agree=1, scale=1.0, weights=[1.0, 4.0])
    assert out.tolist() == [0.0]  # 4 >= 5 x 1 fails too
    # weight 0 silences a task: its mask is |0| >= lambda |mtl| (false), so it claims nothing
    out, _ = run(
        "consensus",
        torch.tensor([[1.0], [1.0], [1.0]]),
        mask_lambda=0.5,
        min_agree=3,
        scale=1.0,
        weights=[1.0, 1.0, 0.0],
    )
    assert out.tolist() == [0.0]


def test_iso_c_flattens_the_spectrum_of_the_sum():
    d = torch.randn(2, 12, 8, generator=torch.Generator().manual_seed(1))
    out, _ = run("iso_c", d, scale=1.0)
    s_sum = torch.linalg.svdvals(d.sum(0))
    s_out = torch.linalg.svdvals(out)
    assert torch.allclose(s_out, torch.full_like(s_out, s_sum.mean().item()), atol=1e-4)
    # same singular subspaces as the sum
    u, _, vh = torch.linalg.svd(d.sum(0), full_matrices=False)
    assert torch.allclose(out, s_sum.mean() * u @ vh, atol=1e-5)


def test_polar_factor_is_orthonormal_and_equals_scipy():
    import scipy.linalg

    g = torch.Generator().manual_seed(2)
    for shape in ((30, 9), (9, 30), (12, 12)):
        a = torch.randn(*shape, generator=g, dtype=torch.float64)
        p = polar_factor(a)
        small = min(shape)
        gram = p.T @ p if shape[0] >= shape[1] else p @ p.T
        assert torch.allclose(gram, torch.eye(small, dtype=torch.float64), atol=1e-10)
        if shape[0] >= shape[1]:  # scipy's right polar decomposition a = u p, u with orthonormal columns
            u, _ = scipy.linalg.polar(a.numpy(), side="right")
        else:  # a wide matrix: the factor of a^T, transposed
            u = scipy.linalg.polar(a.T.numpy(), side="right")[0].T
        assert torch.allclose(p, torch.from_numpy(u), atol=1e-10), shape


def test_gram_polar_factor_equals_the_svd_one_and_falls_back_when_singular():
    g = torch.Generator().manual_seed(12)
    for shape in ((40, 12), (12, 40)):
        a = torch.randn(*shape, generator=g)
        assert torch.allclose(polar_factor(a, "gram"), polar_factor(a, "svd"), atol=1e-5)
    singular = torch.randn(30, 4, generator=g)
    singular[:, 3] = singular[:, 2]  # rank 3: the Gram route would divide by ~0
    p = polar_factor(singular, "gram")
    assert torch.isfinite(p).all() and torch.allclose(p, polar_factor(singular, "svd"), atol=1e-5)


@pytest.mark.parametrize("failing", [("float32",), ("float32", "float64")])
def test_svd_that_does_not_converge_is_retried_in_float64_then_with_gesvd(monkeypatch, failing):
    """LAPACK gesdd can fail on matrices with many repeated or zero singular values (seen on RESM's
    concatenated V^T of LoRA experts); the factors must still come back, in the input's dtype."""
    from resm_core.merge import svd as svd_module

    real_svd = torch.linalg.svd

    def flaky(matrix, full_matrices=True):
        if str(matrix.dtype).removeprefix("torch.") in failing:
            raise torch.linalg.LinAlgError("linalg.svd: The algorithm failed to converge")
        return real_svd(matrix, full_matrices=full_matrices)

    monkeypatch.setattr(torch.linalg, "svd", flaky)
    g = torch.Generator().manual_seed(5)
    a = torch.cat([torch.linalg.qr(torch.randn(12, 6, generator=g)).Q.T] * 2)  # 12 x 12: every row twice
    u, s, vh = svd_module.robust_svd(a)
    assert u.dtype == s.dtype == vh.dtype == torch.float32
    assert torch.allclose((u * s) @ vh, a, atol=1e-5)
    assert torch.allclose(u.T @ u, torch.eye(12), atol=1e-5) and torch.allclose(vh @ vh.T, torch.eye(12), atol=1e-5)
    import scipy.linalg

    full_rank = torch.randn(12, 8, generator=g)
    expected = scipy.linalg.polar(full_rank.double().numpy())[0]
    assert torch.allclose(polar_factor(full_rank).double(), torch.from_numpy(expected), atol=1e-5)


def test_tsv_m_single_task_full_rank_returns_the_delta():
    d = torch.randn(1, 10, 7, generator=torch.Generator().manual_seed(3))
    out, ctx = run("tsv_m", d, scale=1.0)
    assert ctx.diagnostics["rank_per_task"] == [7]
    assert torch.allclose(out, d[0], atol=1e-5)


def test_tsv_m_keeps_floor_r_over_t_per_task_and_sums_orthogonal_tasks():
    g = torch.Generator().manual_seed(4)
    q_left = torch.linalg.qr(torch.randn(12, 12, generator=g)).Q
    q_right = torch.linalg.qr(torch.randn(9, 9, generator=g)).Q
    # three tasks in mutually orthogonal rank-3 subspaces (r = 9, floor(9/3) = 3 each)
    deltas = torch.stack(
        [
            q_left[:, 3 * t : 3 * t + 3]
            @ torch.diag(torch.tensor([3.0, 2.0, 1.0]) * (t + 1))
            @ q_right[:, 3 * t : 3 * t + 3].T
            for t in range(3)
        ]
    )
    out, ctx = run("tsv_m", deltas, scale=1.0)
    assert ctx.diagnostics["rank_per_task"] == [3, 3, 3]
    assert torch.allclose(out, deltas.sum(0), atol=1e-5)
    # weights scale each task's block: sum_t w_t tau_t
    out, _ = run("tsv_m", deltas, scale=1.0, weights=[0.5, 2.0, -1.0])
    assert torch.allclose(out, 0.5 * deltas[0] + 2 * deltas[1] - deltas[2], atol=1e-5)


def test_tsv_m_on_interfering_tasks_has_orthonormal_factors_and_keeps_the_singular_values():
    """U and V^T of the merge are polar factors, so the merged matrix's singular values are
    exactly the kept ones, the top floor(r/T) of each task."""
    noisy = torch.randn(3, 12, 9, generator=torch.Generator().manual_seed(14), dtype=torch.float64)
    merged, _ = run("tsv_m", noisy, scale=1.0)
    kept = torch.cat([torch.linalg.svdvals(noisy[t])[:3] for t in range(3)])
    assert torch.allclose(torch.linalg.svdvals(merged), kept.sort(descending=True).values, atol=1e-10)
    # the reconstruction from the same factors without the polar step would not keep them
    naive = sum(
        (lambda u, s, vh: (u[:, :3] * s[:3]) @ vh[:3])(*torch.linalg.svd(noisy[t], full_matrices=False))
        for t in range(3)
    )
    assert not torch.allclose(torch.linalg.svdvals(naive), kept.sort(descending=True).values, atol=1e-3)


@pytest.mark.parametrize("method", ["tsv_m", "iso_c", "resm"])
def test_svd_family_one_dimensional_tensors_take_the_mean_of_weighted_deltas(method):
    d = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    out, _ = run(method, d, scale=1.0)
    assert torch.allclose(out, d.mean(0))
    out, _ = run(method, d, scale=1.0, weights=[1.0, 3.0])
    assert torch.allclose(out, (d[0] + 3 * d[1]) / 2)


# -- RESM ----------------------------------------------------------------------------------------


def _resm_inputs(seed=5):
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(3, 48, 32, generator=g) * 0.01
    d[0, 0, 0] = 1.0  # outliers, more of them in task 0
    d[0, 5, 7] = -0.8
    d[1, 3, 3] = 0.5
    return d


def test_resm_equals_tsv_m_without_its_components():
    d = _resm_inputs()
    ref, _ = run("tsv_m", d)
    for m in (math.inf, 5.0):
        out, _ = run(
            "resm", d, outlier_m=m, outlier_weighting=(m == math.inf), task_reweighting=False, rank_rule="fixed"
        )
        assert torch.allclose(out, ref, atol=1e-6)


def test_resm_outlier_weighting_with_gamma_one_bounds_entries():
    d = _resm_inputs()[0]
    for kind in ("mean", "mad"):
        bound = 3.0 * robust_scale(d, kind)
        w = downweight_outliers(d, 3.0, kind, 1.0)
        assert w.abs().max() <= bound * (1 + 1e-6)
        untouched = d.abs() <= bound
        assert torch.equal(w[untouched], d[untouched])


def test_resm_keeps_the_ranks_each_rule_asks_for():
    d = _resm_inputs()  # 3 tasks of 48 x 32: r = 32, at most floor(32 / 3) = 10 components per task
    for rule, extra, want in (
        ("fixed", {"rank_fraction": 0.25}, [8, 8, 8]),  # floor(0.25 * 32)
        ("fixed", {"rank_fraction": 0.9}, [10, 10, 10]),  # 28, capped at 10
        ("owl", {}, [6, 6, 6]),
    ):  # the layer's fraction 0.2: floor(6.4)
        _, ctx = run("resm", d, rank_rule=rule, stats={"layer_rank_fraction": {"other": 0.2}}, **extra)
        assert ctx.diagnostics["rank_per_task"] == want, (rule, extra)
    # energy: singular values 3, 2, 1 hold energy 9, 4, 1 of 14; 60% needs one, 90% needs two
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(48, 3, generator=g))
    v, _ = torch.linalg.qr(torch.randn(32, 3, generator=g))
    spread = (u * torch.tensor([3.0, 2.0, 1.0])) @ v.T
    for eta, want in ((0.6, [1, 1]), (0.9, [2, 2])):
        _, ctx = run(
            "resm", torch.stack([spread, spread.flip(0)]), rank_rule="energy", energy_eta=eta, outlier_weighting=False
        )
        assert ctx.diagnostics["rank_per_task"] == want, eta


def test_resm_each_switch_changes_the_output():
    d = _resm_inputs()
    stats = {"layer_rank_fraction": {"other": 0.2}}
    default, _ = run("resm", d, rank_rule="fixed")
    for change in (
        {"outlier_weighting": False},
        {"task_reweighting": False},
        {"rank_rule": "energy", "energy_eta": 0.3},
        {"outlier_scale": "mad"},
        {"outlier_gamma": 0.5},
    ):
        out, _ = run("resm", d, **{"rank_rule": "fixed", **change}, stats=stats)
        assert not torch.allclose(out, default, atol=1e-6), change
    owl, _ = run("resm", d, rank_rule="owl", stats=stats)
    assert not torch.allclose(owl, default, atol=1e-6)


def test_resm_task_weights_down_weight_outlier_heavy_tasks():
    w = task_weights([200, 100, 100], power=1.0)
    assert sum(w) / 3 == pytest.approx(1.0)
    assert w[0] < 0.7 < 1.1 < w[1]
    assert w[1] == pytest.approx(w[2])
    # the pseudo-count: ((c + 25) / (mean + 25))^-1, then mean 1
    raw = [(c + 25) / (400 / 3 + 25) for c in (200, 100, 100)]
    inv = [1 / x for x in raw]
    assert w == pytest.approx([v / (sum(inv) / 3) for v in inv])
    assert task_weights([0, 0], 1.0) == [1.0, 1.0]
    assert task_weights([5, 80, 3], 0.0) == [1.0, 1.0, 1.0]


def test_resm_task_weights_are_bounded_and_never_vanish():
    """The old rule gave a task with no outliers a weight near 1e9 before normalising; the others vanished."""
    for counts in ([0, 40, 40], [0, 4000, 4000], [0, 0, 9], [0, 1, 1]):
        for kwargs in ({}, {"prior": 0.0}, {"power": 3.0}, {"bound": 1.5}):
            args = {"power": 1.0, **kwargs}
            w = task_weights(counts, **args)
            bound = kwargs.get("bound", 2.0)
            assert all(1 / bound - 1e-12 <= x <= bound + 1e-12 for x in w), (counts, kwargs, w)
            assert w[0] >= max(w[1:]), (counts, kwargs, w)  # fewest outliers, largest weight
    assert task_weights([0, 1, 1], 1.0) == pytest.approx([1.0, 1.0, 1.0], abs=0.03)  # noise-level counts


def test_resm_identical_experts_get_near_equal_weights():
    """Three statistically identical experts on an MLP-sized matrix (576 x 1536, SmolLM2's shape): their
    outlier counts differ only by counting noise, and the weights stay within [0.8, 1.25]."""
    from resm_core.merge.resm import outlier_count

    for seed in range(4):
        d = torch.randn(3, 576, 1536, generator=torch.Generator().manual_seed(100 + seed))
        counts = [outlier_count(d[t], 5.0, "mean") for t in range(3)]
        w = task_weights(counts, 1.0)
        assert all(0.8 <= x <= 1.25 for x in w), (counts, w)
    _, ctx = run("resm", d, rank_rule="fixed", svd="lowrank")  # the merge records the weights it used
    assert ctx.diagnostics["task_weights"] == pytest.approx(task_weights(counts, 1.0), abs=1e-6)
    assert all(0.8 <= x <= 1.25 for x in ctx.diagnostics["task_weights"])


def test_owl_fractions_follow_outlier_zscores_within_lambda():
    fr = owl_fractions({"a": 0.01, "b": 0.02, "c": 0.03}, center=0.25, lam=0.05)
    assert fr["a"] < fr["b"] < fr["c"]
    assert fr["b"] == pytest.approx(0.25)
    assert all(0.2 - 1e-12 <= v <= 0.3 + 1e-12 for v in fr.values())


def test_energy_rank():
    s = torch.tensor([3.0, 2.0, 1.0])  # energies 9, 4, 1 of 14
    assert energy_rank(s, 9 / 14) == 1
    assert energy_rank(s, 0.9) == 2
    assert energy_rank(s, 1.0) == 3


# -- model-wide thresholds -----------------------------------------------------------------------


def _reference_top(flat: torch.Tensor, k: int) -> torch.Tensor:
    """Exactly k largest per row, ties to the lower index (a stable descending sort)."""
    mask = torch.zeros_like(flat, dtype=torch.bool)
    for t in range(flat.shape[0]):
        order = torch.sort(-flat[t], stable=True).indices[:k]
        mask[t, order] = True
    return mask


def test_model_wide_top_k_is_exact_with_ties_in_stream_order():
    g = torch.Generator().manual_seed(7)
    chunks = [
        ("a", torch.randn(2, 100, generator=g) ** 3),
        ("b", torch.zeros(2, 50)),
        ("c", torch.randn(2, 7, 3, generator=g)),
    ]
    chunks[1][1][:, :30] = 0.5  # 30 tied entries in one tensor ...
    chunks[2][1][:, 0, :] = 0.5  # ... and 3 more in the next
    mags = [(n, c.abs()) for n, c in chunks]
    flat = torch.cat([m.reshape(2, -1) for _, m in mags], dim=1)
    fractions = [0.0, 0.01, 0.2, 0.5, 0.9, 1.0]
    stats = model_wide_thresholds(iter(mags), fractions, iter(mags), iter(mags))
    for j, f in enumerate(fractions):
        k = int(round(f * flat.shape[1]))
        got = torch.cat(
            [
                torch.stack(
                    [top_mask(m[t], stats["thresholds"][t, j], ties_for(stats, n, t, j)) for t in range(2)]
                ).reshape(2, -1)
                for n, m in mags
            ],
            dim=1,
        )
        assert (got.sum(1) == k).all(), f
        assert torch.equal(got, _reference_top(flat, k)), f


def test_per_tensor_top_k_keeps_exactly_k_among_bf16_like_ties():
    x = torch.tensor([[0.5, 0.25, 0.5, 0.25, 0.25, 0.0, 0.25, 0.5, 0.25, 0.25]])
    for f in (0.1, 0.3, 0.4, 0.5, 0.7, 1.0):
        k = int(round(f * 10))
        mask = exact_top_k(x[0], f)
        assert int(mask.sum()) == k
        assert torch.equal(mask, _reference_top(x, k)[0]), f


def test_ties_model_granularity_ranks_over_all_tensors():
    g = torch.Generator().manual_seed(8)
    a, b = torch.randn(2, 20, generator=g), 10 * torch.randn(2, 5, generator=g)
    m = get_method("ties")
    params = m.resolve({"density": 0.2, "granularity": "model"}, 2)
    stream = lambda: iter([("a", None, a), ("b", None, b)])  # noqa: E731
    stats = m.prepare(stream, params, 2)
    out_a = m.fn(torch.zeros(20), a, params, TensorContext("a", stats=stats))
    flat = torch.cat([a, b], dim=1).abs()
    keep = _reference_top(flat, 5)
    # the large tensor b takes most of the model-wide budget of 5 entries per task
    trimmed = a * keep[:, :20]
    assert torch.equal(out_a != 0, (trimmed != 0).any(0))


# -- parameter validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,params,n,message",
    [
        ("ties", {"density": 0.0}, 3, "density: 0.0 is outside"),
        ("ties", {"density": 1.5}, 3, "density: 1.5 is outside"),
        ("ties", {"densty": 0.5}, 3, "unknown parameter 'densty'; known: density, granularity, scale"),
        ("linear", {"density": 0.3}, 2, "linear takes no parameters"),
        ("ties", {"granularity": "row"}, 3, "not one of tensor, model"),
        ("breadcrumbs", {"density": 0.9, "gamma": 0.2}, 3, "density \\+ gamma"),
        ("della", {"density": 0.05, "epsilon": 0.2}, 3, "must stay in"),
        ("consensus", {"min_agree": 4}, 3, "min_agree = 4 exceeds"),
        ("resm", {"rank_rule": "magic"}, 3, "not one of fixed, owl, energy"),
        ("resm", {"outlier_m": "lots"}, 3, "expected a number"),
        ("tsv_m", {"rank_fraction": 0}, 3, "rank_fraction: 0.0 is outside"),
    ],
)
def test_bad_parameters_name_the_key(method, params, n, message):
    with pytest.raises(ConfigError, match=message):
        get_method(method).resolve(params, n)


def test_unknown_method_and_bad_weights():
    with pytest.raises(ConfigError, match="unknown merge method 'tiez'"):
        get_method("tiez")
    with pytest.raises(ConfigError, match="weights has 2 entries for 3 experts"):
        get_method("ties").resolve({}, 3, [1.0, 2.0])
    with pytest.raises(ConfigError, match="weights sum to zero"):
        get_method("linear").resolve({}, 2, [1.0, -1.0])


def test_inf_is_accepted_for_outlier_m():
    for text in ("inf", ".inf", float("inf")):
        assert get_method("resm").resolve({"outlier_m": text}, 3)["outlier_m"] == math.inf


def test_radix_threshold_equals_kthvalue_on_large_tensors():
    from resm_core.merge import sparsify

    g = torch.Generator().manual_seed(11)
    x = (torch.randn(2, sparsify.RADIX_MIN_NUMEL + 17, generator=g) ** 3).abs()
    x[:, :1000] = 0.25  # ties
    n = x.shape[1]
    for f in (0.001, 0.2, 0.5, 0.97, 1.0):
        k = sparsify.n_kept(f, n)
        assert torch.equal(sparsify.kth_largest(x, f), torch.kthvalue(x, n - k + 1, dim=1).values), f
        assert int(sparsify.exact_top_k(x[0], f).sum()) == k
