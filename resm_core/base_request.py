"""What `resm base tiny` is asked to build: the single declaration of each option of the tiny random base
(its flag, its key in the workflow config's `base` section when `kind: tiny`, default, help, range)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from resm_core.devices import DTYPE_NAMES
from resm_core.options import option, pickle_option


@dataclass
class TinyBaseRequest:
    SECTION: ClassVar[str] = "base"  # where its options sit in a config; errors name it

    out: Path = option(help="output directory", config=False)
    corpus: list[Path] | None = option(
        None,
        help="JSONL rows or text files to train the tokenizer on (default: the embedded 3H sources)",
        nargs="+",
        parse=Path,
        config=False,
    )
    cache: str | None = option(None, help="asset cache for the default corpus", config=False)
    seed: int = option(0, help="seed of the random weights")
    vocab_size: int = option(512, help="tokenizer vocabulary (BPE trained on the corpus)", minimum=64)
    hidden: int = option(64, help="hidden size", minimum=8)
    layers: int = option(2, help="decoder layers", minimum=1)
    heads: int = option(4, help="attention heads (divide hidden)", minimum=1)
    kv_heads: int = option(2, help="key-value heads (divide heads)", minimum=1)
    intermediate: int = option(128, help="MLP size", minimum=8)
    dtype: str = option("bfloat16", help="weights on disk", choices=DTYPE_NAMES, config=False)
    force: bool = option(False, help="replace the output if it exists", config=False)


@dataclass
class ModelRequest:
    """`resm model adopt` (and the pickle/force options of `resm base download`): a model made elsewhere."""

    SECTION: ClassVar[str] = "experts"  # where such models are named in a config

    source: str = option(help="model directory, PEFT LoRA adapter directory, or hub id ORG/NAME[@REVISION]")
    base: str = option(help="the grid's base model (directory or hub id): the source is checked against it")
    out: Path = option(help="output model directory")
    allow_pickle: bool = pickle_option()
    allow_other_base: bool = option(
        False, help="adopt a LoRA adapter whose adapter_config.json names another base", config=False
    )
    force: bool = option(False, help="replace the output if it exists")
