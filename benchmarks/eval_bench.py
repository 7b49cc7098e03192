"""Evaluation benchmark: wall time of `resm evaluate` per arm on the embedded model and data, and the share
spent generating vs scoring (log-probs and judges), with the default benchmark sizes.

    python benchmarks/eval_bench.py                 # needs benchmarks/train_bench.py's base and data
    python benchmarks/eval_bench.py --backends transformers vllm     # where vllm imports

Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "eval"
TRAIN = ROOT / "out" / "train"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=TRAIN / "smollm2-135m-instruct")
    ap.add_argument("--data", type=Path, default=TRAIN / "data", help="built datasets (train_bench.py makes them)")
    ap.add_argument("--backends", nargs="+", default=["transformers"])
    ap.add_argument("--python", default=sys.executable, help="interpreter for the runs (e.g. a vllm venv)")
    args = ap.parse_args()
    if not (args.data / "harmlessness" / "test.jsonl").is_file():
        sys.exit(f"{args.data}: run benchmarks/train_bench.py first (it builds the data and the base)")
    OUT.mkdir(parents=True, exist_ok=True)
    resm = [args.python, "-m", "resm_core.cli", "-q"]
    judges = OUT / "judges"
    if not (judges / "refusal_judge.json").is_file():
        start = time.perf_counter()
        subprocess.run(resm + ["judge", "fit", "--out", str(judges)], check=True)
        print(f"judge fit: {time.perf_counter() - start:.1f} s")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    path = OUT / "eval_bench.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for backend in args.backends:
        out = OUT / f"base-{backend}"
        start = time.perf_counter()
        subprocess.run(resm + ["evaluate", "--model", str(args.model), "--arm", "base", "--data", str(args.data),
                               "--judges", str(judges), "--out", str(out), "--backend", backend, "--force"], check=True)
        wall = time.perf_counter() - start
        summary = json.loads((out / "summary.json").read_text())
        t = summary["timing"]
        answers = {}
        for name in summary["benchmarks"]:
            for line in (out / f"{name}.jsonl").read_text().splitlines():
                rec = json.loads(line)
                if rec.get("response") is not None:
                    answers[rec["prompt"]] = rec["response"]  # shared answers counted once
        tokens = sum(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers.values())
        results[backend] = {"wall_s": round(wall, 1), **t, "generations": summary["generations"],
                            "generation_share": round(t["generation_s"] / t["total_s"], 3),
                            "scoring_share": round(t["scoring_s"] / t["total_s"], 3),
                            "tokens_generated": tokens,
                            "generated_tokens_per_s": round(tokens / t["generation_s"], 1),
                            "scores": {d: round(v["score"], 3) for d, v in summary["dims"].items()}}
        print(backend, json.dumps(results[backend]))
    path.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
