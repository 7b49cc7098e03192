"""Batched chat generation with transformers, the log-probabilities of given continuations (the
`transformers` evaluation backend, also what the guard judge scores with), and a cache of a model's answers.

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

from resm_core.checkpoint.digests import input_files, sha256_file
from resm_core.checkpoint.reader import check_pickle_policy
from resm_core.devices import resolve_device
from resm_core.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


def load_chat_model(
    model_dir: str | Path, device: str = "auto", dtype: torch.dtype | None = None, allow_pickle: bool = False
):
    """Model and tokenizer, with the checks every chat consumer needs (template, pad token, pickle policy)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise CheckpointError(f"{model_dir}: not a Hugging Face model directory (no config.json)")
    check_pickle_policy(model_dir, allow_pickle)
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{model_dir}: no usable tokenizer ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None
    if not tokenizer.chat_template:
        raise CheckpointError(
            f"{model_dir}: the tokenizer has no chat template; add chat_template.jinja (or use an instruct model)"
        )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    where = resolve_device(device)
    dtype = dtype or (torch.bfloat16 if where.type == "cuda" else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(where).eval()
    return model, tokenizer


def chat_prompt(tokenizer, prompt: str) -> str:
    """The prompt as the model's chat template lays it out. A template is code from the model's authors (Jinja
    can `raise_exception`), so its failure is named as the model's, in one line."""
    try:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise CheckpointError(
            f"{tokenizer.name_or_path}: its chat template fails on a user message ({type(exc).__name__}: {first})"
        ) from None


@torch.no_grad()
def generate(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 96,
    batch_size: int = 8,
    temperature: float = 0.0,
    seed: int = 0,
    progress: bool = True,
    desc: str = "generating",
) -> list[dict]:
    """One dict per prompt: the response text and whether it hit the token limit."""
    tokenizer.padding_side = "left"
    out = []
    device = next(model.parameters()).device
    bar = tqdm(total=len(prompts), desc=desc, unit="prompt", disable=not progress)
    for start in range(0, len(prompts), batch_size):
        batch = [chat_prompt(tokenizer, p) for p in prompts[start : start + batch_size]]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
        kwargs = {
            "do_sample": temperature > 0,
            "max_new_tokens": max_new_tokens,
            "pad_token_id": tokenizer.pad_token_id,
        }
        if temperature > 0:
            torch.manual_seed(seed + start)
            kwargs["temperature"] = temperature
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        generated = model.generate(**enc, **kwargs)[:, enc["input_ids"].shape[1] :]
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


def cached_generate(
    model_dir: Path,
    prompts: list[str],
    cache_dir: Path,
    max_new_tokens: int = 96,
    batch_size: int = 8,
    device: str = "auto",
    progress: bool = True,
    allow_pickle: bool = False,
) -> list[dict]:
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
        model, tokenizer = load_chat_model(model_dir, device, allow_pickle=allow_pickle)
        results = generate(model, tokenizer, todo, max_new_tokens, batch_size, progress=progress, desc="base answers")
        with open(path, "a", encoding="utf-8") as f:
            for prompt, res in zip(todo, results):
                rec = {"prompt": prompt, **res}
                cached[prompt] = rec
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
    return [cached[p] for p in prompts]


def cache_argument(model) -> str:
    """The KV cache's name in the model's forward and output: `cache` in recent transformers, `past_key_values`
    before (which recent versions still take, with a FutureWarning in every evaluation log)."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        batch_size: int = 8,
        temperature: float = 0.0,
        seed: int = 0,
        progress: bool = True,
        allow_pickle: bool = False,
    ):
        self.model, self.tokenizer = load_chat_model(model_dir, device, allow_pickle=allow_pickle)
        self.cache_name = cache_argument(self.model)
        self.batch_size, self.temperature, self.seed, self.progress = batch_size, temperature, seed, progress

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[dict]:
        return generate(
            self.model,
            self.tokenizer,
            prompts,
            max_new_tokens,
            self.batch_size,
            self.temperature,
            self.seed,
            self.progress,
        )

    @torch.no_grad()
    def logprobs(self, prompts: list[str], continuations: list[str], chat: bool = True) -> list[tuple[float, int]]:
        """Prompt and continuation are tokenized apart and concatenated, so the continuation's tokens are the
        same whatever precedes them. Batches are left-padded with explicit position ids, so every
        continuation ends at the last position and only the last few positions need logits
        (`logits_to_keep`): a 49k vocabulary times every prompt position would dominate the cost.
        `chat=False` takes prompts as already formatted text (a guard model's own template)."""
        tok = self.tokenizer
        device = next(self.model.parameters()).device
        pairs = []
        for p, c in zip(prompts, continuations):
            head = tok(chat_prompt(tok, p) if chat else p, add_special_tokens=False)["input_ids"]
            tail = tok(c, add_special_tokens=False)["input_ids"]
            if not tail:
                raise ConfigError(f"log-prob scoring: continuation {c!r} has no tokens")
            pairs.append((head, tail))
        out: list[tuple[float, int] | None] = [None] * len(pairs)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, (h, _) in enumerate(pairs):
            groups.setdefault(tuple(h), []).append(i)
        shared = [idx for idx in groups.values() if len(idx) > 1]
        prefixes = [(idx, _common_prefix([pairs[i][1] for i in idx])) for idx in shared]
        self._last_token([(idx, common) for idx, common in prefixes if common is not None], pairs, out, device)
        rest = [idx for idx, common in prefixes if common is None]
        for idx in tqdm(rest, desc="scoring options", disable=not self.progress or not rest):
            for i, value in zip(idx, self._shared_prompt([pairs[i] for i in idx], device)):
                out[i] = value
        order = sorted(
            (i for i in range(len(pairs)) if out[i] is None), key=lambda i: len(pairs[i][0]) + len(pairs[i][1])
        )
        batch = max(1, self.batch_size * 2)
        for start in tqdm(range(0, len(order), batch), desc="scoring choices", disable=not self.progress):
            idx = order[start : start + batch]
            chunk = [pairs[i] for i in idx]
            keep = max(len(t) for _, t in chunk) + 1
            ids, logits = self._left_padded([h + t for h, t in chunk], keep, device)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)  # predictions for the last keep-1 tokens
            target = ids[:, ids.shape[1] - keep + 1 :].to(device)
            token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            for row, (i, (_, t)) in enumerate(zip(idx, chunk)):
                out[i] = (float(token_logp[row, keep - 1 - len(t) :].sum()), len(t))
        filled = [pair for pair in out if pair is not None]
        if len(filled) != len(out):
            raise RuntimeError("log-prob scoring left a continuation unscored")
        return filled

    def _left_padded(self, seqs: list[list[int]], keep: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids, left-padded with explicit position ids so every sequence ends at the last position, and
        the float logits of the last `keep` positions."""
        width = max(len(seq) for seq in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq) :] = torch.tensor(seq)
            mask[row, width - len(seq) :] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            logits_to_keep=keep,
        ).logits.float()
        return ids, logits

    def _last_token(self, groups: list[tuple[list[int], list[int]]], pairs, out: list, device) -> None:
        """Options that differ only in their last token ("Yes"/"No", "The answer is A"/"... B"), given as
        (indices, shared prefix): one batched forward over prompt + prefix per group gives every option's
        log-prob from the last position."""
        seqs = sorted(
            ((idx, pairs[idx[0]][0] + common, len(common)) for idx, common in groups), key=lambda s: len(s[1])
        )
        batch = max(1, self.batch_size * 2)
        for start in tqdm(range(0, len(seqs), batch), desc="scoring options", disable=not self.progress or not seqs):
            chunk = seqs[start : start + batch]
            keep = max(n for _, _, n in chunk) + 1
            _, logits = self._left_padded([seq for _, seq, _ in chunk], keep, device)
            logp = torch.log_softmax(logits, dim=-1).cpu()  # the last position predicts the option's last token
            for row, (idx, seq, n) in enumerate(chunk):
                prefix = sum(float(logp[row, keep - 1 - n + j, seq[len(seq) - n + j]]) for j in range(n))
                for i in idx:
                    tail = pairs[i][1]
                    out[i] = (prefix + float(logp[row, keep - 1, tail[-1]]), len(tail))

    def _shared_prompt(self, chunk: list[tuple[list[int], list[int]]], device) -> list[tuple[float, int]]:
        """Several continuations of one prompt (the options of a multiple-choice item): the prompt runs
        once and its KV cache is repeated for the continuations, which are right-padded after it."""
        head = chunk[0][0]
        k = len(chunk)
        first = self.model(input_ids=torch.tensor([head], device=device), use_cache=True, logits_to_keep=1)
        first_logp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        cache = getattr(first, self.cache_name)
        cache.batch_repeat_interleave(k)
        width = max(len(t) for _, t in chunk)
        tails = torch.full((k, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((k, len(head) + width), dtype=torch.long)
        mask[:, : len(head)] = 1
        for row, (_, t) in enumerate(chunk):
            tails[row, : len(t)] = torch.tensor(t)
            mask[row, len(head) : len(head) + len(t)] = 1
        positions = torch.arange(len(head), len(head) + width).expand(k, -1)
        logits = self.model(
            input_ids=tails.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            **{self.cache_name: cache},
        ).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        out = []
        for row, (_, t) in enumerate(chunk):
            total = first_logp[t[0]]
            if len(t) > 1:
                total = total + logp[row, torch.arange(len(t) - 1), torch.tensor(t[1:])].sum()
            out.append((float(total), len(t)))
        return out


def _common_prefix(tails: list[list[int]]) -> list[int] | None:
    """The tokens all tails share when each is that prefix plus exactly one token, else None."""
    first = tails[0]
    if any(len(t) != len(first) for t in tails) or len({t[-1] for t in tails}) != len(tails):
        return None
    if any(t[:-1] != first[:-1] for t in tails):
        return None
    return first[:-1]
