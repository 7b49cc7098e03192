"""`resm extract`: write a task vector (expert - base) and its per-tensor statistics table."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from resm_core.checkpoint.manifest import MANIFEST_NAME, ManifestRecorder
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter, parse_size
from resm_core.devices import dtype_name, resolve_device, resolve_dtype
from resm_core.errors import NumericError
from resm_core.hub import local_model
from resm_core.options import build
from resm_core.taskvec.request import ExtractRequest
from resm_core.taskvec.sources import TASKVEC_MARKER, open_expert
from resm_core.taskvec.stats import tensor_stats

log = logging.getLogger(__name__)

STATS_NAME = "taskvec_stats.csv"


def extract(base: Path, expert: Path, out: Path, **options) -> pd.DataFrame:
    """`options` are ExtractRequest fields (resm_core/taskvec/request.py)."""
    return extract_request(
        build(ExtractRequest, {"base": Path(base), "expert": Path(expert), "out": Path(out), **options})
    )


def extract_request(req: ExtractRequest) -> pd.DataFrame:
    req = replace(req, base=local_model(req.base, req.allow_pickle), expert=local_model(req.expert, req.allow_pickle))
    base, expert, out, tol, outlier_m, energy_top = (
        req.base,
        req.expert,
        req.out,
        req.tol,
        req.outlier_m,
        req.energy_top,
    )
    spectrum, device, allow_pickle, progress = req.spectrum, req.device, req.allow_pickle, req.progress
    dtype = dtype_name(req.dtype, "extract.dtype")
    dev = resolve_device(device)
    base_reader = CheckpointReader(base, allow_pickle=allow_pickle)
    source = open_expert(expert, allow_pickle, req.base_vocabulary)
    source.check_against(base_reader)
    recorder = ManifestRecorder({"base": Path(base), "expert": Path(expert)})
    rows = []
    with ShardedWriter(out, parse_size(req.shard_size), force=req.force, inputs=[base, expert]) as writer:
        for name in tqdm(base_reader.keys, desc="extract", unit="tensor", disable=not progress):
            if not base_reader.dtype(name).is_floating_point:
                continue
            b = base_reader.get(name).to(dev, torch.float32)
            d = source.delta(name, b)
            if not torch.isfinite(d).all():
                raise NumericError(f"{source.path}: the delta of tensor {name} holds NaN or Inf")
            writer.add(name, d.to(resolve_dtype(dtype)).cpu())
            rows.append(
                tensor_stats(name, d, b, tol=tol, outlier_m=outlier_m, energy_top=energy_top, spectrum=spectrum)
            )
        table = pd.DataFrame(rows)
        table.to_csv(writer.staging_dir / STATS_NAME, index=False)
        writer.copy_aux_files(base_reader.directory)
        writer.write_json(
            TASKVEC_MARKER,
            {
                "kind": "task_vector",
                "base": str(Path(base).resolve()),
                "expert": str(Path(expert).resolve()),
                "source_kind": source.kind,
                "dtype": dtype,
                "expert_dtype": _dtype_name(source.weights_dtype()),
            },
        )
        writer.write_json(
            MANIFEST_NAME,
            recorder.build(
                action="extract",
                device=str(dev),
                dropped_vocabulary_rows=source.extra_rows,
                dtype=dtype,
                tol=tol,
                outlier_m=outlier_m,
                energy_top=energy_top,
                spectrum=spectrum,
            ),
        )
    return table


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None
