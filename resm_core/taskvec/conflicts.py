"""`resm conflicts`: where task vectors collaborate and where they fight, per tensor and per layer.

For every pair of task vectors: cosine similarity, and the sign-conflict rate, the fraction of
entries where both vectors are non-zero and their signs differ (TIES' notion of interference).
Layer rows aggregate the raw sums, so they are exact, not means of per-tensor ratios.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.checkpoint.compat import check_tensors
from resm_core.checkpoint.manifest import MANIFEST_NAME, ManifestRecorder
from resm_core.checkpoint.names import layer_group
from resm_core.devices import resolve_device
from resm_core.errors import CheckpointError, ConfigError
from resm_core.taskvec.sources import TaskVectorSource, open_expert

TENSOR_TABLE = "conflicts_tensor.csv"
LAYER_TABLE = "conflicts_layer.csv"
SUMMARY_TABLE = "conflicts_summary.csv"
_SUMS = ["dot", "norm_a_sq", "norm_b_sq", "sign_conflicts", "both_nonzero", "numel"]


def pair_sums(a: torch.Tensor, b: torch.Tensor) -> dict[str, float]:
    both = (a != 0) & (b != 0)
    return {
        "dot": float((a * b).sum()),
        "norm_a_sq": float((a * a).sum()),
        "norm_b_sq": float((b * b).sum()),
        "sign_conflicts": int((both & (torch.sign(a) != torch.sign(b))).sum()),
        "both_nonzero": int(both.sum()),
        "numel": a.numel(),
    }


def finish_rates(df: pd.DataFrame) -> pd.DataFrame:
    denom = (df["norm_a_sq"] * df["norm_b_sq"]).pow(0.5)
    df["cosine"] = (df["dot"] / denom).where(denom > 0)
    df["sign_conflict_rate"] = (df["sign_conflicts"] / df["both_nonzero"]).where(df["both_nonzero"] > 0)
    return df


def conflicts(
    task_vectors: list[Path],
    out: Path,
    names: list[str] | None = None,
    device: str = "auto",
    force: bool = False,
    progress: bool = True,
) -> dict[str, pd.DataFrame]:
    if len(task_vectors) < 2:
        raise ConfigError("conflicts: needs at least two task vectors")
    names = names or [Path(p).name for p in task_vectors]
    if len(names) != len(task_vectors) or len(set(names)) != len(names):
        raise ConfigError(f"names: need {len(task_vectors)} distinct names, got {names}")
    dev = resolve_device(device)
    sources = [open_expert(p) for p in task_vectors]
    for src in sources:
        if not isinstance(src, TaskVectorSource):
            raise CheckpointError(f"{src.path}: is not a task vector (run `resm extract` first)")
    reference = sources[0].shapes()
    for src in sources[1:]:
        check_tensors(reference, src.shapes(), src.path)
    recorder = ManifestRecorder({"task_vectors": [Path(p) for p in task_vectors]})
    rows = []
    empty = torch.empty(0, device=dev)
    for tensor in tqdm(list(reference), desc="conflicts", unit="tensor", disable=not progress):
        deltas = [src.delta(tensor, empty) for src in sources]
        for (i, a), (j, b) in itertools.combinations(enumerate(deltas), 2):
            rows.append(
                {
                    "task_a": names[i],
                    "task_b": names[j],
                    "tensor": tensor,
                    "layer": layer_group(tensor),
                    **pair_sums(a, b),
                }
            )
    per_tensor = finish_rates(pd.DataFrame(rows))
    per_layer = finish_rates(per_tensor.groupby(["task_a", "task_b", "layer"], as_index=False)[_SUMS].sum())
    summary = finish_rates(per_tensor.groupby(["task_a", "task_b"], as_index=False)[_SUMS].sum())
    with AtomicDirectory(out, force, inputs=task_vectors) as tmp:
        per_tensor.to_csv(tmp / TENSOR_TABLE, index=False)
        per_layer.to_csv(tmp / LAYER_TABLE, index=False)
        summary.to_csv(tmp / SUMMARY_TABLE, index=False)
        manifest = recorder.build(action="conflicts", device=str(dev), names=names)
        (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    return {"tensor": per_tensor, "layer": per_layer, "summary": summary}
