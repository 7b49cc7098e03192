"""`resm report` (the grid's tables, verdicts and plots) and `resm compare` (two arms, paired)."""

from __future__ import annotations

import argparse
from pathlib import Path

from resm_core.data.schema import DIMS


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    rp = sub.add_parser("report", help="grid table, merge vs mix, method ranking and plots from evaluated arms")
    rp_arms = rp.add_mutually_exclusive_group(required=True)
    rp_arms.add_argument("--config", type=Path, help="the workflow config that defined the grid")
    rp_arms.add_argument("--arms", nargs="+", help="the arms to report, e.g. base expert/honesty (needs --results)")
    rp.add_argument("--results", type=Path, help="results directory (default: the config's `results`)")
    rp.add_argument("--out", type=Path, help="default: RESULTS/report")
    rp.add_argument(
        "--equivalence-margin",
        type=float,
        help="a difference inside +-this (90%% paired interval) is 'equivalent' (default: the config's "
        "report.equivalence_margin, else 0.05)",
    )
    rp.add_argument(
        "--min-effect",
        type=float,
        help="precondition: the gain over the base an expert or mixture must show on its own dimension "
        "(one-sided 95%% lower bound on validation; default: report.min_effect, else 0.05)",
    )
    rp.set_defaults(run=run_report)

    cp = sub.add_parser(
        "compare",
        help="paired comparison of two evaluated arms on their shared items "
        "(difference, 95%% paired-bootstrap interval, permutation p, mdd_80)",
    )
    cp.add_argument("--results", required=True, type=Path, help="results directory (holds eval/ARM/)")
    cp.add_argument(
        "--a",
        required=True,
        nargs="+",
        help="arm A, e.g. merge/ties/harmlessness+helpfulness/density-0.2; several paths are its training runs "
        "(e.g. expert/honesty seed1/expert/honesty), resampled before the items",
    )
    cp.add_argument("--b", required=True, nargs="+", help="arm B, e.g. mix/uniform/harmlessness+helpfulness")
    cp.add_argument("--dims", nargs="+", choices=DIMS, help="dimensions of balance (default: every dim both arms have)")
    cp.add_argument("--split", default="test", choices=["test", "val"], help="the items compared (default: test)")
    cp.add_argument("--bootstrap", type=int, default=2000, help="bootstrap and permutation draws (at least 100)")
    cp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap and permutation draws")
    cp.set_defaults(run=run_compare)


def run_report(args: argparse.Namespace) -> None:
    from resm_core.errors import ConfigError
    from resm_core.grid import Arm
    from resm_core.grid import arms as grid_arms
    from resm_core.report.build import build_report
    from resm_core.report.paired import EQUIVALENCE_MARGIN, MIN_EFFECT
    from resm_core.workflow_config import load_config

    settings: dict = {}
    if args.arms:
        if args.results is None:
            raise ConfigError("report: --arms needs --results (the directory holding eval/ARM/summary.json)")
        arms, results = args.arms, args.results
    else:
        config = load_config(args.config)
        arms, results = grid_arms(config), args.results or Path(config["results"])
        settings = config.get("report") or {}
    margin = (
        args.equivalence_margin
        if args.equivalence_margin is not None
        else settings.get("equivalence_margin", EQUIVALENCE_MARGIN)
    )
    min_effect = args.min_effect if args.min_effect is not None else settings.get("min_effect", MIN_EFFECT)
    for name, value in (("--equivalence-margin", margin), ("--min-effect", min_effect)):
        if not (isinstance(value, (int, float)) and 0 < value < 1):
            raise ConfigError(f"{name}: expected a number in (0, 1), got {value!r}")
    summary = build_report(
        results, arms, args.out or results / "report", margin=float(margin), min_effect=float(min_effect)
    )
    for row in summary["merge_vs_mix"]:
        print(
            f"{row['combo']}: {row['merge']} - {row['mixture']} = {row['difference']:+.3f} "
            f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}], p_adj {row['p_adjusted']:.3f}, "
            f"mdd_80 {row['mdd_80']:.3f}: {row['verdict']} (precondition {row['precondition']}; {row['dominance']})"
        )
    for dim, ok in summary["moved"].items():
        if not ok:
            print(f"{Arm.expert(dim).path} did not move {dim} by {min_effect} over the base on validation items")
    print(summary["power"])
    print(f"report of {summary['arms']} arms ({summary['runs']} runs) written to {args.out or results / 'report'}")


def run_compare(args: argparse.Namespace) -> None:
    from resm_core.errors import ConfigError
    from resm_core.grid import run_of
    from resm_core.report.paired import EQUIVALENCE_MARGIN, load_items, paired, verdict

    if args.bootstrap < 100:
        raise ConfigError(f"--bootstrap: at least 100 draws, got {args.bootstrap}")
    a, b = (load_items(args.results, run_of(runs[0])[0], args.split, runs) for runs in (args.a, args.b))
    rows = paired(a, b, args.dims, n_boot=args.bootstrap, n_perm=args.bootstrap, seed=args.seed)
    test = "bootstrap over runs, then items" if max(a.n_runs, b.n_runs) > 1 else "paired permutation"
    print(
        f"{a.arm} ({a.n_runs} run{'s' if a.n_runs > 1 else ''}) - {b.arm} ({b.n_runs} run"
        f"{'s' if b.n_runs > 1 else ''}) on {args.split} items (95% paired bootstrap; p: {test}, unadjusted; "
        f"equivalent: the 90% interval inside +-{EQUIVALENCE_MARGIN})"
    )
    print(
        f"{'metric':24s} {'a':>7s} {'b':>7s} {'a - b':>8s} {'95% interval':>19s} {'p':>6s} {'n':>5s} "
        f"{'mdd_80':>7s}  verdict"
    )
    for r in rows:
        print(
            f"{r['metric']:24s} {r['a_score']:7.3f} {r['b_score']:7.3f} {r['difference']:+8.3f} "
            f"[{r['ci_low']:+.3f}, {r['ci_high']:+.3f}] {r['p_value']:6.3f} {r['n_items']:5d} {r['mdd_80']:7.3f}  "
            f"{verdict(r, a.arm, b.arm)}"
        )
    print(f"this comparison can detect differences of {rows[-1]['mdd_80']:.3f} on balance (80% power, paired)")
