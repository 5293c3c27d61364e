"""bench.random_checkpoint (scripts/make_random_checkpoint.py) writes a Hugging Face DeepSeek-V3.2 checkpoint: right
names, shapes and scales."""

import json
from pathlib import Path

import pytest
from sglang_cpu import tiny_dsa_config

torch = pytest.importorskip("torch")
load_file = pytest.importorskip("safetensors.torch").load_file

mrc = pytest.importorskip("sglang_indexcache.bench.random_checkpoint")

# Small but with every part of the real architecture: a dense first layer, MoE layers with shared experts,
# MLA with a q LoRA, and a DSA indexer (index_head_dim kept at the real 128).
TINY = tiny_dsa_config(
    num_layers=4, vocab_size=512, hidden_size=256, intermediate_size=512, moe_intermediate_size=64,
    num_attention_heads=2, num_key_value_heads=2, q_lora_rank=128, n_routed_experts=4, num_experts_per_tok=2,
    n_group=2, topk_group=1, max_position_embeddings=4096, index_n_heads=4,
)
TINY.pop("rope_scaling")
N_LAYERS = TINY["num_hidden_layers"]


@pytest.fixture(scope="module")
def make(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    config = root / "config.json"
    config.write_text(json.dumps(TINY))
    made = {}

    def make(**options) -> Path:
        key = tuple(sorted(options.items()))
        if key not in made:
            out = root / f"run{len(made)}"
            mrc.run(mrc.Options(config=config, out=out, device="cpu", **options))
            made[key] = out
        return made[key]

    return make


def load(model_dir: Path) -> dict:
    tensors = {}
    for file in sorted(model_dir.glob("*.safetensors")):
        tensors.update(load_file(file))
    return tensors


def hf_checkpoint_shapes(cfg: dict) -> dict:
    """Names and shapes of transformers' DeepseekV32ForCausalLM in checkpoint form."""
    modeling = pytest.importorskip("transformers.models.deepseek_v32.modeling_deepseek_v32")
    hf_cfg = modeling.DeepseekV32Config(**{k: v for k, v in cfg.items() if k not in ("architectures", "model_type")})
    with torch.device("meta"):
        model = modeling.DeepseekV32ForCausalLM(hf_cfg)
    shapes = {}
    for name, t in model.state_dict().items():
        # transformers fuses each layer's experts into 3-D tensors in memory only. Checkpoints, which it converts
        # from and back to on load and save, and SGLang's loader use one 2-D tensor per expert and projection.
        if name.endswith(".mlp.experts.gate_up_proj"):
            n_experts, two_inter, hidden = t.shape
            for e in range(n_experts):
                for proj in ("gate_proj", "up_proj"):
                    shapes[f"{name[: -len('gate_up_proj')]}{e}.{proj}.weight"] = (two_inter // 2, hidden)
        elif name.endswith(".mlp.experts.down_proj"):
            n_experts, hidden, inter = t.shape
            for e in range(n_experts):
                shapes[f"{name[: -len('down_proj')]}{e}.down_proj.weight"] = (hidden, inter)
        else:
            shapes[name] = tuple(t.shape)
    return shapes


def test_names_and_shapes_match_transformers(make):
    written = {name: tuple(t.shape) for name, t in load(make()).items()}
    expected = hf_checkpoint_shapes(TINY)
    assert sorted(written) == sorted(expected)
    assert written == expected
    for i in range(N_LAYERS):
        for part in ("wq_b.weight", "wk.weight", "k_norm.weight", "k_norm.bias", "weights_proj.weight"):
            assert f"model.layers.{i}.self_attn.indexer.{part}" in written


def test_transformers_loads_it(make):
    modeling = pytest.importorskip("transformers.models.deepseek_v32.modeling_deepseek_v32")
    model_dir = make()
    hf_cfg = modeling.DeepseekV32Config(**{k: v for k, v in TINY.items() if k not in ("architectures", "model_type")})
    model, info = modeling.DeepseekV32ForCausalLM.from_pretrained(
        model_dir, config=hf_cfg, dtype=torch.float32, output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    written = load(model_dir)
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    torch.testing.assert_close(params["lm_head.weight"], written["lm_head.weight"].float(), rtol=0, atol=0)
    # Expert 1's up projection is the second half of its fused gate_up row block.
    fused = params["model.layers.2.mlp.experts.gate_up_proj"][1, TINY["moe_intermediate_size"] :]
    torch.testing.assert_close(fused, written["model.layers.2.mlp.experts.1.up_proj.weight"].float(), rtol=0, atol=0)


def test_scales(make):
    std = 0.03
    written = load(make(std=std))
    random_total = 0
    for name, t in written.items():
        if name.endswith("norm.weight"):
            assert torch.equal(t, torch.ones_like(t)), name
        elif name.endswith(("k_norm.bias", "e_score_correction_bias")):
            assert torch.equal(t, torch.zeros_like(t)), name
        else:
            assert t.dtype == torch.bfloat16, name
            x = t.float()
            assert abs(x.std().item() / std - 1) < 0.1, name
            assert abs(x.mean().item()) < 6 * std / x.numel() ** 0.5, name
            random_total += x.numel()
    assert random_total > 0.99 * sum(t.numel() for t in written.values())
    # SGLang and transformers both keep the routing bias in float32.
    assert written["model.layers.1.mlp.gate.e_score_correction_bias"].dtype == torch.float32


def test_seed_determines_bytes(make):
    a, b, c = make(), make(seed=0, dtype="bfloat16"), make(seed=1)
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    assert (a / "model.safetensors").read_bytes() != (c / "model.safetensors").read_bytes()
    ta, tc = load(a), load(c)
    for name in ta:
        if name.endswith("weight") and "norm" not in name:
            assert not torch.equal(ta[name], tc[name]), name


def test_sharding_and_nextn_keep_values(make):
    base = load(make())
    sharded_dir = make(max_shard_gb=0.5 / 1024)
    index = json.loads((sharded_dir / "model.safetensors.index.json").read_text())
    assert not (sharded_dir / "model.safetensors").exists()
    assert set(index["weight_map"]) == set(base)
    assert set(index["weight_map"].values()) == {p.name for p in sharded_dir.glob("*.safetensors")}
    sharded = load(sharded_dir)
    assert all(torch.equal(sharded[n], base[n]) for n in base)

    with_nextn = load(make(nextn=True))
    assert all(torch.equal(with_nextn[n], base[n]) for n in base)
    # The MTP layer is a MoE decoder layer plus its own input norms and projection, numbered after the last layer.
    last, mtp = f"model.layers.{N_LAYERS - 1}.", f"model.layers.{N_LAYERS}."
    extra = {n[len(mtp) :]: tuple(t.shape) for n, t in with_nextn.items() if n not in base}
    decoder = {n[len(last) :]: tuple(t.shape) for n, t in base.items() if n.startswith(last)}
    hidden = TINY["hidden_size"]
    assert all(n.startswith(mtp) for n in with_nextn if n not in base)
    assert extra == decoder | {
        "enorm.weight": (hidden,),
        "hnorm.weight": (hidden,),
        "eh_proj.weight": (hidden, 2 * hidden),
        "shared_head.norm.weight": (hidden,),
    }


def test_config_and_tokenizer(make):
    pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    model_dir = make(tokenizer=True)
    assert json.loads((model_dir / "config.json").read_text()) == TINY
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    ids = [0, 5, 17, 510]
    assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
    assert (tok.bos_token_id, tok.eos_token_id) == (TINY["bos_token_id"], TINY["eos_token_id"])
