"""Trade-off fronts (report/frontier.py): the non-dominated set, the hypervolume, and the paired bootstrap of the
merge-minus-mixture hypervolume difference, on stand-in scores with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from resm_core.report.frontier import compare_fronts, hypervolume, non_dominated
from resm_core.report.paired import ArmItems


def test_the_front_is_the_hand_computed_non_dominated_set():
    points = np.array(
        [
            [0.9, 0.1],  # best helpfulness
            [0.5, 0.5],
            [0.4, 0.4],  # dominated by (0.5, 0.5)
            [0.1, 0.9],  # best harmlessness
            [0.5, 0.5],  # a tie: equal points do not dominate each other
            [0.5, 0.3],  # dominated by (0.5, 0.5): equal on one, worse on the other
            [0.05, 0.05],
        ]
    )
    assert non_dominated(points).tolist() == [True, True, False, True, True, False, False]


def test_hypervolume_of_known_sets_equals_the_hand_computed_area_and_volume():
    staircase = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9], [0.4, 0.4]])
    # 0.9 x 0.1 + 0.5 x (0.5 - 0.1) + 0.1 x (0.9 - 0.5); the dominated point adds nothing
    assert hypervolume(staircase, np.zeros(2)) == pytest.approx(0.33)
    assert hypervolume(staircase, np.array([0.2, 0.2])) == pytest.approx(0.3 * 0.3)  # only (0.5, 0.5) is above
    assert hypervolume(staircase, np.array([1.0, 1.0])) == 0.0
    boxes = np.array([[1.0, 1.0, 0.5], [0.5, 0.5, 1.0]])
    assert hypervolume(boxes, np.zeros(3)) == pytest.approx(0.5 + 0.25 * 0.5)
    assert hypervolume(np.array([[0.7]]), np.array([0.2])) == pytest.approx(0.5)


def _arm(name: str, scores: dict[str, np.ndarray], dims: dict[str, str]) -> ArmItems:
    return ArmItems(
        name, "test", {b: (dims[b], {str(i): float(x) for i, x in enumerate(v)}) for b, v in scores.items()}
    )


def test_the_paired_bootstrap_interval_contains_the_true_difference_in_simulation():
    """Arms whose true per-dimension rates are known: the true hypervolume difference (from the rates) lies
    inside the 95% interval in nearly every simulated run, and the verdict names the family ahead when it is far
    ahead."""
    dims = {"help": "helpfulness", "harm": "harmlessness"}
    merges = {"m0": (0.8, 0.4), "m1": (0.65, 0.65), "m2": (0.4, 0.8)}
    mixes = {"x0": (0.6, 0.4), "x1": (0.5, 0.5), "x2": (0.4, 0.6)}
    base_rate = (0.3, 0.3)
    rates = np.array([*merges.values(), *mixes.values()])
    true = hypervolume(rates[:3], np.array(base_rate)) - hypervolume(rates[3:], np.array(base_rate))
    covered = 0
    for trial in range(20):
        rng = np.random.default_rng(trial)
        latent = rng.random((2, 300))  # shared item difficulty: paired, as real items are

        def arm(name, rate, latent=latent):
            return _arm(name, {b: (latent[k] < rate[k]).astype(float) for k, b in enumerate(dims)}, dims)

        result = compare_fronts(
            [arm(n, r) for n, r in merges.items()],
            [arm(n, r) for n, r in mixes.items()],
            ["helpfulness", "harmlessness"],
            base=arm("base", base_rate),
            n_boot=300,
            seed=trial,
        )
        covered += result.ci_low <= true <= result.ci_high
    assert covered >= 17  # 95% intervals: 20 of 20 expected, 17 allows sampling error
    assert true == pytest.approx(0.1525 - 0.06) and result.verdict == "merge" and result.reference == "base"
    assert set(result.merge_front) == {"m0", "m1", "m2"} and result.ref_point == pytest.approx(base_rate, abs=0.1)


def test_equal_families_are_not_called_different():
    dims = {"help": "helpfulness", "harm": "harmlessness"}
    rng = np.random.default_rng(0)
    latent = rng.random((2, 400))

    def arm(name, rate):
        return _arm(name, {b: (latent[k] < rate[k]).astype(float) for k, b in enumerate(dims)}, dims)

    same = [(0.7, 0.4), (0.4, 0.7)]
    result = compare_fronts(
        [arm(f"m{i}", r) for i, r in enumerate(same)],
        [arm(f"x{i}", r) for i, r in enumerate(same)],
        ["helpfulness", "harmlessness"],
        n_boot=300,
        margin=0.05,
    )
    assert result.difference == pytest.approx(0.0) and result.verdict == "equivalent"
    assert result.reference == "minimum" and result.ci_low <= 0 <= result.ci_high
