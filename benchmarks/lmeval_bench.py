"""Throughput of resm's own transformers backend and lm-eval's HF backend, side by side in one run, on the same
generated task and model: items per second for a two-choice task scored by log-likelihood, the same with a long
prompt (a 250-word preamble) and four choices, and a short generation task. Both run the chat template, float32
on CPU (bf16 on CUDA), the same batch size; the sides alternate, median of --repeats.

    python benchmarks/lmeval_bench.py --model results/default/base        # the embedded default's base (135M)

Not a test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

PREAMBLE = " ".join(f"Rule {i}: compare the numbers digit by digit, from the left." for i in range(1, 26))


def write_task(root: Path, n_mc: int, n_gen: int, max_gen_toks: int) -> tuple[list[dict], list[dict]]:
    rng = random.Random(0)
    rows, long_rows = [], []
    for _ in range(max(n_mc, n_gen)):
        a, b = rng.sample(range(2, 999), 2)
        rows.append(
            {
                "q": f"Which number is larger, {a} or {b}? Answer with the number.",
                "c": [str(a), str(b)],
                "label": int(b > a),
            }
        )
        four = rng.sample(range(2, 999), 4)
        long_rows.append(
            {
                "q": f"{PREAMBLE}\nWhich number is the largest: {', '.join(map(str, four))}?",
                "c": [str(x) for x in four],
                "label": four.index(max(four)),
            }
        )
    with open(root / "long.jsonl", "w") as f:
        for r in long_rows[:n_mc]:
            f.write(json.dumps(r) + "\n")
    for name, n in (("mc", n_mc), ("gen", n_gen)):
        with open(root / f"{name}.jsonl", "w") as f:
            for r in rows[:n]:
                f.write(json.dumps(r) + "\n")
    head = "dataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {data}\ntest_split: test\n"
    (root / "bench_mc.yaml").write_text(
        "task: bench_mc\n" + head.format(data=root / "mc.jsonl") + "output_type: multiple_choice\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{c}}"\ndoc_to_target: label\ntarget_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "bench_long.yaml").write_text(
        "task: bench_long\n" + head.format(data=root / "long.jsonl") + "output_type: multiple_choice\n"
        'doc_to_text: "{{q}}"\ndoc_to_choice: "{{c}}"\ndoc_to_target: label\ntarget_delimiter: ""\n'
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    (root / "bench_gen.yaml").write_text(
        "task: bench_gen\n" + head.format(data=root / "gen.jsonl") + "output_type: generate_until\n"
        'doc_to_text: "{{q}}"\ndoc_to_target: "{{c[label]}}"\n'
        f"generation_kwargs:\n  until: []\n  max_gen_toks: {max_gen_toks}\n  do_sample: false\n"
        "metric_list:\n  - metric: exact_match\n    aggregation: mean\n    higher_is_better: true\n"
    )
    return rows, long_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=Path("results/default/base"))
    ap.add_argument("--mc", type=int, default=200, help="documents of the log-likelihood task")
    ap.add_argument("--gen", type=int, default=48, help="documents of the generation task")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from resm_core.generation import TransformersBackend

    backend = TransformersBackend(args.model, batch_size=args.batch_size, progress=False)
    lm = HFLM(pretrained=backend.model, tokenizer=backend.tokenizer, batch_size=args.batch_size)
    with tempfile.TemporaryDirectory() as tmp:
        rows, long_rows = write_task(Path(tmp), args.mc, args.gen, args.max_new_tokens)
        manager = TaskManager(include_path=tmp, include_defaults=False)

        def resm_mc():
            prompts = [r["q"] for r in rows[: args.mc] for _ in r["c"]]
            backend.logprobs(prompts, [c for r in rows[: args.mc] for c in r["c"]])

        def resm_long():
            prompts = [r["q"] for r in long_rows[: args.mc] for _ in r["c"]]
            backend.logprobs(prompts, [c for r in long_rows[: args.mc] for c in r["c"]])

        def resm_gen():
            backend.generate([r["q"] for r in rows[: args.gen]], args.max_new_tokens)

        def lm_eval(task):
            return lambda: simple_evaluate(
                model=lm,
                tasks=[task],
                task_manager=manager,
                bootstrap_iters=0,
                apply_chat_template=True,
                log_samples=False,
                verbosity="WARNING",
            )

        sides = {
            ("log-likelihood, 2 choices", "resm transformers"): (resm_mc, args.mc),
            ("log-likelihood, 2 choices", "lm-eval hf"): (lm_eval("bench_mc"), args.mc),
            ("log-likelihood, 4 choices, 250-word prompt", "resm transformers"): (resm_long, args.mc),
            ("log-likelihood, 4 choices, 250-word prompt", "lm-eval hf"): (lm_eval("bench_long"), args.mc),
            (f"generation, {args.max_new_tokens} tokens", "resm transformers"): (resm_gen, args.gen),
            (f"generation, {args.max_new_tokens} tokens", "lm-eval hf"): (lm_eval("bench_gen"), args.gen),
        }
        for run, _ in sides.values():  # warm-up: tokenizer caches, first-call allocations, task loading
            run()
        times: dict = {key: [] for key in sides}
        for _ in range(args.repeats):
            for key, (run, _) in sides.items():
                start = time.perf_counter()
                run()
                times[key].append(time.perf_counter() - start)
    rows_out = []
    for (task, side), (_, n) in sides.items():
        median = statistics.median(times[(task, side)])
        rows_out.append(
            {
                "task": task,
                "backend": side,
                "items": n,
                "median_s": round(median, 2),
                "items_per_s": round(n / median, 1),
            }
        )
        print(json.dumps(rows_out[-1]))
    from record import save

    save(
        "lmeval_throughput",
        "Items per second: resm's transformers backend and lm-eval's HF backend, same model, task and batch size",
        rows_out,
        note=f"{args.model}, batch {args.batch_size}, chat template on both sides, median of {args.repeats}",
    )


if __name__ == "__main__":
    main()
