"""Collect every arm's `summary.json` into the grid; the headline merge-vs-mix rows and the method ranking."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resm_core.data.schema import DIMS
from resm_core.errors import ReportError
from resm_core.grid import Arm, run_of
from resm_core.jsonfile import read_json

AGGREGATES = ("mean_3h", "balance", "min_dim")


def grid(results: Path, runs: list[str]) -> pd.DataFrame:
    """One row per training run (its own summary): `arm` names the arm, `run` the run's path (`seedN/...`
    for the runs of further seeds), so the spread between seeds shows."""
    rows = []
    for run in runs:
        path = Path(results) / "eval" / run / "summary.json"
        if not path.is_file():
            raise ReportError(f"{path}: missing; evaluate arm {run!r} first")
        try:
            rows.append(_grid_row(run, read_json(path, ReportError)))
        except (KeyError, TypeError, AttributeError) as exc:
            raise ReportError(
                f"{path}: not a summary of `resm evaluate` (no {exc}); evaluate arm {run!r} again"
            ) from None
    return pd.DataFrame(rows)


def _grid_row(run: str, s: dict) -> dict[str, object]:
    arm = run_of(run)[0]
    row: dict[str, object] = {"arm": arm, "run": run, **Arm.parse(arm).describe()}
    for dim in DIMS:
        d = s["dims"].get(dim)
        row[dim] = d["score"] if d else None
        row[f"{dim}_ci"] = f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}]" if d else ""  # for reading
        row[f"{dim}_ci_low"], row[f"{dim}_ci_high"] = (d["ci_low"], d["ci_high"]) if d else (None, None)
    for agg in AGGREGATES:
        row[agg] = s[agg]["score"]
        row[f"{agg}_ci_low"], row[f"{agg}_ci_high"] = s[agg]["ci_low"], s[agg]["ci_high"]
    # every benchmark with its interval; those outside the balance (BIG-bench HHH, known unknowns) are marked
    for name, b in sorted(s.get("benchmarks", {}).items()):
        tag = name if b.get("in_balance", True) else f"{name} (reported)"
        row[tag] = b["score"]
        row[f"{tag}_ci"] = f"[{b['ci_low']:.3f}, {b['ci_high']:.3f}]"
    row["truncated"] = s.get("truncated", 0)
    row["eval_s"] = s["timing"]["total_s"]
    return row


def merge_vs_mix(table: pd.DataFrame, selected: pd.DataFrame) -> pd.DataFrame:
    """The headline rows (chosen merge vs chosen mixture on balance, test items), with the validation scores
    that chose them."""
    head = table[(table["comparison"] == "merge_vs_mix") & (table["metric"] == "balance")]
    val = selected.set_index("arm")["val_balance"]
    out = head.rename(
        columns={"arm_a": "merge", "arm_b": "mixture", "a_score": "merge_balance", "b_score": "mixture_balance"}
    ).drop(columns=["comparison", "split", "metric"])
    out.insert(3, "merge_val_balance", out["merge"].map(val).values)
    out.insert(4, "mixture_val_balance", out["mixture"].map(val).values)
    return out.reset_index(drop=True)


def ranking(selected: pd.DataFrame) -> pd.DataFrame:
    """Merge methods and mixture strategies ranked by their mean validation balance over combos (each at its
    validation-best hyperparameters); the test balance beside it is for reading, not for ranking."""
    best = selected[selected["method_choice"] | (selected["kind"] == "mixture")]
    out = best.groupby(["kind", "family"], as_index=False).agg(
        mean_val_balance=("val_balance", "mean"),
        mean_test_balance=("test_balance", "mean"),
        combos=("combo", "nunique"),
    )
    out = out.sort_values("mean_val_balance", ascending=False).reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    return out
