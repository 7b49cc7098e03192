"""`resm demo`: build a Llama-shaped base and three experts, merge them with every registered method,
and tabulate how much of each expert's task vector each merge keeps.

It exercises the whole merge path (checkpoint I/O, checks, statistics passes, every method, atomic
output, manifests) in a couple of minutes on a laptop, with nothing to download.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import pandas as pd

from resm_core.checkpoint.reader import CheckpointReader
from resm_core.merge.catalogue import all_methods
from resm_core.merge.engine import merge
from resm_core.merge.request import MergeRequest
from resm_core.synthetic import SHAPES, write_base, write_experts

log = logging.getLogger(__name__)
TASKS = ("helpfulness", "honesty", "harmlessness")


def retention(base: CheckpointReader, experts: list[CheckpointReader], merged: CheckpointReader) -> list[float]:
    """Per expert: <merged delta, task delta> / ||task delta||^2 over the whole model, i.e. the share
    of the task vector's direction that survives in the merge (1 = fully kept)."""
    dots = [0.0] * len(experts)
    norms = [0.0] * len(experts)
    for name in merged.keys:
        b = base.get(name).float()
        m = merged.get(name).float() - b
        for i, e in enumerate(experts):
            d = e.get(name).float() - b
            dots[i] += float((m * d).sum())
            norms[i] += float((d * d).sum())
    return [dot / n if n > 0 else float("nan") for dot, n in zip(dots, norms)]


def run_demo(
    out: Path, shape: str = "small", methods: list[str] | None = None, seed: int = 0, device: str = "auto"
) -> pd.DataFrame:
    out = Path(out)
    base_dir, expert_dirs = out / shape / "base", [out / shape / "experts" / t for t in TASKS]
    if not base_dir.exists():
        write_base(base_dir, SHAPES[shape], seed=seed)
    if not all(d.exists() for d in expert_dirs):
        for d in expert_dirs:
            shutil.rmtree(d, ignore_errors=True)
        write_experts(base_dir, expert_dirs, seed=seed)
    else:
        log.info("reusing the checkpoints in %s", out / shape)
    base = CheckpointReader(base_dir)
    experts = [CheckpointReader(d) for d in expert_dirs]
    rows = []
    for name in methods or sorted(all_methods()):
        target = out / shape / "merges" / name
        started = time.perf_counter()
        merge(
            MergeRequest(
                base=base_dir,
                experts=expert_dirs,
                method=name,
                out=target,
                seed=seed,
                device=device,
                force=True,
                progress=False,
            )
        )
        seconds = time.perf_counter() - started
        keep = retention(base, experts, CheckpointReader(target))
        # per-method peak memory needs a process per merge: benchmarks/merge_bench.py measures it
        rows.append(
            {"method": name, "seconds": round(seconds, 2), **{f"kept_{t}": round(k, 3) for t, k in zip(TASKS, keep)}}
        )
        log.info("%s done", name)
    table = pd.DataFrame(rows)
    table.to_csv(out / shape / "demo_table.csv", index=False)
    return table


def shape_summary(shape: str) -> str:
    s = SHAPES[shape]
    return f"{shape}: {s.n_params() / 1e6:.1f}M parameters, {s.layers} layers, hidden {s.hidden}"
