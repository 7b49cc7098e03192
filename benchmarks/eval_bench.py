"""Evaluation benchmark: wall time of `resm evaluate` per arm on the embedded model and data, the share
spent generating vs scoring (log-probs and judges), and items per second per benchmark (validation and
test items together), with the benchmark sizes of the embedded default (config.yaml) or --config.

    python benchmarks/eval_bench.py                 # needs benchmarks/train_bench.py's base and data
    python benchmarks/eval_bench.py --backends transformers vllm     # where vllm imports
    OMP_NUM_THREADS=1 python benchmarks/eval_bench.py   # one core, as each of the workflow's 2 parallel jobs

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
    ap.add_argument(
        "--config",
        type=Path,
        default=ROOT.parent / "config.yaml",
        help="workflow config whose `evaluation` section sets the benchmarks and sizes",
    )
    args = ap.parse_args()
    if not (args.data / "harmlessness" / "test.jsonl").is_file():
        sys.exit(f"{args.data}: run benchmarks/train_bench.py first (it builds the data and the base)")
    OUT.mkdir(parents=True, exist_ok=True)
    resm = [args.python, "-m", "resm_core.cli", "-q"]
    judges = OUT / "judges"
    if not all((judges / f).is_file() for f in ("refusal_judge.json", "compliance_judge.json")):
        start = time.perf_counter()
        subprocess.run(resm + ["judge", "fit", "--out", str(judges)], check=True)
        print(f"judge fit: {time.perf_counter() - start:.1f} s")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(args.model)
    import yaml

    evaluation = (yaml.safe_load(args.config.read_text()) or {}).get("evaluation", {})
    eval_config = OUT / "eval_config.yaml"
    eval_config.write_text(
        yaml.safe_dump(
            {k: v for k, v in evaluation.items() if k in ("benchmarks", "max_new_tokens", "batch_size", "n_bootstrap")}
        )
    )
    path = OUT / "eval_bench.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    for backend in args.backends:
        out = OUT / f"base-{backend}"
        start = time.perf_counter()
        subprocess.run(
            resm
            + [
                "evaluate",
                "--model",
                str(args.model),
                "--arm",
                "base",
                "--data",
                str(args.data),
                "--judges",
                str(judges),
                "--out",
                str(out),
                "--backend",
                backend,
                "--config",
                str(eval_config),
                "--force",
            ],
            check=True,
        )
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
        results[backend] = {
            "wall_s": round(wall, 1),
            **t,
            "generations": summary["generations"],
            "generation_share": round(t["generation_s"] / t["total_s"], 3),
            "scoring_share": round(t["scoring_s"] / t["total_s"], 3),
            "tokens_generated": tokens,
            "generated_tokens_per_s": round(tokens / t["generation_s"], 1),
            "scores": {d: round(v["score"], 3) for d, v in summary["dims"].items()},
            "items_per_s": per_benchmark(out, summary),
        }
        print(backend, json.dumps(results[backend]))
    path.write_text(json.dumps(results, indent=2) + "\n")
    from record import save

    keep = ("wall_s", "total_s", "generation_s", "scoring_s", "generations", "generated_tokens_per_s")
    rows = [{"backend": b, **{k: r[k] for k in keep if k in r}} for b, r in results.items()]
    save("eval", "Evaluation of one arm: generation and scoring time per backend", rows)


def per_benchmark(out: Path, summary: dict) -> dict:
    """Items scored per second by each benchmark (answers shared with an earlier benchmark cost it nothing)."""
    rates = {}
    for name in summary["benchmarks"]:
        result = json.loads((out / f"{name}.json").read_text())
        items = result["n"] + (result.get("val") or {}).get("n", 0)
        rates[name] = {
            "items": items,
            "wall_s": result["wall_time_s"],
            "items_per_s": round(items / max(result["wall_time_s"], 1e-9), 2),
        }
    return rates


if __name__ == "__main__":
    main()
