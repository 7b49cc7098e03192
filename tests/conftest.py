"""Shared fixtures: tiny Llama-shaped checkpoints generated once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from resm_core.checkpoint.reader import CheckpointReader
from resm_core.synthetic import SHAPES, write_base, write_experts

TASKS = ("helpfulness", "honesty", "harmlessness")
os.environ["RESM_HASH_CACHE"] = tempfile.mkdtemp(prefix="resm-test-hashes-")  # keep ~/.cache clean


def load_dir(path: Path) -> dict[str, torch.Tensor]:
    reader = CheckpointReader(path)
    return {k: reader.get(k) for k in reader.keys}


@pytest.fixture(scope="session")
def tiny(tmp_path_factory) -> dict:
    """A tiny base and three experts with structured deltas (fp32)."""
    root = tmp_path_factory.mktemp("tiny")
    base = write_base(root / "base", SHAPES["tiny"], seed=1)
    experts = write_experts(base, [root / t for t in TASKS], seed=1)
    return {"root": root, "base": base, "experts": experts}


@pytest.fixture(scope="session")
def tiny_state(tiny) -> dict:
    return {"base": load_dir(tiny["base"]), "experts": [load_dir(e) for e in tiny["experts"]]}
