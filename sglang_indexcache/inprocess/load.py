"""Pick the :class:`LayerwiseDSA` implementation for a checkpoint directory (or a built-in model's name)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .protocol import LayerwiseDSA

Loader = Callable[[str, str], LayerwiseDSA]  # (path or name, device) -> model


def _glm_moe_dsa(path: str, device: str) -> LayerwiseDSA:
    from .glm_moe_dsa import GlmMoeDsaLayerwise

    return GlmMoeDsaLayerwise.from_pretrained(path, device=device, dtype=_dtype(device))


# config.json "architectures" -> loader
BY_ARCHITECTURE: dict[str, Loader] = {"GlmMoeDsaForCausalLM": _glm_moe_dsa}
# names that stand for a model shipped with this package -> loader
BY_NAME: dict[str, Loader] = {}


def _dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def loader_for(model: str, config: dict[str, Any] | None) -> Loader | None:
    if model in BY_NAME and not Path(model).exists():
        return BY_NAME[model]
    for arch in (config or {}).get("architectures") or []:
        if arch in BY_ARCHITECTURE:
            return BY_ARCHITECTURE[arch]
    return None
