"""Tiny random ``GlmMoeDsaForCausalLM`` models for CPU tests: a few layers, top-k smaller than the sequence."""

from __future__ import annotations

import torch

TINY = dict(vocab_size=97, hidden_size=32, intermediate_size=64, moe_intermediate_size=16, num_attention_heads=2,
            num_key_value_heads=2, q_lora_rank=16, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=8,
            v_head_dim=8, index_n_heads=2, index_head_dim=16, index_topk=4, n_routed_experts=4,
            num_experts_per_tok=2, n_group=1, topk_group=1, first_k_dense_replace=1, max_position_embeddings=256)


def tiny_config(num_layers: int = 6, **overrides):
    from transformers import GlmMoeDsaConfig

    return GlmMoeDsaConfig(num_hidden_layers=num_layers, **{**TINY, **overrides})


def tiny_model(num_layers: int = 6, seed: int = 0, std: float = 0.2, **overrides):
    """An all-Full model with weights N(0, std): large enough that the top-k choice moves the loss."""
    from transformers import GlmMoeDsaForCausalLM

    torch.manual_seed(seed)
    config = tiny_config(num_layers, initializer_range=std, **overrides)
    return GlmMoeDsaForCausalLM(config).eval()


def zero_residual(model, layers):
    """Make ``layers`` add exactly nothing to the residual stream (attention and MLP outputs zero)."""
    with torch.no_grad():
        for index in layers:
            layer = model.model.layers[index]
            layer.self_attn.o_proj.weight.zero_()
            mlp = layer.mlp
            if hasattr(mlp, "experts"):
                mlp.experts.down_proj.zero_()
                mlp.shared_experts.down_proj.weight.zero_()
            else:
                mlp.down_proj.weight.zero_()


@torch.no_grad()
def sampled_batches(model, count=2, batch=4, seq=40, seed=1):
    """Sequences sampled from the all-Full model itself: any other map is expected to score them worse."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, model.config.vocab_size, (count * batch, 1), generator=g)
    for _ in range(seq - 1):
        probs = torch.softmax(model(ids).logits[:, -1].float(), dim=-1)
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=g)], dim=1)
    return list(ids.split(batch))
