#!/usr/bin/env python3
"""Write a randomly initialised DeepSeek-V3 / V3.2 (DSA) checkpoint in Hugging Face layout.

SGLang's ``--load-format dummy`` fills weights with tiny uniform values, which leaves attention outputs almost
independent of which tokens the DSA indexer selects. This script instead writes weights drawn from N(0, std) with
norm scales of 1, so a model loaded from it behaves like a (meaningless but) realistically scaled network.

The tensor names and shapes are those of a Hugging Face DeepSeek-V3 / V3.2 checkpoint, i.e. what SGLang's
DeepseekV3ForCausalLM loader consumes:

  model.embed_tokens.weight, model.norm.weight, lm_head.weight (absent when tie_word_embeddings)
  model.layers.{i}.input_layernorm.weight, .post_attention_layernorm.weight
  model.layers.{i}.self_attn.{q_a_proj, q_a_layernorm, q_b_proj}.weight   (q_proj.weight if q_lora_rank is null)
  model.layers.{i}.self_attn.{kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj, o_proj}.weight
  model.layers.{i}.self_attn.indexer.{wq_b, wk, weights_proj}.weight, .indexer.k_norm.{weight, bias}   (DSA only)
  dense layers:  model.layers.{i}.mlp.{gate_proj, up_proj, down_proj}.weight
  MoE layers:    model.layers.{i}.mlp.gate.weight, .mlp.gate.e_score_correction_bias (float32),
                 model.layers.{i}.mlp.experts.{e}.{gate_proj, up_proj, down_proj}.weight,
                 model.layers.{i}.mlp.shared_experts.{gate_proj, up_proj, down_proj}.weight
  --nextn:       model.layers.{L}.{enorm, hnorm, eh_proj, shared_head.norm}.weight plus one MoE decoder layer
  --index-topk-freq / --index-skip-topk-offset: the config states that sharing schedule (as GLM-5.2's does) and,
                 like GLM-5.2's checkpoint, the Shared layers get no indexer tensors

Only torch and safetensors are needed; --tokenizer also needs tokenizers and transformers.

Example:
  python scripts/make_random_checkpoint.py --config config.json --out /tmp/rand-dsa --seed 0 --tokenizer
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sglang_indexcache.bench.random_checkpoint import DTYPES, Options, run


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], argument_default=argparse.SUPPRESS)
    p.add_argument("--config", type=Path, required=True, help="DeepSeek-V3 architecture config.json")
    p.add_argument("--out", type=Path, required=True, help="model directory; checkpoint files in it are replaced")
    p.add_argument("--std", type=float, help="standard deviation of the random weights")
    p.add_argument("--seed", type=int)
    p.add_argument("--dtype", choices=sorted(DTYPES))
    p.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="where random numbers are drawn (default: cuda where available); a seed gives the same weights only "
        "on the same kind of device",
    )
    p.add_argument(
        "--nextn",
        action="store_true",
        help="also write the multi-token-prediction layer(s) after the last layer; only speculative decoding "
        "(--speculative-algorithm EAGLE/NEXTN with this directory as draft) reads them",
    )
    p.add_argument("--tokenizer", action="store_true", help="also write a word-level tokenizer (<t0> <t1> ...)")
    p.add_argument("--index-topk-freq", type=int, help="state this sharing schedule in config.json (HF key); the "
                   "Shared layers it gives get no indexer tensors")
    p.add_argument("--index-skip-topk-offset", type=int, help="with --index-topk-freq (HF key; default 2)")
    p.add_argument("--max-shard-gb", type=float, help="split the weights into files of at most this size")
    return p.parse_args(argv)



def main(argv=None) -> None:
    run(Options(**vars(parse_args(argv))))


if __name__ == "__main__":
    main()
