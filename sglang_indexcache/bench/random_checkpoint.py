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

Only torch and safetensors are needed; the tokenizer also needs tokenizers and transformers.
``scripts/make_random_checkpoint.py`` is its command line.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..layer_map import LayerMap

RANDOM, ONES, ZEROS = "random", "ones", "zeros"
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
INDEX_FILE = "model.safetensors.index.json"


@dataclass
class Options:
    config: Path
    out: Path
    std: float = 0.02
    seed: int = 0
    dtype: str = "bfloat16"
    device: str | None = None  # where random numbers are drawn; None: the GPU if there is one
    nextn: bool = False
    tokenizer: bool = False
    index_topk_freq: int | None = None
    index_skip_topk_offset: int | None = None
    max_shard_gb: float = 4.0


def _mlp(prefix: str, hidden: int, inter: int):
    yield f"{prefix}.gate_proj.weight", (inter, hidden), RANDOM
    yield f"{prefix}.up_proj.weight", (inter, hidden), RANDOM
    yield f"{prefix}.down_proj.weight", (hidden, inter), RANDOM


def _attention(prefix: str, cfg: dict, indexer: bool = True):
    hidden, heads = cfg["hidden_size"], cfg["num_attention_heads"]
    nope, rope, v_dim = cfg["qk_nope_head_dim"], cfg["qk_rope_head_dim"], cfg["v_head_dim"]
    kv_rank, q_rank = cfg["kv_lora_rank"], cfg.get("q_lora_rank")
    if q_rank:
        yield f"{prefix}.q_a_proj.weight", (q_rank, hidden), RANDOM
        yield f"{prefix}.q_a_layernorm.weight", (q_rank,), ONES
        yield f"{prefix}.q_b_proj.weight", (heads * (nope + rope), q_rank), RANDOM
    else:
        yield f"{prefix}.q_proj.weight", (heads * (nope + rope), hidden), RANDOM
    # The rope part of the key is shared by all heads, hence the extra qk_rope_head_dim rows.
    yield f"{prefix}.kv_a_proj_with_mqa.weight", (kv_rank + rope, hidden), RANDOM
    yield f"{prefix}.kv_a_layernorm.weight", (kv_rank,), ONES
    yield f"{prefix}.kv_b_proj.weight", (heads * (nope + v_dim), kv_rank), RANDOM
    yield f"{prefix}.o_proj.weight", (hidden, heads * v_dim), RANDOM
    # attention_bias is ignored on purpose: SGLang's MLA layers have no biases and would drop them.
    if cfg.get("index_topk") is not None and indexer:
        if not q_rank:
            raise ValueError("a DSA indexer reads the compressed query, so q_lora_rank must be set")
        n_heads, head_dim = cfg["index_n_heads"], cfg["index_head_dim"]
        yield f"{prefix}.indexer.wq_b.weight", (n_heads * head_dim, q_rank), RANDOM
        yield f"{prefix}.indexer.wk.weight", (head_dim, hidden), RANDOM
        yield f"{prefix}.indexer.k_norm.weight", (head_dim,), ONES
        yield f"{prefix}.indexer.k_norm.bias", (head_dim,), ZEROS
        yield f"{prefix}.indexer.weights_proj.weight", (n_heads, hidden), RANDOM


def _moe(prefix: str, cfg: dict):
    hidden, n_experts, inter = cfg["hidden_size"], cfg["n_routed_experts"], cfg["moe_intermediate_size"]
    yield f"{prefix}.gate.weight", (n_experts, hidden), RANDOM
    if cfg.get("topk_method", "noaux_tc") == "noaux_tc":
        # Zero, as after pre-training starts; real checkpoints keep this routing bias in float32.
        yield f"{prefix}.gate.e_score_correction_bias", (n_experts,), ZEROS
    for e in range(n_experts):
        yield from _mlp(f"{prefix}.experts.{e}", hidden, inter)
    if cfg.get("n_shared_experts"):
        yield from _mlp(f"{prefix}.shared_experts", hidden, inter * cfg["n_shared_experts"])


def _is_moe_layer(cfg: dict, layer: int) -> bool:
    # SGLang's rule (it also honours moe_layer_freq, which Hugging Face's config does not have).
    return (
        cfg.get("n_routed_experts") is not None
        and layer >= (cfg.get("first_k_dense_replace") or 0)
        and layer % (cfg.get("moe_layer_freq") or 1) == 0
    )


def _decoder_layer(prefix: str, cfg: dict, moe: bool, indexer: bool = True):
    hidden = cfg["hidden_size"]
    yield f"{prefix}.input_layernorm.weight", (hidden,), ONES
    yield from _attention(f"{prefix}.self_attn", cfg, indexer)
    yield f"{prefix}.post_attention_layernorm.weight", (hidden,), ONES
    if moe:
        yield from _moe(f"{prefix}.mlp", cfg)
    else:
        yield from _mlp(f"{prefix}.mlp", hidden, cfg["intermediate_size"])


def checkpoint_spec(cfg: dict, nextn: bool = False) -> list[tuple[str, tuple[int, ...], str]]:
    """(name, shape, init) for every tensor of the checkpoint, in writing order.

    A config that states a sharing schedule gets indexer tensors only for its Full layers.
    """
    hidden, vocab, n_layers = cfg["hidden_size"], cfg["vocab_size"], cfg["num_hidden_layers"]
    full = set(LayerMap.from_hf_config(cfg).full_layers) if cfg.get("index_topk") is not None else set()
    spec = [("model.embed_tokens.weight", (vocab, hidden), RANDOM)]
    for i in range(n_layers):
        spec += _decoder_layer(f"model.layers.{i}", cfg, _is_moe_layer(cfg, i), indexer=i in full)
    spec.append(("model.norm.weight", (hidden,), ONES))
    if not cfg.get("tie_word_embeddings", False):
        spec.append(("lm_head.weight", (vocab, hidden), RANDOM))
    if nextn:
        n_nextn = cfg.get("num_nextn_predict_layers") or 0
        if not n_nextn:
            raise ValueError("--nextn needs num_nextn_predict_layers >= 1 in the config")
        # The multi-token-prediction layers follow the main ones. Their own embed_tokens and shared_head.head
        # copies are left out: SGLang skips them and reuses the main model's embedding and lm_head.
        for i in range(n_layers, n_layers + n_nextn):
            p = f"model.layers.{i}"
            spec += [
                (f"{p}.enorm.weight", (hidden,), ONES),
                (f"{p}.hnorm.weight", (hidden,), ONES),
                (f"{p}.eh_proj.weight", (hidden, 2 * hidden), RANDOM),
                (f"{p}.shared_head.norm.weight", (hidden,), ONES),
            ]
            spec += _decoder_layer(p, cfg, moe=cfg.get("n_routed_experts") is not None)
    return spec


def tensor_dtype(name: str, dtype: torch.dtype) -> torch.dtype:
    return torch.float32 if name.endswith("e_score_correction_bias") else dtype


def _tensor_seed(seed: int, name: str) -> int:
    # Seeding each tensor from its name keeps its values independent of writing order, sharding and --nextn.
    digest = hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def make_tensor(name, shape, init, dtype, std, seed, device) -> torch.Tensor:
    dtype = tensor_dtype(name, dtype)
    if init == ONES:
        return torch.ones(shape, dtype=dtype)
    if init == ZEROS:
        return torch.zeros(shape, dtype=dtype)
    gen = torch.Generator(device=device).manual_seed(_tensor_seed(seed, name))
    return torch.empty(shape, dtype=dtype, device=device).normal_(0.0, std, generator=gen).cpu()


def _shards(spec, dtype: torch.dtype, max_bytes: int) -> list[list]:
    shards, size = [[]], 0
    for entry in spec:
        name, shape, _ = entry
        nbytes = torch.Size(shape).numel() * tensor_dtype(name, dtype).itemsize
        if shards[-1] and size + nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def write_checkpoint(cfg, out: Path, *, std, seed, dtype, device, nextn=False, max_shard_bytes=4 << 30) -> int:
    """Write the weights of `cfg` into `out` one shard at a time; returns the number of parameters."""
    spec = checkpoint_spec(cfg, nextn)
    # Old shards would be globbed as weights too when their count differs from this run's.
    for stale in [*out.glob("model*.safetensors"), out / INDEX_FILE]:
        stale.unlink(missing_ok=True)
    shards = _shards(spec, dtype, max_shard_bytes)
    if len(shards) == 1:
        files = ["model.safetensors"]
    else:
        files = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    weight_map, total_bytes, n_params = {}, 0, 0
    for file, shard in zip(files, shards):
        tensors = {name: make_tensor(name, shape, init, dtype, std, seed, device) for name, shape, init in shard}
        # "format": "pt" is what transformers checks before it accepts a safetensors file.
        save_file(tensors, str(out / file), metadata={"format": "pt"})
        (out / file).chmod(0o644)  # safetensors creates the file owner-only
        for name, t in tensors.items():
            weight_map[name] = file
            total_bytes += t.numel() * t.element_size()
            n_params += t.numel()
        del tensors
    if len(files) > 1:
        index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
        (out / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    return n_params


def write_config(config_path: Path, out: Path, schedule: dict | None = None) -> dict:
    """Write the config the checkpoint is made for (with ``schedule``'s keys set) and return it."""
    cfg = json.loads(config_path.read_text())
    if "quantization_config" in cfg:
        # The weights written are unquantised; left in, this would make SGLang expect fp8 weights and scales.
        del cfg["quantization_config"]
        print("note: removed quantization_config from config.json (the weights are not quantised)")
    elif not schedule:
        if config_path.resolve() != (out / "config.json").resolve():
            shutil.copyfile(config_path, out / "config.json")
        return cfg
    cfg.update(schedule or {})
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    return cfg


def write_tokenizer(cfg: dict, out: Path) -> None:
    """A word-level tokenizer whose words are "<t{id}>", so any id sequence survives a decode/encode round trip."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab_size = cfg["vocab_size"]
    vocab = {f"<t{i}>": i for i in range(vocab_size - 1)}
    vocab["<unk>"] = vocab_size - 1
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    special = {"unk_token": "<unk>"}
    for key in ("bos", "eos"):
        token_id = cfg.get(f"{key}_token_id")
        if isinstance(token_id, int) and token_id < vocab_size - 1:
            special[f"{key}_token"] = f"<t{token_id}>"
    max_len = cfg.get("max_position_embeddings")
    PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=max_len, **special).save_pretrained(out)


def run(args: Options) -> int:
    """Write the config, weights and (with ``args.tokenizer``) tokenizer; returns the number of parameters."""
    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device available")
    start = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    schedule = {"index_topk_freq": args.index_topk_freq} if args.index_topk_freq else {}
    if args.index_skip_topk_offset is not None:
        if not schedule:
            raise SystemExit("error: --index-skip-topk-offset needs --index-topk-freq")
        schedule["index_skip_topk_offset"] = args.index_skip_topk_offset
    cfg = write_config(args.config, args.out, schedule)
    n_params = write_checkpoint(
        cfg,
        args.out,
        std=args.std,
        seed=args.seed,
        dtype=DTYPES[args.dtype],
        device=args.device,
        nextn=args.nextn,
        max_shard_bytes=int(args.max_shard_gb * (1 << 30)),
    )
    if args.device == "cuda":
        # A caller that starts a server next must not leave it this process's cached blocks to size its pool from.
        torch.cuda.empty_cache()
    if args.tokenizer:
        write_tokenizer(cfg, args.out)
    print(f"wrote {n_params / 1e6:.1f}M parameters to {args.out} in {time.perf_counter() - start:.1f}s")
    return n_params
