"""Merge engine benchmark: wall time, peak RSS and throughput per method, next to the I/O floor,
and against mergekit on the methods both implement.

    python benchmarks/merge_bench.py                                   # both sizes, every method
    python benchmarks/merge_bench.py --sizes smollm2-135m --methods ties tsv_m
    python benchmarks/merge_bench.py --mergekit /path/to/venv/bin/mergekit-yaml

Checkpoints (a base and 3 experts, bf16, random weights with structured deltas) are generated once
under --out (benchmarks/out/). Every measurement runs in a fresh child process, so peak RSS is per method.
On a machine whose disk is slow or whose kernel pages out cold page cache (this project's VMs do both),
put --out on a tmpfs (`--out /dev/shm/bench`): the inputs then stay in memory and every tool reads and
writes at memory speed, which is what the figures compare; on a disk, run time follows the page cache.
Throughput = GB of input weights (base + experts) read per second of wall time.
Not a test: figures depend on the machine, and are reported in the README and closing notes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))

from resm_core.merge.catalogue import all_methods, get_method  # noqa: E402
from resm_core.synthetic import SHAPES, write_base, write_experts  # noqa: E402

TASKS = ("helpfulness", "honesty", "harmlessness")
# our method -> (mergekit method, parameters that make both compute the same merge)
MERGEKIT = {
    "linear": ("linear", {"weight": 1.0}, {"normalize": True}),  # the experts' mean: mergekit reads no base
    "task_arithmetic": ("task_arithmetic", {"weight": 0.3}, {"normalize": False}),
    "ties": ("ties", {"weight": 1.0, "density": 0.2}, {"normalize": True}),
    "dare_ties": ("dare_ties", {"weight": 1.0, "density": 0.1}, {"normalize": True}),
    "dare_linear": ("dare_linear", {"weight": 0.3, "density": 0.1}, {"normalize": False}),
    "breadcrumbs": ("breadcrumbs", {"weight": 0.3, "density": 0.9, "gamma": 0.01}, {"normalize": False}),
    "breadcrumbs_ties": ("breadcrumbs_ties", {"weight": 1.0, "density": 0.9, "gamma": 0.01}, {"normalize": True}),
    "model_stock": ("model_stock", {}, {}),
    "della_linear": ("della_linear", {"weight": 0.3, "density": 0.3, "epsilon": 0.1}, {"normalize": False}),
    "della": ("della", {"weight": 1.0, "density": 0.3, "epsilon": 0.1}, {"normalize": True}),
}


REPEAT = 1
LONG_S = 60.0  # a comparison whose first round has a run this long (or longer) is measured once
WARM: list[Path] = []  # the inputs, read into the page cache before every measured run

Command = tuple[list[str], dict | None]


def measured(cmd: list[str], env: dict | None = None) -> dict:
    return alternating([(cmd, env)])[0]


def alternating(commands: list[Command]) -> list[dict]:
    """Each command once per round, in turn, for REPEAT rounds (one, when a run of the first round took
    LONG_S or more): the run of median wall time of each (the lower middle of an even count), each in a fresh
    child with its inputs in the page cache. Alternating spreads this machine's drifts in speed over both
    tools alike."""
    runs: list[list[dict]] = [[] for _ in commands]
    for round_ in range(REPEAT):
        for measured_runs, (cmd, env) in zip(runs, commands):
            warm(WARM)
            measured_runs.append(_measured_once(cmd, env))
        if round_ == 0 and max(r[0]["wall_s"] for r in runs) >= LONG_S:
            break
    return [sorted(r, key=lambda x: x["wall_s"])[(len(r) - 1) // 2] | {"runs": len(r)} for r in runs]


def warm(dirs: list[Path]) -> None:
    """Read every weight file once, so each run starts with its inputs in the page cache, as right after the
    step that wrote them (a no-op cost on a tmpfs). A kernel that pages out cold page cache (DAMON) may still
    evict them: use a tmpfs --out for figures that do not depend on the disk."""
    for d in dirs:
        for f in sorted(d.glob("*.safetensors")):
            with open(f, "rb", buffering=0) as handle:
                while handle.read(64 << 20):
                    pass


def _measured_once(cmd: list[str], env: dict | None = None) -> dict:
    probe = (
        "import resource, subprocess, sys, time, json; t = time.perf_counter(); "
        "r = subprocess.run(sys.argv[1:]); w = time.perf_counter() - t; "
        "print(json.dumps({'rc': r.returncode, 'wall_s': w, "
        "'peak_rss_mb': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, *cmd], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return result


def prepare(size: str, out: Path) -> tuple[Path, list[Path]]:
    base, experts = out / size / "base", [out / size / t for t in TASKS]
    if not base.exists():
        t = time.perf_counter()
        write_base(base, SHAPES[size], seed=0, dtype=torch.bfloat16)
        print(f"[{size}] base written in {time.perf_counter() - t:.0f} s", flush=True)
    if not all(e.exists() for e in experts):
        for e in experts:
            shutil.rmtree(e, ignore_errors=True)
        t = time.perf_counter()
        write_experts(base, experts, seed=0)
        print(f"[{size}] experts written in {time.perf_counter() - t:.0f} s", flush=True)
    os.sync()  # let writeback of fresh checkpoints finish before anything is timed
    return base, experts


def input_gb(base: Path, experts: list[Path]) -> float:
    return sum(f.stat().st_size for d in [base, *experts] for f in d.glob("*.safetensors")) / 1e9


IO_FLOOR = """
import sys
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter
base, *experts, out = sys.argv[1:]
readers = [CheckpointReader(p) for p in [base, *experts]]
layout = [(k, readers[0].shape(k), readers[0].dtype(k)) for k in readers[0].keys]
with ShardedWriter(out, 2 * 10**9, force=True, layout=layout) as w:  # streamed, as the engine writes
    for k in readers[0].keys:
        tensors = [r.get(k) for r in readers]
        w.add(k, tensors[0])
"""


def relative_error(a_dir: Path, b_dir: Path, base_dir: Path) -> float:
    """||(a - base) - (b - base)|| / ||b - base|| over all tensors (merged-delta error)."""
    from resm_core.checkpoint.reader import CheckpointReader

    a, b, base = CheckpointReader(a_dir), CheckpointReader(b_dir), CheckpointReader(base_dir)
    num = den = 0.0
    for k in b.keys:
        ref = b.get(k).float() - base.get(k).float()
        num += float((a.get(k).float() - base.get(k).float() - ref).pow(2).sum())
        den += float(ref.pow(2).sum())
    return (num / den) ** 0.5 if den else 0.0


def truncation_errors(base_dir: Path, expert_dir: Path, variants: list[str], n_tasks: int = 3) -> dict[str, float]:
    """Mean relative error ||D - D_k|| / ||D|| of the rank-floor(r/T) truncation of one expert's task-vector
    matrices in the first layer, per SVD variant: the quantity the lowrank bound is about (exact is the
    optimum)."""
    from resm_core.checkpoint.names import is_vocab_tensor, layer_group
    from resm_core.checkpoint.reader import CheckpointReader
    from resm_core.merge.svd import leading_components, reconstruct

    base, expert = CheckpointReader(base_dir), CheckpointReader(expert_dir)
    vocab = (base.config or {}).get("vocab_size")
    errors: dict[str, list[float]] = {v: [] for v in variants}
    matrices = [k for k in base.keys if len(base.shape(k)) == 2 and not is_vocab_tensor(k, base.shape(k), vocab)]
    for k in [m for m in matrices if layer_group(m) == layer_group(matrices[0])]:
        d = expert.get(k).float() - base.get(k).float()
        rank = min(d.shape) // n_tasks
        for method in errors:
            c = leading_components(d, rank, method)
            errors[method].append(float((d - reconstruct(c)).norm() / d.norm()))
    return {v: sum(e) / len(e) for v, e in errors.items()}


def run_size(size: str, methods: list[str], args) -> list[dict]:
    base, experts = prepare(size, args.out)
    WARM[:] = [base, *experts]
    gb = input_gb(base, experts)
    merges = args.out / size / "merges"
    rows = []
    floor = measured([sys.executable, "-c", IO_FLOOR, str(base), *map(str, experts), str(merges / "_io_floor")])
    rows.append({"size": size, "method": "(I/O floor)", "tool": "read+write", **_fmt(floor, gb)})
    shutil.rmtree(merges / "_io_floor", ignore_errors=True)
    print(_line(rows[-1]), flush=True)
    plan = runs(methods, args.svd)
    for method, svd in plan:
        params = [] if svd is None else ["--param", f"svd={svd}"]
        label = method if svd is None else f"{method} ({svd})"
        out = merges / (method if svd is None else f"{method}_{svd}")
        commands = [(resm_merge(method, base, experts, out, args.device, params), None)]
        compared = bool(args.mergekit) and method in MERGEKIT
        if compared:
            commands.append(mergekit_command(method, base, experts, merges / f"mergekit_{method}", args.mergekit))
        res, *theirs = alternating(commands)
        rows.append({"size": size, "method": label, "tool": "resm", **_fmt(res, gb)})
        rows[-1]["x_io_floor"] = round(res["wall_s"] / floor["wall_s"], 2)
        if svd not in (None, "exact") and (merges / f"{method}_exact").exists():
            rows[-1]["merged_delta_diff_vs_exact"] = float(
                f"{relative_error(out, merges / f'{method}_exact', base):.2e}"
            )
        print(_line(rows[-1]), flush=True)
        if theirs:
            rows.append({"size": size, "method": method, "tool": "mergekit", **_fmt(theirs[0], gb)})
            rows[-1]["speedup_vs_mergekit"] = round(rows[-1]["wall_s"] / rows[-2]["wall_s"], 2)
            rows[-1]["rss_resm_over_mergekit"] = round(rows[-2]["peak_rss_mb"] / rows[-1]["peak_rss_mb"], 2)
            print(_line(rows[-1]), flush=True)
            shutil.rmtree(merges / f"mergekit_{method}", ignore_errors=True)
        if svd != "exact":  # an 8B-shaped merge is 3 GB: only the exact ones, which others are compared with, stay
            shutil.rmtree(out, ignore_errors=True)
    if any(svd not in (None, "exact") for _, svd in plan):
        rows.append({"size": size, "method": "rank-r/3 truncation error (one expert)", "tool": "resm"})
        for svd, err in truncation_errors(base, experts[0], args.svd).items():
            rows[-1][f"truncation_error_{svd}"] = float(f"{err:.4e}")
        print(rows[-1], flush=True)
    for method in methods:
        shutil.rmtree(merges / f"{method}_exact", ignore_errors=True)
    return rows


def runs(methods: list[str], svd_variants: list[str]) -> list[tuple[str, str | None]]:
    """(method, svd) pairs to measure: a method with an `svd` parameter once per variant, exact first
    (the others are compared with it); every other method once, with svd None."""
    variants = sorted(svd_variants, key=lambda v: v != "exact")
    return [
        (m, v) for m in methods for v in (variants if any(p.name == "svd" for p in get_method(m).params) else [None])
    ]


def resm_merge(method: str, base: Path, experts: list[Path], out: Path, device: str, params: list[str]) -> list[str]:
    return [
        sys.executable,
        "-m",
        "resm_core.cli",
        "-q",
        "merge",
        "--method",
        method,
        "--base",
        str(base),
        "--experts",
        *map(str, experts),
        "--out",
        str(out),
        "--force",
        "--device",
        device,
        *params,
    ]


def mergekit_command(method: str, base: Path, experts: list[Path], out: Path, mergekit_yaml: str) -> Command:
    name, model_params, global_params = MERGEKIT[method]
    config = {
        "merge_method": name,
        "base_model": str(base),
        "dtype": "bfloat16",
        "parameters": global_params,
        "models": [{"model": str(e), "parameters": model_params} for e in experts],
    }
    if name == "linear":
        del config["base_model"]
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = out.parent / f"{out.name}.yaml"
    import yaml

    cfg.write_text(yaml.safe_dump(config))
    shutil.rmtree(out, ignore_errors=True)
    cmd = [mergekit_yaml, str(cfg), str(out), "--lazy-unpickle", "--out-shard-size", "2B"]
    return cmd, {"CUDA_VISIBLE_DEVICES": ""}


def _fmt(res: dict, gb: float) -> dict:
    return {
        "wall_s": round(res["wall_s"], 2),
        "peak_rss_mb": round(res["peak_rss_mb"]),
        "throughput_gb_s": round(gb / res["wall_s"], 3),
        "input_gb": round(gb, 2),
        "runs": res.get("runs", 1),
    }


def _line(row: dict) -> str:
    extra = "".join(
        f"  {k}={row[k]}"
        for k in (
            "x_io_floor",
            "speedup_vs_mergekit",
            "rss_resm_over_mergekit",
            "merged_delta_diff_vs_exact",
        )
        if k in row
    )
    return (
        f"{row['size']:14s} {row['method']:24s} {row['tool']:10s} {row['wall_s']:8.2f} s "
        f"{row['peak_rss_mb']:7d} MB {row['throughput_gb_s']:7.3f} GB/s{extra}"
    )


IO_NOTE = (
    "wall_s: one merge, process start included; peak_rss_mb: the child process's; throughput_gb_s: GB of input "
    "weights read per second of wall time; mergekit rows where a mergekit venv was found."
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["smollm2-135m", "llama-1.1b"], choices=list(SHAPES))
    parser.add_argument("--methods", nargs="+", default=sorted(all_methods()))
    parser.add_argument(
        "--svd",
        nargs="+",
        default=["exact", "lowrank"],
        choices=["exact", "lowrank"],
        help="SVD variants of the methods that take one (tsv_m, resm); each other variant reports the "
        "relative distance of its merged delta to the exact merge's, when exact ran too",
    )
    parser.add_argument("--mergekit", help="path to mergekit-yaml (installed in a separate venv)")
    parser.add_argument("--device", default="cpu", help="where resm merges: cpu (default), cuda, cuda:N")
    parser.add_argument("--out", type=Path, default=ROOT / "out")
    parser.add_argument("--json", type=Path, help="write the rows here too")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds (resm and mergekit alternating); the median run is reported"
    )
    args = parser.parse_args()
    global REPEAT
    REPEAT = args.repeat
    if args.mergekit is None and (ROOT / ".mergekit-venv" / "bin" / "mergekit-yaml").exists():
        args.mergekit = str(ROOT / ".mergekit-venv" / "bin" / "mergekit-yaml")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores; "
        f"mergekit: {args.mergekit or 'not found (skipped)'}"
    )
    print(f"{'size':14s} {'method':24s} {'tool':10s} {'wall':>10s} {'peak RSS':>10s} {'throughput':>12s}")
    rows = []
    for size in args.sizes:
        rows += run_size(size, args.methods, args)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    from record import save

    name = "merge_" + "_".join(args.sizes) + ("" if args.device == "cpu" else f"_{args.device.split(':')[0]}")
    save(name, f"Merge engine on {', '.join(args.sizes)} ({args.device})", rows, note=IO_NOTE)


if __name__ == "__main__":
    main()
