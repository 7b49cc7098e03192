"""Choose on validation, conclude on test: per combo, the merge (method and hyperparameters) and the mixture
with the best validation balance over the combo's own dimensions. The test items never enter the choice,
so the headline comparison is not the winner of a race run on the items it is judged on."""

from __future__ import annotations

import pandas as pd

from resm_core.errors import ReportError
from resm_core.grid import combo_dims
from resm_core.report.paired import ArmItems, point_scores


def selection(arms: pd.DataFrame, val: dict[str, ArmItems], test: dict[str, ArmItems]) -> pd.DataFrame:
    """One row per candidate (merge and mixture arms of each combo): its validation and test balance over
    the combo's dims, and whether it was chosen (best validation balance of its kind; ties go to the
    first in config order). Per merge method, the best hyperparameters are marked too (`method_choice`)."""
    rows = []
    for combo in [c for c in dict.fromkeys(arms["combo"]) if "+" in c]:
        dims = combo_dims(combo)
        for kind in ("merge", "mixture"):
            cand = arms[(arms["combo"] == combo) & (arms["kind"] == kind)]
            if cand.empty:
                continue
            scored = []
            for _, arm in cand.iterrows():
                v = point_scores(val[arm["arm"]], dims)["balance"] if arm["arm"] in val else float("nan")
                t = point_scores(test[arm["arm"]], dims)["balance"]
                scored.append(
                    {
                        "combo": combo,
                        "kind": kind,
                        "arm": arm["arm"],
                        "family": arm["family"],
                        "variant": arm["variant"],
                        "val_balance": v,
                        "test_balance": t,
                    }
                )
            frame = pd.DataFrame(scored)
            if frame["val_balance"].isna().any():
                missing = frame.loc[frame["val_balance"].isna(), "arm"].tolist()
                raise ReportError(
                    f"selection: no validation items for {', '.join(missing)}; set "
                    f"evaluation.benchmarks.*.n_val above 0 to choose on validation"
                )
            best = frame["val_balance"].idxmax()
            frame["chosen"] = frame.index == best
            frame["method_choice"] = frame.index.isin(frame.groupby("family")["val_balance"].idxmax())
            rows.append(frame)
    return (
        pd.concat(rows, ignore_index=True)
        if rows
        else pd.DataFrame(
            columns=[
                "combo",
                "kind",
                "arm",
                "family",
                "variant",
                "val_balance",
                "test_balance",
                "chosen",
                "method_choice",
            ]
        )
    )
