"""The report's tables: merge vs mix decides only on separated intervals; the ranking takes each
method's best hyperparameters per combo."""

from __future__ import annotations

import pandas as pd

from resm_core.report.tables import describe_arm, merge_vs_mix, ranking


def arm(name: str, balance: float, low: float, high: float, mean_3h: float = 0.5) -> dict:
    return {"arm": name, **describe_arm(name), "balance": balance, "balance_ci_low": low,
            "balance_ci_high": high, "mean_3h": mean_3h}


def test_merge_vs_mix_names_a_verdict_only_where_the_intervals_separate():
    table = pd.DataFrame([
        arm("merge/resm/harmlessness+helpfulness/default", 0.60, 0.55, 0.65),
        arm("merge/ties/harmlessness+helpfulness/density-0.2", 0.50, 0.45, 0.55),
        arm("mix/uniform/harmlessness+helpfulness", 0.40, 0.35, 0.45),      # below the best merge's interval
        arm("merge/resm/helpfulness+honesty/default", 0.52, 0.40, 0.64),
        arm("mix/uniform/helpfulness+honesty", 0.55, 0.45, 0.65),          # leads, but the intervals overlap
    ])
    out = merge_vs_mix(table).set_index("combo")
    first = out.loc["harmlessness+helpfulness"]
    assert first["best_merge"] == "merge/resm/harmlessness+helpfulness/default"
    assert abs(first["difference"] - 0.20) < 1e-12
    assert not first["intervals_overlap"] and first["leader"] == first["verdict"] == "merge"
    second = out.loc["helpfulness+honesty"]
    assert second["intervals_overlap"] and second["leader"] == "mixture" and second["verdict"] == "inconclusive"


def test_ranking_takes_each_methods_best_hyperparameters_per_combo():
    table = pd.DataFrame([
        arm("merge/ties/harmlessness+helpfulness/density-0.2", 0.50, 0.4, 0.6),
        arm("merge/ties/harmlessness+helpfulness/density-0.5", 0.70, 0.6, 0.8),
        arm("merge/resm/harmlessness+helpfulness/default", 0.60, 0.5, 0.7),
        arm("mix/uniform/harmlessness+helpfulness", 0.40, 0.3, 0.5),
    ])
    out = ranking(table)
    assert list(out["family"]) == ["ties", "resm", "uniform"]
    assert abs(out.iloc[0]["mean_balance"] - 0.70) < 1e-12 and list(out["rank"]) == [1, 2, 3]
