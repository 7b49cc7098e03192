"""Stand-in policies on a grid's real items: the table of what each degenerate answer scores on every
generated benchmark and on balance, beside the base's own answers scored the same way.

    python benchmarks/stand_ins.py --results results/default [--config config.yaml] [--arms base expert/helpfulness]

Each policy's answers are written as a `resm evaluate --answers` file over the grid's own validation and
test items, and scored as an arm (judges from RESULTS/judges, data from RESULTS/data); each listed arm's
recorded answers are scored the same way, so the rows compare like with like. Prints a markdown table
(test items) and writes it to RESULTS/stand_ins.md. Not a test: tests/test_stand_ins.py asserts the rules
on the tiny build; this measures the default grid's items.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from resm_core.evaluate import stand_ins
from resm_core.evaluate.benchmarks import get_benchmark
from resm_core.evaluate.request import EvalRequest


def recorded_answers(results: Path, arm: str, benchmarks: list[str], out: Path) -> Path:
    """An evaluated arm's own answers, in the `--answers` format."""
    with open(out, "w", encoding="utf-8") as f:
        for bench in benchmarks:
            lines = (results / "eval" / arm / f"{bench}.jsonl").read_text(encoding="utf-8").splitlines()
            for rec in map(json.loads, lines):
                f.write(json.dumps({"benchmark": bench, "id": rec["id"], "response": rec["response"]}) + "\n")
    return out


def score(answers: Path, results: Path, options: dict, cache: str, out: Path) -> dict:
    cmd = [str(Path(sys.executable).parent / "resm"), "-q", "evaluate", "--answers", str(answers)]
    cmd += ["--data", str(results / "data"), "--judges", str(results / "judges"), "--cache", cache]
    cmd += ["--options", json.dumps(options), "--out", str(out)]
    subprocess.run(cmd, check=True)
    return json.loads((out / "summary.json").read_text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results/default"))
    ap.add_argument("--config", type=Path, default=Path("config.yaml"))
    ap.add_argument("--arms", nargs="*", default=["base"], help="evaluated arms whose own answers to score too")
    args = ap.parse_args()
    config = yaml.safe_load(args.config.read_text())
    cache = str(config.get("assets", "resources"))
    options = {
        name: opts
        for name, opts in config["evaluation"]["benchmarks"].items()
        if get_benchmark(name).generated and get_benchmark(name).embedded
    }
    benches = list(options)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        req = EvalRequest(
            answers=work / "x.jsonl",
            out=work,
            data_root=args.results / "data",
            judges=args.results / "judges",
            benchmarks={k: dict(v) for k, v in options.items()},
        )
        items = stand_ins.items_of(req)
        rows = []
        for k, arm in enumerate(args.arms):
            answers = recorded_answers(args.results, arm, benches, work / f"arm{k}.jsonl")
            rows.append((f"{arm} (its own answers)", score(answers, args.results, options, cache, work / f"a{k}")))
        for k, policy in enumerate(stand_ins.POLICIES):
            answers = stand_ins.answers(policy, items, work / f"p{k}.jsonl")
            rows.append((policy, score(answers, args.results, options, cache, work / f"p{k}")))
    head = "| policy | " + " | ".join(f"`{b}`" for b in benches) + " | balance |"
    lines = [head, "|---" * (len(benches) + 2) + "|"]
    for name, s in rows:
        cells = [f"{s['benchmarks'][b]['score']:.3f}" for b in benches]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {s['balance']['score']:.3f} |")
    table = "\n".join(lines)
    print(table)
    (args.results / "stand_ins.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
