"""The comparisons that answer "merge or mix?", each paired on shared test items, with a family-wise
correction where one question is asked several times:

- `merge_vs_mix`: per combo, the merge chosen on validation vs the mixture chosen on validation, on the
  combo's balance, its dims and their benchmarks (Holm across combos on balance);
- `method_vs_mix`: each merge method (its validation-best hyperparameters) vs that mixture, on balance
  (Holm over the methods of a combo);
- `expert_vs_base`: each expert vs the base on its own dimension, on validation and on test (Holm over
  the experts); an expert that does not beat the base on validation "did not move", and no merge-vs-mix
  verdict (chosen or per method) is drawn for a combo that contains it;
- `arm_vs_base`: each merge and mixture vs the base, on the combo's balance and on each dimension outside
  the combo (collateral change, never folded into balance).
"""

from __future__ import annotations

import pandas as pd

from resm_core.data.schema import DIMS
from resm_core.grid import Arm, combo_dims
from resm_core.report.paired import ArmItems, holm, paired, verdict

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
    "p_value",
    "p_adjusted",
    "n_items",
    "mdd_80",
    "verdict",
]


def _rows(
    comparison: str, combo: str, split: str, a: ArmItems, b: ArmItems, dims: list[str], metrics=None, seed: int = 0
) -> list[dict]:
    out = []
    for row in paired(a, b, dims, seed=seed):
        if metrics is None or row["metric"] in metrics:
            out.append(
                {"comparison": comparison, "combo": combo, "split": split, "arm_a": a.arm, "arm_b": b.arm, **row}
            )
    return out


def _adjust(rows: list[dict]) -> None:
    """Holm within each family of rows; then each row's verdict."""
    if rows:
        for row, p in zip(rows, holm([r["p_value"] for r in rows])):
            row["p_adjusted"] = p
            row["verdict"] = verdict(row, row["arm_a"], row["arm_b"])


def comparisons(
    selected: pd.DataFrame, val: dict[str, ArmItems], test: dict[str, ArmItems], seed: int = 0
) -> tuple[pd.DataFrame, dict[str, bool]]:
    """All comparison rows, and which experts moved their own dimension on validation."""
    families: list[list[dict]] = []
    moved: dict[str, bool] = {}
    if "base" in test:
        for split, items in (("val", val), ("test", test)):
            fam = [
                r
                for dim in DIMS
                if Arm.expert(dim).path in items and "base" in items
                for r in _rows(
                    "expert_vs_base",
                    dim,
                    split,
                    items[Arm.expert(dim).path],
                    items["base"],
                    [dim],
                    metrics={dim},
                    seed=seed,
                )
            ]
            _adjust(fam)
            families.append(fam)
            if split == "val":
                moved = {r["combo"]: r["verdict"] == r["arm_a"] for r in fam}
    headline, per_combo = [], []
    for combo in dict.fromkeys(selected["combo"]):
        dims = combo_dims(combo)
        sub = selected[selected["combo"] == combo]
        merge, mix = sub[(sub["kind"] == "merge") & sub["chosen"]], sub[(sub["kind"] == "mixture") & sub["chosen"]]
        if merge.empty or mix.empty:
            continue
        mix_arm = mix["arm"].iloc[0]
        rows = _rows("merge_vs_mix", combo, "test", test[merge["arm"].iloc[0]], test[mix_arm], dims, seed=seed)
        headline += [r for r in rows if r["metric"] == "balance"]
        detail = [r for r in rows if r["metric"] != "balance"]
        _adjust(detail)
        per_combo.append(detail)
        methods = sub[(sub["kind"] == "merge") & sub["method_choice"]]
        fam = [
            r
            for arm in methods["arm"]
            for r in _rows(
                "method_vs_mix", combo, "test", test[arm], test[mix_arm], dims, metrics={"balance"}, seed=seed
            )
        ]
        _adjust(fam)
        per_combo.append(fam)
    _adjust(headline)
    for row in headline + [r for fam in per_combo for r in fam]:  # every merge-vs-mix row of the combo
        stuck = [Arm.expert(d).path for d in combo_dims(row["combo"]) if moved and not moved.get(d, True)]
        if stuck:
            row["verdict"] = (
                f"not drawn: {', '.join(stuck)} did not move "
                f"{'its dimension' if len(stuck) == 1 else 'their dimensions'}"
            )
    families += [headline, *per_combo]
    if "base" in test:
        balance, collateral = [], []
        for _, cand in selected.iterrows():
            dims = combo_dims(cand["combo"])
            balance += _rows(
                "arm_vs_base",
                cand["combo"],
                "test",
                test[cand["arm"]],
                test["base"],
                dims,
                metrics={"balance"},
                seed=seed,
            )
            for other in [d for d in DIMS if d not in dims]:
                if any(dim == other for dim, _ in test[cand["arm"]].benchmarks.values()):
                    rows = _rows(
                        "arm_vs_base",
                        cand["combo"],
                        "test",
                        test[cand["arm"]],
                        test["base"],
                        [other],
                        metrics={other},
                        seed=seed,
                    )
                    for r in rows:
                        r["metric"] = f"collateral {other}"
                    collateral += rows
        _adjust(balance)
        _adjust(collateral)
        families += [balance, collateral]
    table = pd.DataFrame([r for fam in families for r in fam], columns=COLUMNS)
    return table, moved


def power_line(table: pd.DataFrame) -> str:
    head = table[(table["comparison"] == "merge_vs_mix") & (table["metric"] == "balance")]
    if head.empty:
        return "no merge-vs-mix comparison (the grid needs a merge and a mixture per combo)"
    worst = head["mdd_80"].max()
    per = ", ".join(f"{c} {m:.3f}" for c, m in zip(head["combo"], head["mdd_80"]))
    return (
        f"this grid can detect differences of {worst:.3f} on balance (merge vs mix, 80% power, two-sided 5%, "
        f"paired; per combo: {per})"
    )
