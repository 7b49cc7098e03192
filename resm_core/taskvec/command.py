"""`resm extract` (flags from ExtractRequest) and `resm conflicts`."""

from __future__ import annotations

import argparse
from pathlib import Path

from resm_core.options import add_arguments, from_namespace
from resm_core.taskvec.request import ExtractRequest


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    e = sub.add_parser("extract", help="write expert - base as a task vector, with statistics")
    add_arguments(e, ExtractRequest)
    e.set_defaults(run=run_extract)

    c = sub.add_parser("conflicts", help="pairwise cosine and sign conflicts between task vectors")
    c.add_argument("task_vectors", nargs="+", type=Path, help="task-vector directories (resm extract)")
    c.add_argument("--out", required=True, type=Path, help="directory for the conflict tables and plots")
    c.add_argument("--names", nargs="+", help="labels for the task vectors (default: directory names)")
    c.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    c.add_argument("--force", action="store_true", help="replace the output if it exists")
    c.set_defaults(run=run_conflicts)


def run_extract(args: argparse.Namespace) -> None:
    from resm_core.taskvec.extract import extract_request

    req = from_namespace(ExtractRequest, args, progress=not args.quiet)
    table = extract_request(req)
    print(
        f"task vector of {len(table)} tensors written to {req.out} "
        f"(mean relative norm {table['relative_norm'].mean():.3g})"
    )


def run_conflicts(args: argparse.Namespace) -> None:
    from resm_core.taskvec.conflicts import conflicts

    tables = conflicts(
        args.task_vectors, args.out, names=args.names, device=args.device, force=args.force, progress=not args.quiet
    )
    print(tables["summary"][["task_a", "task_b", "cosine", "sign_conflict_rate"]].to_string(index=False))
