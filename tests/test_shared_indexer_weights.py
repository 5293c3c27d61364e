"""Shared layers carry no indexer weights; the loader gets exactly the indexer tensors the model still has."""


import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_cpu import build_decoder_layers, build_model, tiny_dsa_config  # noqa: E402

from sglang_indexcache.names import ENV_PATTERN  # noqa: E402
from sglang_indexcache.patches import apply_model_patches, revert  # noqa: E402
from sglang_indexcache.patches.worker.shared_indexer_weights import WEIGHT_MODULES  # noqa: E402

pytestmark = pytest.mark.sglang
PATTERN = "FSSSFSSF"


def checkpoint_names(cfg: dict) -> list[str]:
    """The tensor names of a Hugging Face DeepSeek-V3.2 checkpoint for ``cfg`` (as bench.random_checkpoint writes
    them)."""
    from sglang_indexcache.bench.random_checkpoint import checkpoint_spec

    return [name for name, _, _ in checkpoint_spec(cfg)]


@pytest.fixture
def patched(monkeypatch):
    monkeypatch.setenv(ENV_PATTERN, PATTERN)
    yield
    revert()


def indexer_params(model) -> set[str]:
    return {name for name, _ in model.named_parameters() if ".indexer." in name}


def test_shared_layers_have_no_indexer_weights(patched):
    stock_model = build_model(tiny_dsa_config())
    stock = indexer_params(stock_model)
    # 0.5.17 fuses wk and weights_proj into wk_weights_proj: the modules this SGLang builds
    built = [m for m in WEIGHT_MODULES if hasattr(stock_model.model.layers[0].self_attn.indexer, m)]
    assert {"wq_b", "k_norm"} <= set(built) and ({"wk", "weights_proj"} <= set(built) or "wk_weights_proj" in built)
    apply_model_patches()
    model = build_model(tiny_dsa_config())
    for i, layer in enumerate(model.model.layers):
        present = [hasattr(layer.self_attn.indexer, m) for m in WEIGHT_MODULES]
        assert present == [PATTERN[i] == "F" and m in built for m in WEIGHT_MODULES]
    kept = indexer_params(model)
    assert kept == {n for n in stock if PATTERN[int(n.split(".")[2])] == "F"}
    (draft,) = build_decoder_layers(tiny_dsa_config(), [0], is_nextn=True)
    assert all(hasattr(draft.self_attn.indexer, m) for m in built)


def test_loader_gets_exactly_the_indexer_tensors_the_model_has(patched, monkeypatch):
    from sglang.srt.models.deepseek_v2 import DeepseekV2ForCausalLM

    received = {}

    def stand_in(self, weights, is_nextn=False):  # SGLang's loader, recording what it is given
        received[is_nextn] = [name for name, _ in weights]

    monkeypatch.setattr(DeepseekV2ForCausalLM, "load_weights", stand_in)
    apply_model_patches()
    cfg = tiny_dsa_config()
    model = build_model(cfg)
    names = checkpoint_names(cfg)
    model.load_weights((n, None) for n in names)
    got = received[False]
    assert {n for n in got if ".indexer." in n} == indexer_params(model)
    assert [n for n in names if ".indexer." not in n] == [n for n in got if ".indexer." not in n]
    # A checkpoint that ships no indexer weights for Shared layers (GLM-5.2 style) gives the loader the same.
    glm52_style = [n for n in names if not (".indexer." in n and PATTERN[int(n.split(".")[2])] == "S")]
    model.load_weights((n, None) for n in glm52_style)
    assert received[False] == got
    # The draft model's loading keeps everything.
    model.load_weights(((n, None) for n in names), is_nextn=True)
    assert received[True] == names
