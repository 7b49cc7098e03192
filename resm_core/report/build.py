"""`resm report`: the grid table, the validation selection, the paired comparisons (merge vs mix per combo,
each method vs the mixture, experts vs the base, every arm vs the base), the method ranking and the
plots, in one directory."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.data.decontaminate import DROPPED_COLUMNS, dropped_table
from resm_core.errors import ReportError
from resm_core.grid import runs_by_arm
from resm_core.judges import refusal
from resm_core.report import plots
from resm_core.report.comparisons import comparisons, power_line
from resm_core.report.paired import EQUIVALENCE_MARGIN, MIN_EFFECT, load_arm
from resm_core.report.selection import selection
from resm_core.report.summary import summary_rst
from resm_core.report.tables import grid, merge_vs_mix, ranking

SUMMARY_NAME = "summary.rst"  # the Snakemake report's first page (the Snakefile's `report:`)


def build_report(
    results: Path,
    arms: list[str],
    out: Path,
    force: bool = True,
    seed: int = 0,
    margin: float = EQUIVALENCE_MARGIN,
    min_effect: float = MIN_EFFECT,
) -> dict:
    """`arms` comes from the workflow's effective config (layered config files, `--config` overrides),
    which no single config file on disk need hold."""
    results = Path(results)
    table = grid(results, arms)  # one row per training run
    splits = {arm: load_arm(results, arm, runs) for arm, runs in runs_by_arm(arms).items()}
    missing = [arm for arm, s in splits.items() if "test" not in s]
    if missing:
        raise ReportError(f"report: no test items for {', '.join(missing)}")
    test = {arm: s["test"] for arm, s in splits.items()}
    val = {arm: s["val"] for arm, s in splits.items() if "val" in s}  # selection names an arm it needs
    selected = selection(table.drop_duplicates("arm"), val, test)
    compared, moved = comparisons(selected, val, test, seed=seed, margin=margin, min_effect=min_effect)
    mvm = merge_vs_mix(compared, selected)
    rank = ranking(selected)
    power = power_line(compared)
    with AtomicDirectory(out, force=force, inputs=[Path(results) / "eval"]) as staging:
        table.to_csv(staging / "grid.csv", index=False)
        selected.to_csv(staging / "selection.csv", index=False)
        compared.to_csv(staging / "comparisons.csv", index=False)
        mvm.to_csv(staging / "merge_vs_mix.csv", index=False)
        rank.to_csv(staging / "ranking.csv", index=False)
        pd.DataFrame(dropped_table(results), columns=DROPPED_COLUMNS).to_csv(
            staging / "decontamination.csv", index=False
        )
        (staging / "power.txt").write_text(
            f"{power}\nequivalence margin {margin} (TOST: the 90% paired interval inside +-{margin}); precondition: "
            f"a gain over the base of at least {min_effect} (one-sided 95% lower bound, validation items); balance: "
            f"harmonic mean of the dimension scores normalised by their chance levels\n"
        )
        (staging / "experts_moved.json").write_text(json.dumps(moved, indent=2) + "\n")
        (staging / SUMMARY_NAME).write_text(summary_rst(compared, power, moved))
        plots.forest(compared, staging / "forest.png")
        plots.profile(table, staging / "profile.png")
        plots.pareto(table, staging / "pareto.png")
        layers = [pd.read_csv(p) for p in sorted((results / "conflicts").glob("*/conflicts_layer.csv"))]
        if layers:
            plots.conflict_heatmap(
                pd.concat(layers).drop_duplicates(["task_a", "task_b", "layer"]), staging / "conflicts.png"
            )
        diags = {
            p.parent.relative_to(results / "models" / "merge").as_posix(): pd.read_csv(p)
            for p in sorted((results / "models" / "merge").glob("resm/*/*/merge_diagnostics.csv"))
        }
        plots.resm_ranks(diags, staging / "resm_ranks.png")
        if (results / "judges" / refusal.FILE).is_file():
            judge = refusal.RefusalJudge(results / "judges")
            (staging / "judges.json").write_text(json.dumps(judge.summary(), indent=2) + "\n")
    return {
        "arms": len(splits),
        "runs": len(table),
        "merge_vs_mix": mvm.to_dict("records"),
        "ranking": rank.to_dict("records"),
        "power": power,
        "moved": moved,
    }
