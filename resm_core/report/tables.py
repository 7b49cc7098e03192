"""Collect every arm's `summary.json` into the grid, and derive merge vs mix per combo and the method ranking."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from resm_core.data.schema import DIMS
from resm_core.errors import ConfigError

AGGREGATES = ("mean_3h", "balance", "min_dim")


def describe_arm(arm: str) -> dict:
    parts = arm.split("/")
    if parts[0] == "base":
        return {"kind": "base", "combo": "", "family": "base", "variant": ""}
    if parts[0] == "expert":
        return {"kind": "expert", "combo": parts[1], "family": "expert", "variant": ""}
    if parts[0] == "mix":
        return {"kind": "mixture", "combo": parts[2], "family": parts[1], "variant": ""}
    if parts[0] == "merge":
        return {"kind": "merge", "combo": parts[2], "family": parts[1], "variant": parts[3]}
    raise ConfigError(f"report: cannot read arm {arm!r}")


def grid(results: Path, arms: list[str]) -> pd.DataFrame:
    rows = []
    for arm in arms:
        path = Path(results) / "eval" / arm / "summary.json"
        if not path.is_file():
            raise ConfigError(f"{path}: missing; evaluate arm {arm!r} first")
        s = json.loads(path.read_text())
        row = {"arm": arm, **describe_arm(arm)}
        for dim in DIMS:
            d = s["dims"].get(dim)
            row[dim] = d["score"] if d else None
            row[f"{dim}_ci"] = f"[{d['ci_low']:.3f}, {d['ci_high']:.3f}]" if d else ""
        for agg in AGGREGATES:
            row[agg] = s[agg]["score"]
            row[f"{agg}_ci_low"], row[f"{agg}_ci_high"] = s[agg]["ci_low"], s[agg]["ci_high"]
        row["truncated"] = s.get("truncated", 0)
        row["eval_s"] = s["timing"]["total_s"]
        rows.append(row)
    return pd.DataFrame(rows)


def merge_vs_mix(table: pd.DataFrame, by: str = "balance") -> pd.DataFrame:
    """Per combo: the best merge and the best mixture by `by`, and their difference (merge - mix)."""
    rows = []
    for combo in sorted(c for c in table["combo"].unique() if "+" in c):
        sub = table[table["combo"] == combo]
        merges, mixes = sub[sub["kind"] == "merge"], sub[sub["kind"] == "mixture"]
        if merges.empty or mixes.empty:
            continue
        best_merge = merges.loc[merges[by].idxmax()]
        best_mix = mixes.loc[mixes[by].idxmax()]
        overlap = not (best_merge[f"{by}_ci_low"] > best_mix[f"{by}_ci_high"]
                       or best_mix[f"{by}_ci_low"] > best_merge[f"{by}_ci_high"])
        leader = ("tie" if best_merge[by] == best_mix[by] else "merge" if best_merge[by] > best_mix[by]
                  else "mixture")
        rows.append({"combo": combo, "best_merge": best_merge["arm"], f"merge_{by}": best_merge[by],
                     "best_mixture": best_mix["arm"], f"mixture_{by}": best_mix[by],
                     "difference": best_merge[by] - best_mix[by], "intervals_overlap": overlap,
                     "leader": leader,  # by the point estimates
                     "verdict": "inconclusive" if overlap else leader})  # only separated 95% intervals decide
    return pd.DataFrame(rows)


def ranking(table: pd.DataFrame, by: str = "balance") -> pd.DataFrame:
    """Merge methods and mixture strategies ranked by their mean over combos (best hyperparameters per combo)."""
    cand = table[table["kind"].isin(["merge", "mixture"])]
    best = cand.sort_values(by, ascending=False).groupby(["kind", "family", "combo"], as_index=False).first()
    out = best.groupby(["kind", "family"], as_index=False).agg(
        **{f"mean_{by}": (by, "mean"), "mean_3h": ("mean_3h", "mean"), "combos": ("combo", "nunique")})
    out = out.sort_values(f"mean_{by}", ascending=False).reset_index(drop=True)
    out.insert(0, "rank", range(1, len(out) + 1))
    return out
