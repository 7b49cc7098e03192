"""Data and training benchmark on the embedded model: SmolLM2-135M-Instruct, real 3H data, this machine.

    python benchmarks/train_bench.py                      # everything below
    python benchmarks/train_bench.py --skip-data --steps 4 --runs sft/lora dpo/lora

Measures
- the wall time of `resm data build` for each embedded dimension (harmlessness includes generating the
  base model's answers for its training and validation prompts; the cache is cleared first);
- seconds per optimizer step, tokens per second and peak RSS of `resm train` for SFT and DPO, full and LoRA,
  each in its own process (so peak RSS is per run). Tokens are TRL's count of tokens in the batches
  (prompt + answer; DPO counts chosen and rejected). The first step (warm-up) is excluded from s/step.
Not a test: the figures depend on the machine. They set the step counts of the default run.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
OUT = ROOT / "out" / "train"
RESM = [sys.executable, "-m", "resm_core.cli", "-q"]


def run(cmd: list[str], env: dict | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, env=env)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--max-train", type=int, default=64, help="training rows per dimension")
    ap.add_argument("--max-val", type=int, default=16)
    ap.add_argument("--runs", nargs="+", default=["sft/full", "sft/lora", "dpo/full", "dpo/lora"])
    ap.add_argument("--skip-data", action="store_true")
    ap.add_argument("--json", type=Path, default=OUT / "train_bench.json")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    cache = Path(os.environ.get("RESM_CACHE", "resources"))
    env = dict(os.environ, RESM_CACHE=str(cache))
    run(RESM + ["assets", "fetch"], env)
    base = OUT / "smollm2-135m-instruct"
    if not base.exists():
        print(
            f"base prepare: {run(RESM + ['base', 'prepare', 'smollm2-135m-instruct', '--out', str(base)], env):.1f} s"
        )
    results: dict = {"data_build_s": {}, "train": {}, "settings": vars(args) | {"json": str(args.json)}}

    data = OUT / "data"
    for dim in ("helpfulness", "honesty", "harmlessness"):
        if args.skip_data and (data / dim).exists():
            continue
        if dim == "harmlessness":
            shutil.rmtree(cache / "generations", ignore_errors=True)
        cmd = RESM + [
            "data",
            "build",
            "--dim",
            dim,
            "--out",
            str(data / dim),
            "--max-train",
            str(args.max_train),
            "--max-val",
            str(args.max_val),
            "--base",
            str(base),
            "--force",
        ]
        secs = run(cmd, env)
        comp = json.loads((data / dim / "composition.json").read_text())
        results["data_build_s"][dim] = {"wall_s": round(secs, 1), "sizes": comp["sizes"], "dropped": comp["dropped"]}
        print(f"data build {dim:13s} {secs:6.1f} s  {comp['sizes']}  dropped {comp['dropped']}", flush=True)

    for spec in args.runs:
        objective, adapter = spec.split("/")
        out = OUT / "runs" / f"{objective}-{adapter}"
        lr = "1e-5" if adapter == "full" else "1e-4"
        cmd = RESM + [
            "train",
            "--base",
            str(base),
            "--data",
            str(data / "helpfulness"),
            "--out",
            str(out),
            "--objective",
            objective,
            "--adapter",
            adapter,
            "--steps",
            str(args.steps),
            "--lr",
            lr,
            "--batch-size",
            str(args.batch_size),
            "--max-length",
            str(args.max_length),
            "--save-steps",
            str(10 * args.steps),
            "--force",
        ]
        wall = run(cmd, env)
        manifest = json.loads((out / "resm_manifest.json").read_text())
        with open(out / "loss.csv") as f:
            curve = list(csv.DictReader(f))
        tokens = float(curve[-1]["num_tokens"]) if curve and curve[-1]["num_tokens"] else None
        runtime = manifest["train_runtime_s"]
        row = {
            "wall_s": round(wall, 1),
            "train_runtime_s": round(runtime, 1),
            "s_per_step": round(runtime / args.steps, 2),
            "tokens_per_s": round(tokens / runtime, 1) if tokens else None,
            "peak_rss_mb": manifest["peak_rss_mb"],
            "first_loss": float(curve[0]["loss"]),
            "last_loss": float(curve[-1]["loss"]),
        }
        results["train"][spec] = row
        print(
            f"train {spec:9s} {row['s_per_step']:6.2f} s/step  {row['tokens_per_s']} tok/s  "
            f"peak RSS {row['peak_rss_mb']:.0f} MB  (wall {wall:.0f} s, loss {row['first_loss']:.3f} -> "
            f"{row['last_loss']:.3f})",
            flush=True,
        )
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print(f"written to {args.json}")
    from record import save

    rows = [{"run": spec, **row} for spec, row in results["train"].items()]
    rows += [{"run": f"data build {dim}", "wall_s": d["wall_s"]} for dim, d in results["data_build_s"].items()]
    save("train", f"Training: s/step and tokens/s ({args.steps} steps, batch {args.batch_size})", rows)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT.parent))
    main()
