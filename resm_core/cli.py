"""The `resm` command line: it only dispatches. Each command lives with its stage (`add_parser`, and the
function it sets as `run`); the flags of most come from the stage's request dataclass (resm_core/options.py)."""

from __future__ import annotations

import argparse
import logging
import sys

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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="resm",
        description="Mix the data or merge the models? Build 3H "
        "data, train experts and mixtures, merge them (RESM and baselines).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings only, no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in COMMAND_MODULES:
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what a launcher runs again, in each process
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
