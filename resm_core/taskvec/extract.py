"""`resm extract`: write a task vector (expert - base) and its per-tensor statistics table."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from resm_core.checkpoint.manifest import MANIFEST_NAME, ManifestRecorder
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter, parse_size
from resm_core.errors import ConfigError, NumericError
from resm_core.merge.engine import resolve_device
from resm_core.taskvec.sources import TASKVEC_MARKER, open_expert
from resm_core.taskvec.stats import tensor_stats

log = logging.getLogger(__name__)

STATS_NAME = "taskvec_stats.csv"
TV_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def extract(base: Path, expert: Path, out: Path, *, dtype: str = "fp32", tol: float = 1e-8,
            outlier_m: float = 5.0, energy_top: float = 0.1, spectrum: bool = True, device: str = "auto",
            shard_size: str | int = "2GB", allow_pickle: bool = False, force: bool = False,
            progress: bool = True) -> pd.DataFrame:
    if dtype not in TV_DTYPES:
        raise ConfigError(f"dtype: {dtype!r} is not one of {', '.join(TV_DTYPES)}")
    if not 0 < energy_top <= 1:
        raise ConfigError(f"energy_top: {energy_top} is outside (0, 1]")
    dev = resolve_device(device)
    base_reader = CheckpointReader(base, allow_pickle=allow_pickle)
    source = open_expert(expert, allow_pickle)
    source.check_against(base_reader)
    recorder = ManifestRecorder({"base": Path(base), "expert": Path(expert)})
    rows = []
    with ShardedWriter(out, parse_size(shard_size), force=force) as writer:
        for name in tqdm(base_reader.keys, desc="extract", unit="tensor", disable=not progress):
            if not base_reader.dtype(name).is_floating_point:
                continue
            b = base_reader.get(name).to(dev, torch.float32)
            d = source.delta(name, b)
            if not torch.isfinite(d).all():
                raise NumericError(f"{source.path}: the delta of tensor {name} holds NaN or Inf")
            writer.add(name, d.to(TV_DTYPES[dtype]).cpu())
            rows.append(tensor_stats(name, d, b, tol=tol, outlier_m=outlier_m, energy_top=energy_top,
                                     spectrum=spectrum))
        table = pd.DataFrame(rows)
        table.to_csv(writer.staging_dir / STATS_NAME, index=False)
        writer.copy_aux_files(base_reader.directory)
        writer.write_json(TASKVEC_MARKER, {"kind": "task_vector", "base": str(Path(base).resolve()),
                                           "expert": str(Path(expert).resolve()), "source_kind": source.kind,
                                           "dtype": dtype, "expert_dtype": _dtype_name(source.weights_dtype())})
        writer.write_json(MANIFEST_NAME, recorder.build(
            action="extract", device=str(dev), dtype=dtype, tol=tol, outlier_m=outlier_m,
            energy_top=energy_top, spectrum=spectrum))
    return table


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None
