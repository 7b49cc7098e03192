"""What `resm extract` and `resm conflicts` are asked to do: the single declaration of each option."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from resm_core.options import base_vocabulary_option, device_option, option, pickle_option


@dataclass
class ExtractRequest:
    SECTION: ClassVar[str] = "extract"  # where its options sit in a config; errors name it

    base: Path = option(help="base model directory", config=False)
    expert: Path = option(help="fine-tuned model or PEFT LoRA adapter directory", config=False)
    out: Path = option(help="output directory", config=False)
    dtype: str = option(
        "auto",
        help="task-vector dtype on disk: auto is bfloat16 when base and expert are both bfloat16 (half the disk; "
        "the rounding is measured and recorded), else float32",
        choices=("auto", "float32", "bfloat16", "fp32", "bf16"),
        config=False,
    )
    tol: float = option(1e-8, help="|delta| <= tol counts as zero for sparsity", minimum=0, config=False)
    outlier_m: float = option(5.0, help="outlier when |delta| > M * mean |delta|", exclusive_minimum=0, config=False)
    energy_top: float = option(
        0.1,
        help="report the energy share of the top fraction of singular values",
        exclusive_minimum=0,
        maximum=1,
        config=False,
    )
    spectrum: bool = option(True, help="the SVD statistics (--no-spectrum is faster)", config=False)
    device: str = device_option()
    shard_size: str = option("2GB", help="maximum output shard size", config=False)
    allow_pickle: bool = pickle_option()
    base_vocabulary: bool = base_vocabulary_option()
    force: bool = option(False, help="replace the output if it exists", config=False)
    progress: bool = option(True, config=False, cli=False)
