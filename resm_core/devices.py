"""The one device helper and the one dtype vocabulary of the library: every command spells a dtype the same
way (float32, bfloat16, float16; fp32, bf16 and fp16 are accepted as the same names)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from resm_core.errors import ConfigError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES = ("float32", "bfloat16", "float16")
ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}
DTYPE_CHOICES = DTYPE_NAMES + tuple(ALIASES)


def dtype_name(name: str, key: str = "dtype") -> str:
    """The canonical spelling; an unknown name is a ConfigError that names the key."""
    canonical = ALIASES.get(name, name)
    if canonical not in DTYPE_NAMES:
        raise ConfigError(f"{key}: {name!r} is not one of {', '.join(DTYPE_NAMES)} (or {', '.join(ALIASES)})")
    return canonical


def resolve_dtype(name: str, key: str = "dtype") -> torch.dtype:
    import torch

    return getattr(torch, dtype_name(name, key))


def resolve_device(device: str) -> torch.device:
    """auto: CUDA when present. Asking for CUDA where there is none is an error, not a silent CPU run."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {device} requested but CUDA is not available (use --device auto or cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise ConfigError(f"device: {device!r} is not one of auto, cpu, cuda, cuda:N")
    return torch.device(device)
