"""`resm evaluate`: flags from EvalRequest, plus how the benchmarks are chosen (a config file, JSON
options, names, per-benchmark counts); evaluate/request.py layers them. `resm lm-eval fetch`: an lm-eval
task's datasets into the caches evaluation reads offline (evaluate/harness.py)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from resm_core.evaluate.request import EvalRequest
from resm_core.options import add_arguments, command_line, key_value


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("evaluate", help="score one arm on the 3H benchmarks (JSON per benchmark, JSONL answers)")
    add_arguments(ev, EvalRequest)
    ev.add_argument(
        "--config",
        type=Path,
        help="YAML: the workflow config's evaluation keys (benchmarks: name -> "
        "options such as n; backend, max_new_tokens, batch_size, ...)",
    )
    ev.add_argument("--benchmarks", nargs="+", help="benchmark names (default: every embedded benchmark)")
    ev.add_argument("--n", action="append", type=key_value, default=[], metavar="BENCH=N", help="items per benchmark")
    ev.add_argument(
        "--options",
        type=json.loads,
        help="JSON: benchmark -> options, e.g. "
        '\'{"qa_mc": {"n": 40}, "reward_helpfulness": {"reward_model": "rm/"}}\' (replaces the defaults)',
    )
    ev.set_defaults(run=run)

    lm = sub.add_parser("lm-eval", help="lm-evaluation-harness tasks as benchmarks (kind: lm_eval)")
    lm_sub = lm.add_subparsers(dest="lm_eval_command", required=True)
    fetch = lm_sub.add_parser(
        "fetch",
        help="load an lm-eval task's datasets into the caches (HF_DATASETS_CACHE, HF_HUB_CACHE, NLTK_DATA) that "
        "evaluation then reads offline",
    )
    fetch.add_argument("--task", required=True, help="the lm-eval task or group")
    fetch.add_argument("--include-path", help="a directory of your own lm-eval task YAML files")
    fetch.add_argument("--out", type=Path, help="write what was fetched here as JSON (the workflow's marker)")
    fetch.set_defaults(run=run_fetch)


def run(args: argparse.Namespace) -> None:
    from resm_core.evaluate.request import read_config, request_from
    from resm_core.evaluate.run import evaluate

    flags = command_line(EvalRequest, args)
    req = request_from(
        {**flags, "progress": not args.quiet},
        read_config(args.config) if args.config else None,
        args.options,
        args.benchmarks,
        args.n,
    )
    s = evaluate(req)
    dims = "  ".join(f"{d} {v['score']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]" for d, v in s["dims"].items())
    print(
        f"{req.arm}: {dims}  |  3H mean {s['mean_3h']['score']:.3f}  balance {s['balance']['score']:.3f}  "
        f"({s['timing']['total_s']:.0f} s, {s['truncated']} of {s['generations']} answers at the token limit)"
    )


def run_fetch(args: argparse.Namespace) -> None:
    from resm_core.evaluate.harness import Spec, fetch
    from resm_core.jsonfile import write_json_atomic

    spec = Spec.of(args.task, {"task": args.task, "dim": "helpfulness", "include_path": args.include_path})
    fetched = fetch(spec)
    if args.out is not None:
        write_json_atomic(args.out, fetched)
    counts = ", ".join(f"{name} {c['docs']} documents" for name, c in fetched["tasks"].items())
    print(f"{args.task}: {counts}")
