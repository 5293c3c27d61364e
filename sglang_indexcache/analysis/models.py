"""Which :class:`~sglang_indexcache.inprocess.LayerwiseDSA` ``--model`` names, resolved before anything loads."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

from .errors import InputError

FIX = ("use 'testbed' (the retrofit testbed with its trained indexers), 'testbed:INDEXERS.safetensors', "
       "a GlmMoeDsaForCausalLM checkpoint directory, or 'package.module:factory'")


def resolve_model(spec: str):
    """A loader for ``spec`` (checked now, called later with the device): returns ``(model, tokenizer or None)``."""
    if spec == "testbed" or spec.startswith("testbed:"):
        load = _module("sglang_indexcache.testbed.load", spec)
        indexers = spec.partition(":")[2] or str(load.SHIPPED_INDEXERS)
        if not Path(indexers).is_file():
            raise InputError(indexers, "--model", "no such indexer file",
                             "train the testbed's indexers first, or name a file as testbed:FILE.safetensors")
        return lambda device: _testbed(indexers, device)
    path = Path(spec)
    if path.is_dir():
        config = path / "config.json"
        if not config.is_file():
            raise InputError(path, "--model", "the directory has no config.json", FIX)
        architectures = json.loads(config.read_text()).get("architectures") or []
        if "GlmMoeDsaForCausalLM" not in architectures:
            raise InputError(config, "architectures", f"{architectures} has no in-process runner", FIX)
        module = _module("sglang_indexcache.inprocess.glm_moe_dsa", spec)
        return lambda device: (module.GlmMoeDsaLayerwise.from_pretrained(path, device=device), _tokenizer(path))
    module_name, _, factory = spec.partition(":")
    if not factory:
        raise InputError(spec, "--model", "is neither a directory nor 'module:factory'", FIX)
    function = getattr(_module(module_name, spec), factory, None)
    if not callable(function):
        raise InputError(spec, "--model", f"{module_name} has no function {factory}", FIX)

    def load(device):
        model, tokenizer = made if isinstance(made := function(), tuple) else (made, None)
        return _to(model, device), tokenizer

    return load


def _module(name: str, spec: str):
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise InputError(spec, "--model", f"cannot import {name} ({e})", FIX) from None


def _testbed(indexers: str, device: str):
    from ..testbed.load import load_dsa, load_tokenizer

    return load_dsa(Path(indexers)).to(device), load_tokenizer()


def _to(model, device: str):
    import torch

    return model.to(device) if isinstance(model, torch.nn.Module) else model


def _tokenizer(path: Path):
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError):
        return None
