#!/usr/bin/env bash
# The GPU check, ready to run on a machine with one CUDA GPU (under 8 minutes on an A100/H100-class GPU):
#   bash benchmarks/gpu_check.sh            # after `make setup`; OUT=dir to keep the results elsewhere
# 1. tests/test_cuda.py (the CUDA paths: merge methods on GPU equal CPU, dtypes, devices);
# 2. every merge method on the 1.1B-shaped checkpoints on the GPU, and the elementwise ones on the CPU;
# 3. a few DPO LoRA steps of SmolLM2-135M-Instruct (bf16 on CUDA);
# 4. generation with the transformers backend, and vLLM where it is installed (tokens/s);
# then one table. Where CUDA is absent it stops at once with one line saying so (exit 2).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=${OUT:-benchmarks/out/gpu_check}
if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to $PY (torch.cuda.is_available() is False); run it on a GPU node" >&2
    exit 2
fi
mkdir -p "$OUT"
export RESM_CACHE=${RESM_CACHE:-resources}
"$PY" -m pytest -q tests/test_cuda.py 2>&1 | tail -1 | tee "$OUT/cuda_tests.txt"
"$PY" benchmarks/merge_bench.py --sizes llama-1.1b --device cuda --lowrank-sizes --json "$OUT/merge_cuda.json" \
    --out "$OUT/merge"
"$PY" benchmarks/merge_bench.py --sizes llama-1.1b --device cpu --methods task_arithmetic ties dare_ties \
    --json "$OUT/merge_cpu.json" --out "$OUT/merge"
"$PY" benchmarks/train_bench.py --runs dpo/lora --steps 8 --max-train 32 --max-val 8 --json "$OUT/train.json"
backends=transformers
if "$PY" -c 'import vllm' 2>/dev/null; then backends="transformers vllm"; fi
# shellcheck disable=SC2086
"$PY" benchmarks/eval_bench.py --backends $backends
"$PY" - "$OUT" <<'PY'
import json, sys
from pathlib import Path

out = Path(sys.argv[1])
print("\n| check | figure |\n|---|---|")
print(f"| tests/test_cuda.py | {(out / 'cuda_tests.txt').read_text().strip()} |")
cpu = {r["method"]: r for r in json.loads((out / "merge_cpu.json").read_text())}
for r in json.loads((out / "merge_cuda.json").read_text()):
    if r["tool"] == "resm":
        vs = f", CPU {cpu[r['method']]['wall_s']:.1f} s" if r["method"] in cpu else ""
        print(f"| merge {r['method']} (1.1B shape, GPU) | {r['wall_s']:.1f} s{vs} |")
for spec, r in json.loads((out / "train.json").read_text())["train"].items():
    print(f"| train {spec} SmolLM2-135M bf16 | {r['s_per_step']} s/step, {r['tokens_per_s']} tokens/s |")
evals = Path("benchmarks/out/eval/eval_bench.json")
for backend, r in (json.loads(evals.read_text()) if evals.is_file() else {}).items():
    print(f"| evaluate base, {backend} | {r.get('wall_s')} s, {r.get('generated_tokens_per_s')} generated tokens/s |")
PY
