"""Llama-shaped checkpoints with random weights and structured task deltas.

The demo, the tests and the merge benchmark need a base and several experts of realistic shapes
without downloading anything. Expert deltas mimic fine-tuning updates: a low-rank component per
task (plus a shared one, so tasks partly agree), sparse large outliers, and small dense noise.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from pathlib import Path

import torch

from resm_core.checkpoint.reader import CheckpointReader
from resm_core.checkpoint.writer import ShardedWriter


@dataclass(frozen=True)
class LlamaShape:
    hidden: int
    layers: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def tensors(self) -> dict[str, tuple[int, ...]]:
        h, kv = self.hidden, self.kv_heads * self.head_dim
        shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (self.vocab, h)}
        for i in range(self.layers):
            p = f"model.layers.{i}."
            shapes.update(
                {
                    p + "self_attn.q_proj.weight": (h, h),
                    p + "self_attn.k_proj.weight": (kv, h),
                    p + "self_attn.v_proj.weight": (kv, h),
                    p + "self_attn.o_proj.weight": (h, h),
                    p + "mlp.gate_proj.weight": (self.intermediate, h),
                    p + "mlp.up_proj.weight": (self.intermediate, h),
                    p + "mlp.down_proj.weight": (h, self.intermediate),
                    p + "input_layernorm.weight": (h,),
                    p + "post_attention_layernorm.weight": (h,),
                }
            )
        shapes["model.norm.weight"] = (h,)
        if not self.tied:
            shapes["lm_head.weight"] = (self.vocab, h)
        return shapes

    def n_params(self) -> int:
        total = 0
        for shape in self.tensors().values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total

    def config(self) -> dict:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": self.hidden,
            "num_hidden_layers": self.layers,
            "intermediate_size": self.intermediate,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "vocab_size": self.vocab,
            "tie_word_embeddings": self.tied,
            "hidden_act": "silu",
            "max_position_embeddings": 2048,
            "rms_norm_eps": 1e-5,
            "rope_theta": 10000.0,
            "torch_dtype": "float32",
            "bos_token_id": 1,
            "eos_token_id": 2,
        }


SHAPES = {
    "tiny": LlamaShape(hidden=64, layers=2, intermediate=128, heads=4, kv_heads=2, vocab=256, tied=True),
    "small": LlamaShape(hidden=128, layers=4, intermediate=352, heads=4, kv_heads=2, vocab=1024, tied=True),
    "smollm2-135m": LlamaShape(hidden=576, layers=30, intermediate=1536, heads=9, kv_heads=3, vocab=49152, tied=True),
    "llama-1.1b": LlamaShape(hidden=2048, layers=22, intermediate=5632, heads=32, kv_heads=4, vocab=32000, tied=False),
    # the paper bases (their config.json), and Llama-3-8B cut to 2 layers: where the 128256-row embedding
    # and lm_head dominate memory
    "llama3-8b": LlamaShape(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8, vocab=128256, tied=False),
    "llama3-8b-2layer": LlamaShape(
        hidden=4096, layers=2, intermediate=14336, heads=32, kv_heads=8, vocab=128256, tied=False
    ),
    "mistral-7b": LlamaShape(hidden=4096, layers=32, intermediate=14336, heads=32, kv_heads=8, vocab=32000, tied=False),
}
# hub bases whose architecture is one of SHAPES: `resm plan` sizes them without the hub
HUB_SHAPES = {
    "meta-llama/Meta-Llama-3-8B-Instruct": "llama3-8b",
    "meta-llama/Meta-Llama-3-8B": "llama3-8b",
    "mistralai/Mistral-7B-Instruct-v0.2": "mistral-7b",
    "mistralai/Mistral-7B-v0.1": "mistral-7b",
}


def _stable_id(name: str) -> int:
    """A per-tensor integer that, unlike hash(), is the same in every process."""
    return zlib.crc32(name.encode()) % 10**6


def write_base(
    out: Path, shape: LlamaShape, seed: int = 0, dtype: torch.dtype = torch.float32, shard_size: int = 2 * 10**9
) -> Path:
    """A base checkpoint: N(0, 0.02) matrices, norms near 1, with a config.json."""
    import json

    gen = torch.Generator().manual_seed(seed)
    with ShardedWriter(out, shard_size) as writer:
        for name, dims in shape.tensors().items():
            if len(dims) == 1:
                t = 1.0 + 0.02 * torch.randn(dims, generator=gen)
            else:
                t = 0.02 * torch.randn(dims, generator=gen)
            writer.add(name, t.to(dtype))
        writer.write_text(
            "config.json", json.dumps({**shape.config(), "torch_dtype": str(dtype).removeprefix("torch.")}, indent=2)
        )
    return Path(out)


def write_experts(
    base_dir: Path,
    outs: list[Path],
    seed: int = 0,
    rank: int = 8,
    strength: float = 2e-3,
    outlier_fraction: float = 1e-3,
    outlier_scale: float = 10.0,
    noise: float = 2e-4,
    shard_size: int = 2 * 10**9,
) -> list[Path]:
    """Experts = base + task delta. Each delta: a shared low-rank part, a task-specific low-rank part,
    sparse outliers (`outlier_fraction` of entries, `outlier_scale` x strength), dense noise."""
    import shutil

    reader = CheckpointReader(base_dir)
    for t, out in enumerate(outs):
        with ShardedWriter(out, shard_size) as writer:
            for name in reader.keys:
                base = reader.get(name)
                g_shared = torch.Generator().manual_seed(seed * 7919 + _stable_id(name))
                g_task = torch.Generator().manual_seed(seed * 7919 + 104729 * (t + 1) + _stable_id(name))
                delta = _structured_delta(
                    tuple(base.shape), g_shared, g_task, rank, strength, outlier_fraction, outlier_scale, noise
                )
                writer.add(name, (base.float() + delta).to(base.dtype))
            shutil.copy(Path(base_dir) / "config.json", writer.staging_dir / "config.json")
    return [Path(o) for o in outs]


def _structured_delta(shape, g_shared, g_task, rank, strength, outlier_fraction, outlier_scale, noise):
    if len(shape) == 1:
        return strength * torch.randn(shape, generator=g_task)
    m, n = shape
    r = min(rank, m, n)
    shared = torch.randn(m, r, generator=g_shared) @ torch.randn(r, n, generator=g_shared)
    own = torch.randn(m, r, generator=g_task) @ torch.randn(r, n, generator=g_task)
    delta = strength * (0.5 * shared + own) / r**0.5
    delta += noise * torch.randn(shape, generator=g_task)
    n_out = int(outlier_fraction * m * n)
    if n_out:
        idx = torch.randint(0, m * n, (n_out,), generator=g_task)
        sign = torch.randint(0, 2, (n_out,), generator=g_task).float() * 2 - 1
        delta.view(-1)[idx] += sign * outlier_scale * strength
    return delta
