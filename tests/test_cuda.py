"""The CUDA path gives the CPU result (runs only where CUDA is present)."""

from __future__ import annotations

import pytest
import torch
from conftest import load_dir

from resm_core.merge.catalogue import all_methods
from resm_core.merge.engine import MergeRequest, merge

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.mark.parametrize("method", sorted(all_methods()))
def test_cuda_merge_matches_cpu(tiny, tmp_path, method):
    for device in ("cpu", "cuda"):
        merge(
            MergeRequest(
                base=tiny["base"],
                experts=tiny["experts"],
                method=method,
                out=tmp_path / device,
                device=device,
                seed=1,
                progress=False,
            )
        )
    cpu, gpu = load_dir(tmp_path / "cpu"), load_dir(tmp_path / "cuda")
    for name in cpu:
        assert torch.allclose(cpu[name], gpu[name], atol=1e-4), name
