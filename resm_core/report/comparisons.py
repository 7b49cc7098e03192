"""The comparisons that answer "merge or mix?", each paired on shared test items, with a family-wise
correction where one question is asked several times:

- `merge_vs_mix`: per combo, the merge chosen on validation vs the mixture chosen on validation, on the
  combo's balance, its dims and their benchmarks (Holm across combos on balance);
- `method_vs_mix`: each merge method (its validation-best hyperparameters) vs that mixture, on balance
  (Holm over the methods of a combo);
- `expert_vs_base`: each expert vs the base on its own dimension, on validation and on test (Holm over
  the experts);
- `arm_vs_base`: each merge and mixture vs the base, on the combo's balance and on each dimension outside
  the combo (collateral change, never folded into balance).

A verdict is a winner, `equivalent` (the 90% interval inside +-margin) or `inconclusive`; what could
qualify it sits in columns beside it and never replaces it:
- `precondition`: did each arm whose training the row compares move what it trained (each expert of the
  combo its own dimension, the mixture each dimension of the combo), judged on validation items by an
  effect size: the one-sided 95% lower bound of its gain over the base exceeds `min_effect`, on a
  dimension where the base is not already within `min_effect` of the ceiling;
- `dominance` (merge-vs-mix rows): one arm at least as good on every dimension of the combo (no
  significant loss) and significantly better on one, or a `trade-off` (each significantly better on
  one), or none;
- `merge_candidates` / `mixture_candidates`: how many validation-chosen candidates each side had (a
  tuned side against an untuned one is not the same question as merge against mix);
- `a_runs` / `b_runs`: the training runs (seeds) behind each arm; with more than one the interval
  resamples runs, then items;
- `caveats`: what the intervals do not cover (one training run: conditional on that run) and unequal
  tuning budgets.
"""

from __future__ import annotations

import pandas as pd

from resm_core.data.schema import DIMS
from resm_core.grid import Arm, combo_dims
from resm_core.report.paired import (
    ALPHA,
    EQUIVALENCE_MARGIN,
    MIN_EFFECT,
    ArmItems,
    holm,
    mdd_factor,
    normalised_dims,
    paired,
    verdict,
)

COLUMNS = [
    "comparison",
    "combo",
    "split",
    "arm_a",
    "arm_b",
    "metric",
    "a_score",
    "b_score",
    "difference",
    "ci_low",
    "ci_high",
    "ci90_low",
    "ci90_high",
    "p_value",
    "p_adjusted",
    "n_items",
    "n_eff",
    "mdd_80",
    "a_runs",
    "b_runs",
    "verdict",
    "precondition",
    "dominance",
    "merge_candidates",
    "mixture_candidates",
    "caveats",
]

ONE_RUN = (
    "one training run per arm: the intervals are conditional on that run (they cover item sampling, not training "
    "randomness; training.seeds trains several)"
)


def runs_note(a_runs: int, b_runs: int) -> str | None:
    """What the interval covers, said where it is conditional on a single training run of a trained arm."""
    if a_runs > 1 and b_runs > 1:
        return None
    if a_runs == 1 and b_runs == 1:
        return ONE_RUN
    return (
        f"runs {a_runs} vs {b_runs}: the arm of one run is taken as it is (its training randomness is not in the "
        f"interval)"
    )


def _rows(comparison: str, combo: str, split: str, a: ArmItems, b: ArmItems, dims: list[str], seed: int = 0):
    return [
        {"comparison": comparison, "combo": combo, "split": split, "arm_a": a.arm, "arm_b": b.arm, **row}
        for row in paired(a, b, dims, seed=seed)
    ]


def _adjust(rows: list[dict], margin: float) -> None:
    """Holm within each family of rows; mdd_80 at the family's Holm alpha; then each row's verdict."""
    if rows:
        factor = mdd_factor(len(rows))
        for row, p in zip(rows, holm([r["p_value"] for r in rows])):
            row["p_adjusted"] = p
            row["mdd_80"] = factor * row["se"]
            row["verdict"] = verdict(row, row["arm_a"], row["arm_b"], margin=margin)


def dominance(rows: list[dict], dims: list[str]) -> str:
    """From one comparison's per-dimension rows (95% intervals): who is at least as good everywhere and
    better somewhere, or whether it is a trade-off."""
    by_dim = {r["metric"]: r for r in rows if r["metric"] in dims}
    a, b = rows[0]["arm_a"], rows[0]["arm_b"]
    a_better = [d for d, r in by_dim.items() if r["ci_low"] > 0]
    b_better = [d for d, r in by_dim.items() if r["ci_high"] < 0]
    if a_better and b_better:
        return f"trade-off: {a} better on {', '.join(a_better)}, {b} better on {', '.join(b_better)}"
    if a_better:
        return f"{a} dominates (better on {', '.join(a_better)}, no worse elsewhere)"
    if b_better:
        return f"{b} dominates (better on {', '.join(b_better)}, no worse elsewhere)"
    return "neither: no dimension differs at 95%"


def moved(arm: ArmItems, base: ArmItems, dim: str, min_effect: float) -> tuple[bool, str]:
    """Did `arm` gain at least `min_effect` over the base on `dim` (one-sided 95% lower bound, validation
    items)? A dimension where the base is within `min_effect` of 1 cannot show it: that is said, not met."""
    row = next(r for r in paired(arm, base, [dim]) if r["metric"] == dim)
    lower = row["ci90_low"]  # the 90% two-sided interval's lower end is the one-sided 95% bound
    if row["b_score"] > 1 - min_effect:
        return False, f"{arm.arm}: base at ceiling on {dim} ({row['b_score']:.3f})"
    if lower > min_effect:
        return True, f"{arm.arm}: {dim} +{row['difference']:.3f} (lower bound {lower:+.3f})"
    return False, (
        f"{arm.arm} did not move {dim} by {min_effect} (gain {row['difference']:+.3f}, lower bound {lower:+.3f})"
    )


def comparisons(
    selected: pd.DataFrame,
    val: dict[str, ArmItems],
    test: dict[str, ArmItems],
    seed: int = 0,
    margin: float = EQUIVALENCE_MARGIN,
    min_effect: float = MIN_EFFECT,
) -> tuple[pd.DataFrame, dict[str, bool]]:
    """All comparison rows, and which experts moved their own dimension on validation (the precondition)."""
    families: list[list[dict]] = []
    expert_moved: dict[str, bool] = {}
    checks: dict[tuple[str, str], tuple[bool, str]] = {}  # (arm, dim) -> precondition on validation

    def check(arm: str, dim: str) -> tuple[bool, str]:
        if (arm, dim) not in checks:
            if arm not in val or "base" not in val:
                checks[(arm, dim)] = (False, f"{arm}: no validation items to check {dim} against the base")
            else:
                checks[(arm, dim)] = moved(val[arm], val["base"], dim, min_effect)
        return checks[(arm, dim)]

    if "base" in test:
        for split, items in (("val", val), ("test", test)):
            fam = [
                r
                for dim in DIMS
                if Arm.expert(dim).path in items and "base" in items
                for r in _rows("expert_vs_base", dim, split, items[Arm.expert(dim).path], items["base"], [dim], seed)
                if r["metric"] == dim
            ]
            _adjust(fam, margin)
            for r in fam:
                ok, why = check(r["arm_a"], r["combo"])
                r["precondition"] = ("met: " if ok else "not met: ") + why
            families.append(fam)
            if split == "val":
                expert_moved = {r["combo"]: check(r["arm_a"], r["combo"])[0] for r in fam}
    headline, per_combo = [], []
    for combo in dict.fromkeys(selected["combo"]):
        dims = combo_dims(combo)
        sub = selected[selected["combo"] == combo]
        merge, mix = sub[(sub["kind"] == "merge") & sub["chosen"]], sub[(sub["kind"] == "mixture") & sub["chosen"]]
        if merge.empty or mix.empty:
            continue
        mix_arm = mix["arm"].iloc[0]
        n_mix = int((sub["kind"] == "mixture").sum())
        precondition = _precondition(combo, mix_arm, check) if "base" in val else "not checked: no base arm"
        rows = _rows("merge_vs_mix", combo, "test", test[merge["arm"].iloc[0]], test[mix_arm], dims, seed)
        dom = dominance(rows, dims)
        budget = {"merge_candidates": int((sub["kind"] == "merge").sum()), "mixture_candidates": n_mix}
        floor = _at_floor(test[merge["arm"].iloc[0]], test[mix_arm], dims, margin)
        for r in rows:
            r.update(precondition=precondition, dominance=dom, **budget, caveats=_caveats(budget, floor, r))
        headline += [r for r in rows if r["metric"] == "balance"]
        detail = [r for r in rows if r["metric"] != "balance"]
        _adjust(detail, margin)
        per_combo.append(detail)
        fam = []
        for _, cand in sub[(sub["kind"] == "merge") & sub["method_choice"]].iterrows():
            method_rows = _rows("method_vs_mix", combo, "test", test[cand["arm"]], test[mix_arm], dims, seed)
            budget = {
                "merge_candidates": int(((sub["kind"] == "merge") & (sub["family"] == cand["family"])).sum()),
                "mixture_candidates": n_mix,
            }
            for r in method_rows:
                if r["metric"] == "balance":
                    r.update(
                        precondition=precondition,
                        dominance=dominance(method_rows, dims),
                        **budget,
                        caveats=_caveats(budget, _at_floor(test[cand["arm"]], test[mix_arm], dims, margin), r),
                    )
                    fam.append(r)
        _adjust(fam, margin)
        per_combo.append(fam)
    _adjust(headline, margin)
    families += [headline, *per_combo]
    if "base" in test:
        balance, collateral = [], []
        for _, cand in selected.iterrows():
            dims = combo_dims(cand["combo"])
            balance += [
                r
                for r in _rows("arm_vs_base", cand["combo"], "test", test[cand["arm"]], test["base"], dims, seed)
                if r["metric"] == "balance"
            ]
            for other in [d for d in DIMS if d not in dims]:
                if any(dim == other for dim, _ in test[cand["arm"]].benchmarks.values()):
                    for r in _rows(
                        "arm_vs_base", cand["combo"], "test", test[cand["arm"]], test["base"], [other], seed
                    ):
                        if r["metric"] == other:
                            r["metric"] = f"collateral {other}"
                            collateral.append(r)
        _adjust(balance, margin)
        _adjust(collateral, margin)
        families += [balance, collateral]
    table = pd.DataFrame([r for fam in families for r in fam], columns=COLUMNS)
    for column in ("precondition", "dominance", "caveats"):
        table[column] = table[column].fillna("")
    return table, expert_moved


def _precondition(combo: str, mix_arm: str, check) -> str:
    """Met when every expert of the combo moved its own dimension and the mixture moved each of them."""
    dims = combo_dims(combo)
    results = [check(Arm.expert(d).path, d) for d in dims] + [check(mix_arm, d) for d in dims]
    failed = [why for ok, why in results if not ok]
    return "met" if not failed else "not met: " + "; ".join(failed)


def _at_floor(a: ArmItems, b: ArmItems, dims: list[str], margin: float) -> list[str]:
    """The dims on which both arms are within `margin` of chance: there balance sits at its floor for both,
    and "equivalent" means "neither is balanced", not "both are"."""
    na, nb = normalised_dims(a, dims), normalised_dims(b, dims)
    return [d for d in dims if na[d] <= margin and nb[d] <= margin]


def _caveats(budget: dict[str, int], floor: list[str], row: dict) -> str:
    runs = runs_note(row["a_runs"], row["b_runs"])
    notes = [runs] if runs else []
    if floor:
        notes.append(
            f"both arms at chance on {', '.join(floor)}: balance is at its floor for both (equal, not balanced)"
        )
    if budget["merge_candidates"] != budget["mixture_candidates"]:
        notes.append(
            f"unequal tuning: merge best of {budget['merge_candidates']} on validation, mixture best of "
            f"{budget['mixture_candidates']}"
        )
    return "; ".join(notes)


def power_line(table: pd.DataFrame) -> str:
    head = table[(table["comparison"] == "merge_vs_mix") & (table["metric"] == "balance")]
    if head.empty:
        return "no merge-vs-mix comparison (the grid needs a merge and a mixture per combo)"
    worst = head["mdd_80"].max()
    per = ", ".join(f"{c} {m:.3f}" for c, m in zip(head["combo"], head["mdd_80"]))
    runs = sorted(set(head["a_runs"]) | set(head["b_runs"]))
    covers = (
        ONE_RUN
        if runs == [1]
        else f"{'/'.join(map(str, runs))} training runs per arm: the intervals resample runs, then items"
    )
    return (
        f"this grid can detect differences of {worst:.3f} on balance (merge vs mix, 80% power, two-sided at the "
        f"Holm alpha {ALPHA}/{len(head)}, paired; per combo: {per}); {covers}"
    )
