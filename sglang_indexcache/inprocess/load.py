"""Pick the :class:`LayerwiseDSA` implementation for a checkpoint directory (or a built-in model's name)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from .protocol import LayerwiseDSA

Loader = Callable[[str, str], LayerwiseDSA]  # (path or name, device) -> model


def _glm_moe_dsa(path: str, device: str) -> LayerwiseDSA:
    from .glm_moe_dsa import GlmMoeDsaLayerwise

    return GlmMoeDsaLayerwise.from_pretrained(path, device=device, dtype=_dtype(device))


class Testbed:
    """``testbed``: the retrofit DSA testbed with its shipped indexers; ``testbed:FILE.safetensors``: with
    others (their file names the base model). Its config is read from the indexer file, without loading."""

    PREFIX = "testbed"

    @staticmethod
    def matches(model: str) -> bool:
        return model == Testbed.PREFIX or model.startswith(Testbed.PREFIX + ":")

    @staticmethod
    def indexers(model: str) -> Path:
        from ..testbed.load import SHIPPED_INDEXERS

        return Path(model.split(":", 1)[1]) if ":" in model else SHIPPED_INDEXERS

    def config(self, model: str) -> dict[str, Any]:
        from safetensors import safe_open

        from ..errors import MapError

        path = self.indexers(model)
        if not path.is_file():
            raise MapError(str(path), model, "no indexer file", "train the testbed's indexers first "
                           "(scripts/testbed_train.py) or name a file: --model testbed:FILE.safetensors")
        with safe_open(str(path), "pt") as f:
            meta = json.loads(f.metadata()["indexcache"])
            layers = 1 + max(int(key.split(".")[0]) for key in f.keys())
        return {"architectures": ["RetrofitDSA"], "num_hidden_layers": meta.get("num_layers", layers),
                "index_topk": meta["index_topk"], "base": meta.get("base")}

    def tokenizer(self, model: str):
        from ..testbed.load import DEFAULT_BASE, load_tokenizer

        return load_tokenizer(self.config(model).get("base") or DEFAULT_BASE)

    def __call__(self, model: str, device: str) -> LayerwiseDSA:
        from ..testbed.load import load_dsa

        return load_dsa(self.indexers(model)).to(device)


# config.json "architectures" -> loader
BY_ARCHITECTURE: dict[str, Loader] = {"GlmMoeDsaForCausalLM": _glm_moe_dsa}
TESTBED = Testbed()


def _dtype(device: str) -> torch.dtype:
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def is_named(model: str) -> bool:
    """A built-in model's name rather than a checkpoint directory."""
    return Testbed.matches(model) and not Path(model).exists()


def loader_for(model: str, config: dict[str, Any] | None) -> Loader | None:
    if is_named(model):
        return TESTBED
    for arch in (config or {}).get("architectures") or []:
        if arch in BY_ARCHITECTURE:
            return BY_ARCHITECTURE[arch]
    return None
