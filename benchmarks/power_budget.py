"""What a target detectable difference costs: from a finished grid, the test items each balance benchmark
would need for merge-vs-mix `mdd_80` to reach --target, and the evaluation time that would take at the
grid's own measured seconds per answer, beside a floor set by arithmetic alone (2 x parameters x tokens
per answer, at the fp32 matrix-multiply rate measured here).

    python benchmarks/power_budget.py --results results/default --target 0.05

`mdd_80` is a multiple of the paired standard error, so it shrinks as 1/sqrt(items): the projection scales
each row's measured `mdd_80` by that law, holding the per-item spread the run measured. Not a test: the
seconds depend on the machine, and the matmul rate on what else runs on it (measure on an idle one).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path


def matmul_gflops(threads: int, size: int = 1024, repeats: int = 20) -> float:
    """fp32 matrix-multiply rate, GFLOP/s, on `threads` threads: the best a dense forward pass can do."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * size**3 * repeats / (time.perf_counter() - start) / 1e9


def answer_tokens(results: Path, arm_dir: Path, benchmarks: list[str]) -> float:
    """Mean prompt + response tokens per generated answer (chat template included), under the arm's tokenizer."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(results / "base")
    counts = []
    for name in benchmarks:
        for line in (arm_dir / f"{name}.jsonl").read_text().splitlines():
            rec = json.loads(line)
            if rec.get("response") is None:
                continue
            chat = tokenizer.apply_chat_template([{"role": "user", "content": rec["prompt"]}], tokenize=False)
            counts.append(len(tokenizer(chat + rec["response"], add_special_tokens=False)["input_ids"]))
    return sum(counts) / max(len(counts), 1)


def main() -> None:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", type=Path, default=Path("results/default"))
    ap.add_argument("--target", type=float, default=0.05, help="the mdd_80 to reach on balance")
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()

    rows = pd.read_csv(args.results / "report" / "comparisons.csv")
    head = rows[(rows["comparison"] == "merge_vs_mix") & (rows["metric"] == "balance") & (rows["split"] == "test")]
    summaries = sorted((args.results / "eval").rglob("summary.json"))
    arms = [json.loads(p.read_text()) for p in summaries]
    base_dir = args.results / "eval" / "base"
    base = json.loads((base_dir / "summary.json").read_text())
    balance = [n for n, b in base["benchmarks"].items() if b.get("in_balance", True)]
    per_benchmark = {n: json.loads((base_dir / f"{n}.json").read_text()) for n in balance}
    test_items = {n: r["n"] for n, r in per_benchmark.items()}
    val_items = {n: (r.get("val") or {}).get("n", 0) for n, r in per_benchmark.items()}

    answers = sum(a["generations"] for a in arms)
    eval_s = sum(a["timing"]["total_s"] for a in arms)
    s_per_answer = eval_s / answers  # one job's seconds (the grid runs `cores` jobs side by side)
    worst = float(head["mdd_80"].max())
    scale = (worst / args.target) ** 2
    needed = {n: math.ceil(k * scale) for n, k in test_items.items()}
    answers_needed = len(arms) * sum(needed[n] + val_items[n] for n in balance)
    projected_s = answers_needed * s_per_answer / args.cores

    from resm_core.checkpoint.reader import CheckpointReader

    weights = CheckpointReader(args.results / "base")
    params = sum(math.prod(weights.shape(name)) for name in weights.keys)
    weights.close()
    tokens = answer_tokens(args.results, base_dir, balance)
    gflops = matmul_gflops(threads=args.cores)
    floor_s = answers_needed * 2 * params * tokens / (gflops * 1e9)

    report = {
        "results": str(args.results),
        "merge_vs_mix_mdd_80": {c: round(m, 3) for c, m in zip(head["combo"], head["mdd_80"])},
        "test_items_now": test_items,
        "target_mdd_80": args.target,
        "test_items_needed": needed,
        "arms": len(arms),
        "answers_per_arm_now": round(answers / len(arms)),
        "measured_s_per_answer_per_job": round(s_per_answer, 3),
        "evaluation_s_now": round(eval_s / args.cores),
        "evaluation_s_at_target": round(projected_s),
        "parameters": params,
        "tokens_per_answer": round(tokens, 1),
        "fp32_matmul_gflops": round(gflops, 1),
        "arithmetic_floor_s_at_target": round(floor_s),
        "cores": args.cores,
    }
    print(json.dumps(report, indent=2))
    from record import save

    rows = [{"figure": key, "value": value} for key, value in report.items() if key != "results"]
    save("power_budget", f"What an mdd_80 of {args.target} costs ({args.results})", rows)


if __name__ == "__main__":
    main()
