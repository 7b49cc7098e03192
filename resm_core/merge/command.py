"""`resm merge`, `resm methods` and `resm demo`: flags from MergeRequest; the work is in engine.py."""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

import yaml

from resm_core.merge.request import MergeRequest
from resm_core.options import add_arguments, command_line


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    m = sub.add_parser("merge", help="merge experts into the base with one method")
    m.add_argument(
        "recipe", nargs="?", type=Path, help="YAML recipe, resm's or mergekit's format (flags override its values)"
    )
    m.add_argument(
        "--to-mergekit", type=Path, metavar="FILE", help="write the merge as a mergekit recipe instead of running it"
    )
    add_arguments(m, MergeRequest, required=False)
    m.set_defaults(run=run_merge)

    ls = sub.add_parser("methods", help="list merge methods and their parameters")
    ls.add_argument("name", nargs="?", help="show one method in detail")
    ls.set_defaults(run=run_methods)

    d = sub.add_parser("demo", help="merge generated Llama-shaped checkpoints with every method")
    d.add_argument("--out", type=Path, default=Path("results/demo"), help="where the generated models and merges go")
    d.add_argument("--shape", default="small", help="tiny, small, smollm2-135m or llama-1.1b")
    d.add_argument("--methods", nargs="+", help="subset of methods (default: all)")
    d.add_argument("--seed", type=int, default=0, help="seed of the generated checkpoints and the merges")
    d.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    d.set_defaults(run=run_demo)


def run_merge(args: argparse.Namespace) -> None:
    from resm_core.merge.engine import merge
    from resm_core.merge.mergekit import write_mergekit
    from resm_core.merge.recipe import read_recipe, request_from

    recipe, translated = read_recipe(args.recipe) if args.recipe else ({}, False)
    if translated:
        print(f"{args.recipe}: a mergekit recipe, read as this resm recipe:\n{yaml.safe_dump(recipe, sort_keys=False)}")
    flags = command_line(MergeRequest, args)
    if args.quiet:
        flags["progress"] = False
    if args.to_mergekit:
        flags.setdefault("out", Path("unused"))  # the reverse needs no output directory
    request = request_from(recipe, flags, source=str(args.recipe or "command line"))
    if args.to_mergekit:
        write_mergekit(
            {**asdict(request), "experts": [str(e) for e in request.experts], "base": str(request.base)},
            args.to_mergekit,
        )
        print(f"mergekit recipe written to {args.to_mergekit}")
        return
    manifest = merge(request)
    print(
        f"merged {len(request.experts)} experts with {manifest['method']} into {request.out} "
        f"in {manifest['wall_time_s']:.1f} s (peak RSS {manifest['peak_rss_mb']:.0f} MB, {manifest['device']})"
    )


def run_methods(args: argparse.Namespace) -> None:
    from resm_core.merge.catalogue import all_methods, get_method

    if args.name:
        m = get_method(args.name)
        print(
            f"{m.name}: {m.summary}\n  reference: {m.reference}\n  random: {m.random}, "
            f"per-model weights: {m.uses_weights}, vocab rule default: {m.default_vocab_rule}"
        )
        for p in m.params:
            print(f"  {p.name} = {p.default!r}  {p.range_text()}  {p.doc}")
        return
    for m in all_methods().values():
        params = ", ".join(f"{p.name}={p.default}" for p in m.params) or "-"
        print(f"{m.name:18s} {m.summary}\n{'':18s} {params}")


def run_demo(args: argparse.Namespace) -> None:
    from resm_core.demo import run_demo as demo
    from resm_core.demo import shape_summary

    print(f"demo on generated checkpoints ({shape_summary(args.shape)}), 3 experts", flush=True)
    table = demo(args.out, shape=args.shape, methods=args.methods, seed=args.seed, device=args.device)
    print(table.to_string(index=False))
    print(
        f"\nkept_<task>: share of each expert's task vector kept by the merge; table in "
        f"{args.out / args.shape}/demo_table.csv"
    )
