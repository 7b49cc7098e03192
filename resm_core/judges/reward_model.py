"""A sequence-classification reward model as a judge: sigmoid of the logit of the head assigned to the
dimension. One head serves every dimension unless a mapping says otherwise (multi-objective models
such as ArmoRM give one head per attribute: `reward:DIR:helpfulness=0,honesty=3,harmlessness=10`)."""

from __future__ import annotations

from pathlib import Path

import torch

from resm_core.checkpoint.reader import check_pickle_policy
from resm_core.devices import resolve_device
from resm_core.errors import ConfigError, JudgeError


class RewardModelJudge:
    def __init__(
        self,
        model_dir: str | Path,
        heads: dict[str, int] | None = None,
        batch_size: int = 8,
        device: str = "auto",
        max_length: int = 1024,
        allow_pickle: bool = False,
    ):
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_dir = Path(model_dir)
        if not (self.model_dir / "config.json").is_file():
            raise JudgeError(f"judge reward: {self.model_dir} is not a model directory (no config.json)")
        self.name = f"reward:{self.model_dir.name}"
        self.device = resolve_device(device)
        check_pickle_policy(self.model_dir, allow_pickle)
        self.tokenizer = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir).to(self.device).eval()
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.heads = heads or {}
        n = self.model.config.num_labels
        for dim, head in self.heads.items():
            if not 0 <= head < n:
                raise ConfigError(f"judge reward: head {head} for {dim} is outside the model's {n} labels")
        self.batch_size, self.max_length = batch_size, max_length

    @classmethod
    def from_spec(cls, arg: str, allow_pickle: bool = False) -> RewardModelJudge:
        path, _, mapping = arg.partition(":")
        heads = {}
        for item in filter(None, mapping.split(",")):
            dim, _, head = item.partition("=")
            try:
                heads[dim.strip()] = int(head)
            except ValueError:
                raise ConfigError(f"judge reward: cannot read head mapping {item!r} (expected dim=index)") from None
        return cls(path, heads, allow_pickle=allow_pickle)

    def _text(self, prompt: str, response: str) -> str:
        chat = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        if self.tokenizer.chat_template:
            return str(self.tokenizer.apply_chat_template(chat, tokenize=False))
        return f"User: {prompt}\nAssistant: {response}"

    @torch.no_grad()
    def score(self, dim: str, prompts: list[str], responses: list[str]) -> list[float]:
        head = self.heads.get(dim, 0)
        out: list[float] = []
        for i in range(0, len(prompts), self.batch_size):
            texts = [
                self._text(p, r) for p, r in zip(prompts[i : i + self.batch_size], responses[i : i + self.batch_size])
            ]
            enc = self.tokenizer(
                texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length
            ).to(self.device)
            logits = self.model(**enc).logits.float()
            out += torch.sigmoid(logits[:, head]).tolist()
        return out
