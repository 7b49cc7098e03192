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

    pk = sub.add_parser(
        "pick",
        help="the arm of a combo that maximises a dim (or balance) on validation under constraints, merges and "
        "mixtures apart, with its test scores and intervals",
    )
    pk.add_argument("--results", required=True, type=Path, help="results directory (holds eval/ARM/)")
    pk.add_argument("--combo", required=True, help="e.g. harmlessness+helpfulness")
    pk.add_argument("--maximize", default="balance", help="a dim of the combo, or balance (default)")
    pk.add_argument(
        "--subject-to",
        nargs="+",
        default=[],
        metavar="CONSTRAINT",
        help='validation constraints, e.g. "harmlessness>=0.9" (>=, <=, >, <; a dim of the combo or balance)',
    )
    pk.add_argument(
        "--arms", nargs="+", help="choose among these arms only (default: every evaluated merge and mixture)"
    )
    pk.add_argument("--json", type=Path, help="also write the answer here")
    pk.set_defaults(run=run_pick)

    fr = sub.add_parser("frontier", help="trade-off frontier steps run by the workflow")
    fr_sub = fr.add_subparsers(dest="frontier_command", required=True)
    ch = fr_sub.add_parser(
        "choose", help="the hyperparameter set a frontier's merges start from: best validation balance on the combo"
    )
    ch.add_argument("--results", required=True, type=Path, help="results directory (holds eval/ARM/)")
    ch.add_argument("--method", required=True, help="the merge method whose hyperparameter sets compete")
    ch.add_argument("--combo", required=True, help="e.g. harmlessness+helpfulness: balance over its dims")
    ch.add_argument("--candidates", required=True, help="JSON: arm -> its hyperparameters")
    ch.add_argument("--out", required=True, type=Path, help="the merge recipe written (method and params)")
    ch.set_defaults(run=run_frontier_choose)
    fp = fr_sub.add_parser(
        "report",
        help="frontier points, each family's front, and the merge-minus-mixture hypervolume with its paired interval",
    )
    fp.add_argument("--results", required=True, type=Path, help="results directory (holds eval/ARM/)")
    fp.add_argument("--arms", required=True, nargs="+", help="the frontier arms, the base and the experts")
    fp.add_argument(
        "--reference", default="base", choices=["base", "minimum"], help="the hypervolume's reference point"
    )
    fp.add_argument("--margin", type=float, default=0.01, help="equivalence margin of the hypervolume difference")
    fp.add_argument("--bootstrap", type=int, default=2000, help="bootstrap draws (at least 100)")
    fp.add_argument("--seed", type=int, default=0, help="seed of the bootstrap draws")
    fp.add_argument("--out", required=True, type=Path, help="output directory")
    fp.set_defaults(run=run_frontier_report)


def run_pick(args: argparse.Namespace) -> None:
    from resm_core.jsonfile import write_json_atomic
    from resm_core.report.pick import KINDS, pick

    answer = pick(args.results, args.combo, args.maximize, args.subject_to, args.arms)
    rules = " and ".join(answer["subject_to"]) or "no constraint"
    print(
        f"{args.combo}: the highest validation {args.maximize} subject to {rules}; scores on test items (95% intervals)"
    )
    for kind in KINDS:
        entry = answer[kind]
        if entry["chosen"] is None:
            print(f"  {kind}: none of {entry['candidates']} meets the constraints on validation")
            continue
        scores = ", ".join(
            f"{d} {v['score']:.3f}" + (f" [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" if "ci_low" in v else "")
            for d, v in entry["test"].items()
        )
        print(f"  {kind}: {entry['chosen']} ({entry['feasible']} of {entry['candidates']} feasible): {scores}")
        for metric, row in (entry.get("vs_base") or {}).items():
            print(
                f"    vs base, {metric}: {row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] "
                f"(p {row['p_value']:.3f}, n {row['n_items']})"
            )
    if args.json:
        write_json_atomic(args.json, answer)


def run_frontier_report(args: argparse.Namespace) -> None:
    from resm_core.errors import ConfigError
    from resm_core.report.fronts import build_fronts, describe

    if args.bootstrap < 100:
        raise ConfigError(f"--bootstrap: at least 100 draws, got {args.bootstrap}")
    if not 0 < args.margin < 1:
        raise ConfigError(f"--margin: expected a number in (0, 1), got {args.margin}")
    volumes = build_fronts(args.results, args.arms, args.out, args.reference, args.margin, args.bootstrap, args.seed)
    print("\n".join(describe(volumes)))
    print(f"frontier report written to {args.out}")


def run_frontier_choose(args: argparse.Namespace) -> None:
    import json

    from resm_core.errors import ConfigError
    from resm_core.report.pick import choose_front, write_recipe

    try:
        candidates = json.loads(args.candidates)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--candidates: not JSON ({exc})") from None
    recipe = choose_front(args.results, args.method, args.combo, candidates)
    print(f"{args.method} on {args.combo}: {recipe['chosen_on_validation']['arm']} (best validation balance)")
    write_recipe(recipe, args.out)


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
