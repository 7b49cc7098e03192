"""The frontier's part of the report: every frontier point's scores (validation and test, intervals, paired
difference from the base), each family's front chosen on validation and drawn on test, and per combo the
hypervolume of each merge method's front minus the mixtures' with its paired interval and verdict.

Which arms are frontier points, and their weights, is read from their names (resm_core.grid), so the report
needs nothing beyond the arm list. With several training runs, the first run's items are compared."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.errors import ReportError
from resm_core.grid import combo_dims, front_point_of
from resm_core.report import plots
from resm_core.report.frontier import compare_fronts, non_dominated
from resm_core.report.paired import ArmItems, load_arm, paired, point_scores
from resm_core.report.tables import grid

POOLED = "all merges"


def point_table(
    items: dict[str, dict[str, ArmItems]], summaries: pd.DataFrame, arms: list[str], seed: int = 0
) -> pd.DataFrame:
    """One row per frontier point of `arms`: its weights, validation and test dim scores, the test interval of
    each dim (`summaries`: tables.grid indexed by arm) and its paired test difference from the base per dim;
    `val_front` marks the points on their family's validation front, `test_front` those on the test one.
    `items`: each arm's items by split (load_arm)."""
    points = [p for p in map(front_point_of, arms) if p is not None]
    if not points:
        raise ReportError("frontier: no frontier arms among the arms given (merge/M/C/front-W, mix/ratio-W/C)")
    base = items["base"]["test"] if "base" in arms else None
    rows = []
    for p in points:
        dims = combo_dims(p.arm.combo)
        splits = items[p.arm.path]
        if "val" not in splits or "test" not in splits:
            raise ReportError(f"eval/{p.arm.path}: a frontier point needs validation and test items")
        val, test = point_scores(splits["val"], dims), point_scores(splits["test"], dims)
        row: dict = {"combo": p.arm.combo, "arm": p.arm.path, "tracer": p.tracer}
        row.update({f"w_{d}": w for d, w in zip(dims, p.weights)})
        for d in [*dims, "balance"]:
            row[f"val_{d}"] = val[d]
            row[f"test_{d}"] = test[d]
        for d in dims:
            row[f"test_{d}_ci_low"], row[f"test_{d}_ci_high"] = summaries.loc[
                p.arm.path, [f"{d}_ci_low", f"{d}_ci_high"]
            ]
        if base is not None:
            for r in paired(splits["test"], base, dims, seed=seed):
                if r["metric"] in dims:
                    m = r["metric"]
                    row[f"vs_base_{m}"], row[f"vs_base_{m}_ci_low"], row[f"vs_base_{m}_ci_high"] = (
                        r["difference"],
                        r["ci_low"],
                        r["ci_high"],
                    )
        rows.append(row)
    table = pd.DataFrame(rows)
    table["val_front"] = False
    table["test_front"] = False
    for (combo, _), group in table.groupby(["combo", "tracer"], sort=False):
        dims = combo_dims(combo)
        for split in ("val", "test"):
            mask = non_dominated(group[[f"{split}_{d}" for d in dims]].to_numpy(float))
            table.loc[group.index, f"{split}_front"] = mask
    return table


def hypervolume_table(
    items: dict[str, dict[str, ArmItems]],
    table: pd.DataFrame,
    reference: str = "base",
    margin: float = 0.01,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per combo and merge method (and all merges pooled, when there are several): the hypervolume of its
    front minus the mixtures', on test items, paired bootstrap with the fronts recomputed in each draw."""
    base = items["base"]["test"] if reference == "base" else None
    rows = []
    for combo, group in table.groupby("combo", sort=False):
        dims = combo_dims(combo)
        mixtures = [items[a]["test"] for a in group.loc[group["tracer"] == "mixture", "arm"]]
        methods = [m for m in dict.fromkeys(group["tracer"]) if m != "mixture"]
        if not mixtures or not methods:
            continue
        families = {m: group.loc[group["tracer"] == m, "arm"].tolist() for m in methods}
        if len(methods) > 1:
            families[POOLED] = group.loc[group["tracer"] != "mixture", "arm"].tolist()
        for name, arms in families.items():
            merges = [items[a]["test"] for a in arms]
            c = compare_fronts(merges, mixtures, dims, base=base, n_boot=n_boot, seed=seed, margin=margin)
            rows.append(
                {
                    "combo": combo,
                    "merges": name,
                    "reference": c.reference,
                    "ref_point": " ".join(f"{x:.3f}" for x in c.ref_point),
                    "merge_hv": c.merge_hv,
                    "mixture_hv": c.mixture_hv,
                    "difference": c.difference,
                    "ci_low": c.ci_low,
                    "ci_high": c.ci_high,
                    "ci90_low": c.ci90_low,
                    "ci90_high": c.ci90_high,
                    "p_value": c.p_value,
                    "margin": margin,
                    "verdict": c.verdict,
                    "merge_points": len(merges),
                    "mixture_points": len(mixtures),
                    "merge_front": " ".join(c.merge_front),
                    "mixture_front": " ".join(c.mixture_front),
                    "n_boot": c.n_boot,
                    "caveats": _caveats(c),
                }
            )
    return pd.DataFrame(rows)


def _caveats(c) -> str:
    notes = []
    if c.merge_hv == 0 and c.mixture_hv == 0:
        notes.append(
            f"no point of either family is above the reference ({c.reference}) on every dimension: both "
            f"hypervolumes are 0 (reference: minimum measures how far the trade-offs reach instead)"
        )
    elif 0 in (c.merge_hv, c.mixture_hv):
        side = "merges'" if c.merge_hv == 0 else "mixtures'"
        notes.append(f"no point of the {side} front is above the reference ({c.reference}) on every dimension")
    return "; ".join(notes)


def build_fronts(
    results: Path,
    arms: list[str],
    out: Path,
    reference: str = "base",
    margin: float = 0.01,
    n_boot: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """points.csv, hypervolume.csv and one figure per combo (COMBO.png) in `out`, atomically. Each arm's
    summary and items are read once."""
    results = Path(results)
    summaries = grid(results, arms).set_index("arm")
    needed = [a for a in arms if front_point_of(a) is not None]
    needed += ["base"] if "base" in arms or reference == "base" else []
    items = {a: load_arm(results, a) for a in needed}
    table = point_table(items, summaries, arms, seed=seed)
    volumes = hypervolume_table(items, table, reference, margin, n_boot, seed)
    anchors = summaries[summaries["kind"].isin(["base", "expert"])]
    with AtomicDirectory(out, force=True, inputs=[results / "eval"]) as staging:
        table.to_csv(staging / "points.csv", index=False)
        volumes.to_csv(staging / "hypervolume.csv", index=False)
        for combo, group in table.groupby("combo", sort=False):
            plots.fronts(
                group,
                anchor_table(anchors, combo_dims(combo)),
                volumes[volumes["combo"] == combo] if len(volumes) else volumes,
                staging / f"{combo}.png",
            )
    return volumes


def describe(volumes: pd.DataFrame) -> list[str]:
    """One line per comparison, as the command prints it."""
    return [
        f"{r.combo}: hypervolume {r.merges} {r.merge_hv:.4f} - mixtures {r.mixture_hv:.4f} = {r.difference:+.4f} "
        f"[{r.ci_low:+.4f}, {r.ci_high:+.4f}] (reference: {r.reference} {r.ref_point}; p {r.p_value:.3f}): "
        f"{r.verdict}"
        for r in volumes.itertuples()
    ] or ["no combo has both a merge front and a mixture front"]


def anchor_table(anchors: pd.DataFrame, dims: list[str]) -> pd.DataFrame:
    """The base and the experts (test scores and intervals, from tables.grid): the corners a front is read
    against, in the points' column names."""
    columns = {"kind": "kind"}
    for d in dims:
        columns.update({d: f"test_{d}", f"{d}_ci_low": f"test_{d}_ci_low", f"{d}_ci_high": f"test_{d}_ci_high"})
    return anchors[list(columns)].rename(columns=columns).reset_index()
