"""The CPU harness imports the real SGLang and builds its DSA layers with SGLang's own IndexCache flags."""

import importlib

import pytest
import sglang_cpu
import torch

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_cpu import build_decoder_layers, build_model, tiny_dsa_config  # noqa: E402

pytestmark = pytest.mark.sglang

MODULES = [
    "sglang.srt.server_args",
    "sglang.srt.models.deepseek_v2",
    "sglang.srt.models.deepseek_nextn",
    "sglang.srt.layers.attention.nsa.nsa_indexer",
    "sglang.srt.mem_cache.memory_pool",
    "sglang.srt.model_executor.model_runner",
    "sglang.srt.batch_overlap.two_batch_overlap",
    "sglang.srt.models.deepseek_common.attention_forward_methods.forward_mla",
    "sglang.srt.entrypoints.http_server",
]


def schedule(layers) -> str:
    return "".join("S" if layer.self_attn.skip_topk else "F" for layer in layers)


def assert_next_flags_consistent(layers):
    """Each layer's ``next_skip_topk`` says whether the following layer reuses its top-k."""
    for layer, following in zip(layers, layers[1:]):
        assert layer.self_attn.next_skip_topk == following.self_attn.skip_topk


@pytest.mark.parametrize("name", MODULES)
def test_module_imports(name):
    importlib.import_module(name)


def test_stubbed_kernels_fail_loudly():
    import sgl_kernel

    with pytest.raises(RuntimeError, match="stub"):
        sgl_kernel.fast_topk_v2()
    with pytest.raises(ImportError):
        import sgl_kernel.scalar_type  # noqa: F401


def test_every_layer_has_an_indexer_and_defaults_to_full():
    from sglang.srt.layers.attention.nsa.nsa_indexer import Indexer

    layers = build_decoder_layers(tiny_dsa_config(), range(8))
    assert all(isinstance(layer.self_attn.indexer, Indexer) for layer in layers)
    assert schedule(layers) == "FFFFFFFF"
    assert not any(layer.self_attn.next_skip_topk for layer in layers)
    assert layers[0].self_attn.indexer.wq_b.weight.device.type == "meta"
    assert layers[0].self_attn.indexer.wq_b.weight.dtype == torch.bfloat16


def test_build_leaves_no_global_state_behind():
    capability, dtype = torch.cuda.get_device_capability, torch.get_default_dtype()
    build_decoder_layers(tiny_dsa_config(), [0])
    assert torch.cuda.get_device_capability is capability
    assert torch.get_default_dtype() == dtype


def test_index_topk_freq_override():
    layers = build_decoder_layers(tiny_dsa_config(), range(8), overrides={"index_topk_freq": 4})
    assert schedule(layers) == "FFSSSFSS"
    assert_next_flags_consistent(layers)


def test_index_topk_pattern_override():
    layers = build_decoder_layers(tiny_dsa_config(), range(8), overrides={"index_topk_pattern": "FSFSSFFS"})
    assert schedule(layers) == "FSFSSFFS"
    assert_next_flags_consistent(layers)
    assert layers[-1].self_attn.next_skip_topk is False


def test_build_model():
    model = build_model(tiny_dsa_config(), overrides={"index_topk_freq": 4})
    assert type(model).__name__ == "DeepseekV3ForCausalLM"
    assert schedule(model.model.layers) == "FFSSSFSS"
    assert {p.device.type for p in model.parameters()} == {"meta"}
