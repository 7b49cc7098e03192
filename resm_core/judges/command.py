"""`resm judge fit`: the offline judges evaluation uses."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    j = sub.add_parser("judge", help="fit the offline judges used by evaluation")
    j_sub = j.add_subparsers(dest="judge_command", required=True)
    jf = j_sub.add_parser(
        "fit",
        help="refusal, harmful-compliance (pyrit labels) and served (over-refusal) classifiers, and the "
        "TruthfulQA similarity threshold",
    )
    jf.add_argument("--out", required=True, type=Path, help="directory for the fitted judges")
    jf.add_argument("--cache", help="asset cache (default: $RESM_CACHE or resources/)")
    jf.set_defaults(run=run_fit)


def run_fit(args: argparse.Namespace) -> None:
    from resm_core.judges import refusal, served, similarity

    for kind, r in refusal.fit(args.out, args.cache).items():
        print(
            f"{kind} judge: held-out accuracy {r['heldout_accuracy']:.3f} (keywords "
            f"{r['heldout_keyword_accuracy']:.3f}, {r['n_heldout']} rows, C {r['C']})"
        )
    v = served.fit(args.out, args.cache)
    print(
        f"served judge: held-out accuracy {v['heldout_accuracy']:.3f} (refusal phrases "
        f"{v['heldout_phrase_rule_accuracy']:.3f}, {v['n_heldout']} rows, C {v['C']})"
    )
    s = similarity.fit(args.out, args.cache)
    print(
        f"similarity threshold {s['threshold']:.3f} (balanced accuracy "
        f"{s['balanced_accuracy']:.3f}); written to {args.out}"
    )
