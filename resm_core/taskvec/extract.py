"""`resm extract`: write a task vector (expert - base) and its per-tensor statistics table."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from resm_core.checkpoint.manifest import MANIFEST_NAME, ManifestRecorder, relative_paths
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
    dev = resolve_device(device)
    base_reader = CheckpointReader(base, allow_pickle=allow_pickle)
    source = open_expert(expert, allow_pickle, req.base_vocabulary)
    source.check_against(base_reader)
    dtype = _stored_dtype(req.dtype, base_reader, source)
    rounding = Rounding()
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
            stored = d.to(resolve_dtype(dtype))
            rounding.add(stored, d)
            writer.add(name, stored.cpu())
            rows.append(
                tensor_stats(name, d, b, tol=tol, outlier_m=outlier_m, energy_top=energy_top, spectrum=spectrum)
            )
        table = pd.DataFrame(rows)
        table.to_csv(writer.staging_dir / STATS_NAME, index=False)
        writer.copy_aux_files(base_reader.directory)
        writer.write_json(
            TASKVEC_MARKER,
            relative_paths(
                {
                    "kind": "task_vector",
                    "base": str(Path(base).resolve()),
                    "expert": str(Path(expert).resolve()),
                    "source_kind": source.kind,
                    "dtype": dtype,
                    "expert_dtype": _dtype_name(source.weights_dtype()),
                },
                out,
            ),
        )
        writer.write_json(
            MANIFEST_NAME,
            recorder.build(
                relative_to=out,
                action="extract",
                device=str(dev),
                dropped_vocabulary_rows=source.extra_rows,
                dtype=dtype,
                rounding=rounding.summary(),
                tol=tol,
                outlier_m=outlier_m,
                energy_top=energy_top,
                spectrum=spectrum,
            ),
        )
    return table


def _stored_dtype(asked: str, base_reader: CheckpointReader, source) -> str:
    """auto: bfloat16 when base and expert both are (half the disk of float32). Their difference is exact in
    bfloat16 wherever an entry keeps its exponent; the rest round once (6% of entries when deltas are 10% of
    the weights), below bfloat16's own rounding of the merged weights, and `Rounding` records it."""
    if asked != "auto":
        return dtype_name(asked, "extract.dtype")
    floating = (base_reader.dtype(k) for k in base_reader.keys if base_reader.dtype(k).is_floating_point)
    base_dtype = next(floating, None)
    both_bf16 = base_dtype == torch.bfloat16 and source.weights_dtype() == torch.bfloat16
    return "bfloat16" if both_bf16 else "float32"


class Rounding:
    """What storing the deltas in a narrower dtype cost: inexact entries and the largest error, against
    the fp32 deltas (zero and exact when the task vector is stored in float32)."""

    def __init__(self) -> None:
        self.entries = self.inexact = 0
        self.max_abs_error = self.error_sq = self.delta_sq = 0.0

    def add(self, stored: torch.Tensor, exact: torch.Tensor) -> None:
        self.entries += exact.numel()
        if stored.dtype == torch.float32:  # exact: no pass over the tensor
            return
        error = stored.float() - exact
        self.inexact += int(torch.count_nonzero(error))
        self.max_abs_error = max(self.max_abs_error, float(error.abs().max())) if error.numel() else self.max_abs_error
        self.error_sq += float(error.square().sum())
        self.delta_sq += float(exact.square().sum())

    def summary(self) -> dict:
        return {
            "inexact_fraction": self.inexact / self.entries if self.entries else 0.0,
            "max_abs_error": self.max_abs_error,
            "relative_error": (self.error_sq / self.delta_sq) ** 0.5 if self.delta_sq else 0.0,
        }


def _dtype_name(dtype: torch.dtype | None) -> str | None:
    return str(dtype).removeprefix("torch.") if dtype is not None else None
