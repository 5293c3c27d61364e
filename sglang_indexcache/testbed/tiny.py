"""A tiny random Llama with random indexers: the DSA model of the CPU tests (shapes and semantics only)."""

from __future__ import annotations

import torch

from .indexer import IndexerConfig
from .retrofit import RetrofitDSA


def tiny_model(
    num_layers: int = 4, seed: int = 0, index_topk: int = 8, block: int = 16, vocab_size: int = 128
) -> RetrofitDSA:
    """Deterministic for a given ``seed``: hidden 32, 4 query / 2 KV heads of 8, indexers of 2 heads x 16."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        lm = LlamaForCausalLM(config)
        indexer = IndexerConfig(hidden_size=32, heads=2, head_dim=16, rope_dim=8)
        model = RetrofitDSA(lm.float(), index_topk=index_topk, indexer_config=indexer, block=block)
    return model.eval()
