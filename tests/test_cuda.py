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


def test_fsdp_training_gathers_a_whole_model_that_loads(tiny_llm, tmp_path):
    """A full fine-tune under FSDP (torchrun, one GPU process; accelerate shards only on GPUs): the Trainer
    gathers the shards, rank 0 reads them back and publishes a model equal to the unsharded run's."""
    import json
    import subprocess
    import sys

    from safetensors.torch import load_file

    data = tmp_path / "data"
    data.mkdir()
    rows = [{"id": f"r{i}", "dim": "helpfulness", "source": "t", "prompt": f"What is {i} plus {i}?",
             "chosen": f"It is {2 * i}.", "rejected": "No."} for i in range(8)]  # fmt: skip
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    flags = ["train", "--base", str(tiny_llm), "--data", str(data), "--steps", "3", "--batch-size", "4"]
    flags += ["--lr", "1e-2", "--max-length", "64", "--model-dtype", "float32"]
    plain = subprocess.run([sys.executable, "-m", "resm_core.cli", "-q", *flags, "--out", str(tmp_path / "plain")])
    fsdp = ["--trainer-arg", "fsdp=true", "--trainer-arg", "fsdp_config={version: 2}"]
    sharded = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1", "-m",
         "resm_core.cli", "-q", *flags, *fsdp, "--out", str(tmp_path / "fsdp")]
    )  # fmt: skip
    assert plain.returncode == sharded.returncode == 0
    assert json.loads((tmp_path / "fsdp" / "resm_manifest.json").read_text())["sharding"] == "fsdp"
    a, b = load_file(tmp_path / "plain" / "model.safetensors"), load_file(tmp_path / "fsdp" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
