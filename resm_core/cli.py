"""The `resm` command line: it only dispatches. Each command lives with its stage (`add_parser`, and the
function it sets as `run`); the flags of most come from the stage's request dataclass (resm_core/options.py)."""

from __future__ import annotations

import argparse
import logging
import sys

import resm_core
from resm_core import plan, setup_commands
from resm_core.data import command as data_command
from resm_core.errors import ResmError
from resm_core.evaluate import command as evaluate_command
from resm_core.judges import command as judges_command
from resm_core.merge import command as merge_command
from resm_core.report import command as report_command
from resm_core.taskvec import command as taskvec_command
from resm_core.train import command as train_command

COMMAND_MODULES = (
    merge_command,
    taskvec_command,
    setup_commands,
    data_command,
    train_command,
    judges_command,
    evaluate_command,
    report_command,
    plan,
)


EXAMPLES = """examples:
  resm merge --method resm --base BASE --experts HELPFUL HONEST HARMLESS --out merged/
  resm merge merged/resm_recipe.yaml --out again/            # rebuild a merge from its recipe
  resm methods                                               # every merge method and its parameters
  resm evaluate --model merged/ --data results/default/data --out eval/
  resm plan configs/paper-llama3-8b.yaml --profile profiles/slurm   # jobs, GPU hours, sbatch flags
  resm COMMAND --help                                        # each command's options and examples
"""

# A command's own examples, shown at the end of its --help.
COMMAND_EXAMPLES = {
    "merge": """examples:
  resm merge --method ties --param density=0.2 --base BASE --experts E1 E2 --out merged/
  resm merge --method resm --base org/base --experts org/e1@COMMIT adapter_dir/ --out merged/
  resm merge recipe.yaml --out merged/           # a resm recipe, or a mergekit YAML
""",
    "evaluate": """examples:
  resm evaluate --model merged/ --data results/default/data --judges results/default/judges --out eval/
  resm evaluate --model org/chat@main --data DATA --benchmarks qa_mc --n qa_mc=100 --out eval/
""",
    "plan": """examples:
  resm plan configs/paper-llama3-8b.yaml --profile profiles/slurm
""",
    "compare": """examples:
  resm compare --results results/default --a expert/honesty --b base --dims honesty --split val
""",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resm",
        description="Mix the data or merge the models? Build 3H "
        "data, train experts and mixtures, merge them (RESM and baselines).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"resm-3h {resm_core.__version__}")
    _global_flags(parser, argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    for name, command in _commands(parser):
        _global_flags(command, argparse.SUPPRESS)  # `resm merge ... -q` as well as `resm -q merge ...`
        if name in COMMAND_EXAMPLES:
            command.epilog = COMMAND_EXAMPLES[name]
            command.formatter_class = argparse.RawDescriptionHelpFormatter
    return parser


def _global_flags(parser: argparse.ArgumentParser, default: object) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", default=default, help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", default=default, help="warnings only, no progress bars")


def _commands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser]]:
    """Every (sub)command's parser, nested ones too (`resm base prepare`), by its last name."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, command in action.choices.items():
                found.append((name, command))
                found += _commands(command)
    return found


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launcher runs again, in each process
    args.verbose, args.quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    level = logging.DEBUG if args.verbose else (logging.WARNING if args.quiet else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.run(args)
    except ResmError as exc:
        print(f"resm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a read-only or full output, a file that vanished: the path and the reason suffice
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"resm {args.command}: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"resm {args.command}: interrupted; no partial output was left behind", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
