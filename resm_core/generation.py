"""Batched chat generation with transformers, and a cache of a model's answers.

Used to collect the base model's own answers to harmful prompts (the harmlessness `rejected`), and by
evaluation. Greedy by default, so the same model and prompts give the same text; left padding so a
batch of prompts of different lengths generates correctly.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from resm_core.checkpoint.manifest import input_files, sha256_file
from resm_core.errors import TrainingError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def load_chat_model(model_dir: str | Path, device: str = "auto", dtype: torch.dtype | None = None):
    """Model and tokenizer, with the checks every chat consumer needs (template, pad token)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise TrainingError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise TrainingError(f"{model_dir}: no usable tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if not tokenizer.chat_template:
        raise TrainingError(f"{model_dir}: the tokenizer has no chat template; add chat_template.jinja "
                            f"(or use an instruct model)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = resolve_device(device)
    dtype = dtype or (torch.bfloat16 if device.startswith("cuda") else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device).eval()
    return model, tokenizer


def chat_prompt(tokenizer, prompt: str) -> str:
    return tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                         add_generation_prompt=True)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], max_new_tokens: int = 96, batch_size: int = 8,
             temperature: float = 0.0, seed: int = 0, progress: bool = True, desc: str = "generating") -> list[dict]:
    """One dict per prompt: the response text and whether it hit the token limit."""
    tokenizer.padding_side = "left"
    out = []
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        batch = [chat_prompt(tokenizer, p) for p in prompts[start:start + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = {"do_sample": temperature > 0, "max_new_tokens": max_new_tokens, "pad_token_id": tokenizer.pad_token_id}
        if temperature > 0:
            torch.manual_seed(seed + start)
            kwargs["temperature"] = temperature
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        generated = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1]:]
        for row in generated:
            ids = row.tolist()
            finished = tokenizer.eos_token_id in ids or tokenizer.pad_token_id in ids
            text = tokenizer.decode(row, skip_special_tokens=True).strip()
            out.append({"response": text, "truncated": not finished})
        bar.update(len(batch))
    bar.close()
    return out


def model_fingerprint(model_dir: Path) -> str:
    h = hashlib.sha256()
    for f in input_files(Path(model_dir)):
        if f.suffix in (".safetensors", ".json", ".jinja"):
            h.update(f.name.encode() + sha256_file(f).encode())
    return h.hexdigest()[:16]


def cached_generate(model_dir: Path, prompts: list[str], cache_dir: Path, max_new_tokens: int = 96,
                    batch_size: int = 8, device: str = "auto", progress: bool = True) -> list[dict]:
    """Greedy answers, generated once per (model content, prompt, token limit) and kept in a JSONL file."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{model_fingerprint(model_dir)}-greedy-{max_new_tokens}.jsonl"
    cached: dict[str, dict] = {}
    if path.is_file():
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                    cached[rec["prompt"]] = rec
                except (json.JSONDecodeError, KeyError):
                    continue  # a line cut by an interrupted run: regenerate that prompt
    todo = sorted({p for p in prompts if p not in cached}, key=lambda p: (len(p), p))  # similar lengths batch together
    if todo:
        log.info("generating %d answer(s) with %s (%d cached)", len(todo), model_dir, len(prompts) - len(todo))
        model, tokenizer = load_chat_model(model_dir, device)
        results = generate(model, tokenizer, todo, max_new_tokens, batch_size, progress=progress,
                           desc="base answers")
        with open(path, "a", encoding="utf-8") as f:
            for prompt, res in zip(todo, results):
                rec = {"prompt": prompt, **res}
                cached[prompt] = rec
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return [cached[p] for p in prompts]
