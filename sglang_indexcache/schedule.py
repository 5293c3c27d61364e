"""Per-layer Full/Shared schedules, with the semantics of the Hugging Face config keys.

A schedule is a string with one character per DSA layer: ``F`` (Full) runs the layer's indexer and caches
its top-k, ``S`` (Shared) runs no indexer and reuses the top-k of the nearest preceding ``F`` layer.

The keys and their priority are those of transformers' ``GlmMoeDsaConfig`` (and SGLang/vLLM):
``indexer_types`` > ``index_topk_pattern`` > ``index_topk_freq`` with ``index_skip_topk_offset``. With a
frequency, layer ``l`` is Full iff ``max(l - offset + 1, 0) % freq == 0``; the default offset 2 is the
schedule SGLang 0.5.10.post1 uses natively (layers 0 and 1 Full, then every ``freq``-th).
"""

from __future__ import annotations

from collections.abc import Sequence

FULL, SHARED = "F", "S"
DEFAULT_OFFSET = 2
INDEXER_TYPE_CHARS = {"full": FULL, "shared": SHARED}
CHAR_INDEXER_TYPES = {c: t for t, c in INDEXER_TYPE_CHARS.items()}


def pattern_from_freq(num_layers: int, freq: int, offset: int = DEFAULT_OFFSET) -> str:
    return "".join(FULL if max(l - offset + 1, 0) % freq == 0 else SHARED for l in range(num_layers))


def pattern_from_indexer_types(indexer_types: Sequence[str]) -> str:
    return "".join(INDEXER_TYPE_CHARS[t] for t in indexer_types)


def indexer_types_from_pattern(pattern: str) -> list[str]:
    return [CHAR_INDEXER_TYPES[c] for c in pattern]


def source_layers(pattern: str) -> list[int]:
    """For each layer, the Full layer whose top-k it uses (itself for a Full layer)."""
    out, last_full = [], None
    for layer, char in enumerate(pattern):
        if char == FULL:
            last_full = layer
        if last_full is None:
            raise ValueError(f"layer {layer} is Shared but no earlier layer is Full")
        out.append(last_full)
    return out
