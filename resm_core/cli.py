"""The `resm` command line: argument parsing only; the work happens in resm_core's modules."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import yaml

from resm_core.errors import ResmError

log = logging.getLogger("resm")


def _param(text: str) -> tuple[str, object]:
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--param expects key=value, got {text!r}")
    key, value = text.split("=", 1)
    return key.strip(), yaml.safe_load(value) if value.strip() else None


def _weights(text: str) -> list[float]:
    try:
        return [float(w) for w in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--weights expects comma-separated numbers, got {text!r}") from None


def _common_io(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--force", action="store_true", help="replace the output if it exists")
    p.add_argument("--allow-pickle", action="store_true",
                   help="also read pytorch_model.bin (loaded with torch.load(weights_only=True))")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="resm", description="Merge specialist LLMs (RESM and baselines), "
                                     "extract and analyse task vectors.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    m = sub.add_parser("merge", help="merge experts into the base with one method")
    m.add_argument("recipe", nargs="?", type=Path, help="YAML recipe (flags override its values)")
    m.add_argument("--method", help="merge method (see `resm methods`)")
    m.add_argument("--base", help="base model directory")
    m.add_argument("--experts", nargs="+", help="expert model, task-vector or LoRA adapter directories")
    m.add_argument("--param", action="append", type=_param, default=[], metavar="KEY=VALUE",
                   help="method hyperparameter, repeatable (e.g. --param density=0.2)")
    m.add_argument("--weights", type=_weights, help="per-expert weights, comma-separated")
    m.add_argument("--out", help="output directory")
    m.add_argument("--out-dtype", help="float32, bfloat16 or float16 (default: the base's dtype)")
    m.add_argument("--seed", type=int, help="seed for random methods (default 0)")
    m.add_argument("--shard-size", help="maximum output shard size (default 2GB)")
    m.add_argument("--vocab-rule", choices=("method", "task_arithmetic", "mean", "base"),
                   help="how embedding and LM-head matrices are merged (default: task_arithmetic for "
                        "the SVD family, the method itself otherwise)")
    _common_io(m)

    e = sub.add_parser("extract", help="write expert - base as a task vector, with statistics")
    e.add_argument("--base", required=True, type=Path)
    e.add_argument("--expert", required=True, type=Path, help="fine-tuned model or PEFT LoRA adapter directory")
    e.add_argument("--out", required=True, type=Path)
    e.add_argument("--dtype", default="fp32", choices=("fp32", "bf16"))
    e.add_argument("--tol", type=float, default=1e-8, help="|delta| <= tol counts as zero for sparsity")
    e.add_argument("--outlier-m", type=float, default=5.0, help="outlier when |delta| > M * mean |delta|")
    e.add_argument("--energy-top", type=float, default=0.1,
                   help="report the energy share of the top fraction of singular values")
    e.add_argument("--no-spectrum", action="store_true", help="skip the SVD statistics (faster)")
    e.add_argument("--shard-size", default="2GB")
    _common_io(e)

    c = sub.add_parser("conflicts", help="pairwise cosine and sign conflicts between task vectors")
    c.add_argument("task_vectors", nargs="+", type=Path)
    c.add_argument("--out", required=True, type=Path)
    c.add_argument("--names", nargs="+", help="labels for the task vectors (default: directory names)")
    c.add_argument("--device", default="auto")
    c.add_argument("--force", action="store_true")

    ls = sub.add_parser("methods", help="list merge methods and their parameters")
    ls.add_argument("name", nargs="?", help="show one method in detail")

    d = sub.add_parser("demo", help="merge generated Llama-shaped checkpoints with every method")
    d.add_argument("--out", type=Path, default=Path("results/demo"))
    d.add_argument("--shape", default="small", help="tiny, small, smollm2-135m or llama-1.1b")
    d.add_argument("--methods", nargs="+", help="subset of methods (default: all)")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--device", default="auto")
    return parser


def cmd_merge(args) -> None:
    from resm_core.merge.recipe import read_recipe, request_from

    recipe = read_recipe(args.recipe) if args.recipe else {}
    overrides = {
        "method": args.method, "base": args.base, "experts": args.experts, "out": args.out,
        "weights": args.weights, "out_dtype": args.out_dtype, "seed": args.seed,
        "shard_size": args.shard_size, "vocab_rule": args.vocab_rule,
        "device": args.device if args.device != "auto" else None,
        "allow_pickle": True if args.allow_pickle else None, "force": True if args.force else None,
        "progress": False if args.quiet else None, "params": dict(args.param),
    }
    from resm_core.merge.engine import merge

    request = request_from(recipe, overrides, source=str(args.recipe or "command line"))
    manifest = merge(request)
    print(f"merged {len(request.experts)} experts with {manifest['method']} into {request.out} "
          f"in {manifest['wall_time_s']:.1f} s (peak RSS {manifest['peak_rss_mb']:.0f} MB, {manifest['device']})")


def cmd_extract(args) -> None:
    from resm_core.taskvec.extract import extract

    table = extract(args.base, args.expert, args.out, dtype=args.dtype, tol=args.tol, outlier_m=args.outlier_m,
                    energy_top=args.energy_top, spectrum=not args.no_spectrum, device=args.device,
                    shard_size=args.shard_size, allow_pickle=args.allow_pickle, force=args.force,
                    progress=not args.quiet)
    print(f"task vector of {len(table)} tensors written to {args.out} "
          f"(mean relative norm {table['relative_norm'].mean():.3g})")


def cmd_conflicts(args) -> None:
    from resm_core.taskvec.conflicts import conflicts

    tables = conflicts(args.task_vectors, args.out, names=args.names, device=args.device, force=args.force,
                       progress=not args.quiet)
    print(tables["summary"][["task_a", "task_b", "cosine", "sign_conflict_rate"]].to_string(index=False))


def cmd_methods(args) -> None:
    from resm_core.merge.registry import all_methods, get_method

    if args.name:
        m = get_method(args.name)
        print(f"{m.name}: {m.summary}\n  reference: {m.reference}\n  random: {m.random}, "
              f"per-model weights: {m.uses_weights}, vocab rule default: {m.default_vocab_rule}")
        for p in m.params:
            print(f"  {p.name} = {p.default!r}  {p.range_text()}  {p.doc}")
        return
    for m in all_methods().values():
        params = ", ".join(f"{p.name}={p.default}" for p in m.params) or "-"
        print(f"{m.name:18s} {m.summary}\n{'':18s} {params}")


def cmd_demo(args) -> None:
    from resm_core.demo import run_demo, shape_summary

    print(f"demo on generated checkpoints ({shape_summary(args.shape)}), 3 experts", flush=True)
    table = run_demo(args.out, shape=args.shape, methods=args.methods, seed=args.seed, device=args.device)
    print(table.to_string(index=False))
    print(f"\nkept_<task>: share of each expert's task vector kept by the merge; table in {args.out / args.shape}/demo_table.csv")


COMMANDS = {"merge": cmd_merge, "extract": cmd_extract, "conflicts": cmd_conflicts,
            "methods": cmd_methods, "demo": cmd_demo}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not hasattr(args, "quiet"):
        args.quiet = False
    try:
        COMMANDS[args.command](args)
    except ResmError as exc:
        print(f"resm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resm {args.command}: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())

