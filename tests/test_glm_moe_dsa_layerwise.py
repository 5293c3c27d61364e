"""transformers' GlmMoeDsaForCausalLM run layer by layer under a map gives exactly the logits of the same model
built by transformers with that map (``index_topk_pattern``): Shared layers reuse the preceding Full layer's
top-k and run no indexer."""

import pytest
import torch
import torch.nn.functional as F
from tiny_glm import tiny_config, tiny_model

from sglang_indexcache.inprocess import LayerwiseDSA
from sglang_indexcache.inprocess.glm_moe_dsa import GlmMoeDsaLayerwise
from sglang_indexcache.inprocess.runner import capture_topk, token_losses


@pytest.mark.parametrize("pattern", ["FFFFFF", "FSFSSF", "FSSSSS", "FFSSFS"])
def test_layerwise_equals_transformers_with_the_same_map(pattern):
    from transformers import GlmMoeDsaForCausalLM

    model = tiny_model(6)
    ids = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(0))
    ours = token_losses(GlmMoeDsaLayerwise(model), pattern, ids)
    theirs = GlmMoeDsaForCausalLM(tiny_config(6, index_topk_pattern=pattern)).eval()
    result = theirs.load_state_dict(model.state_dict(), strict=False)
    assert not result.missing_keys
    assert len(result.unexpected_keys) == 5 * pattern.count("S")  # the Shared layers' indexers
    with torch.no_grad():
        logits = theirs(ids).logits
    expected = F.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="none").view(2, 23)
    assert torch.equal(ours, expected)


def test_maps_differ_when_top_k_is_smaller_than_the_sequence():
    model = GlmMoeDsaLayerwise(tiny_model(6))
    ids = torch.randint(0, 97, (1, 24), generator=torch.Generator().manual_seed(0))
    assert isinstance(model, LayerwiseDSA)
    assert not torch.equal(token_losses(model, "FFFFFF", ids), token_losses(model, "FSSSSS", ids))
    topk = capture_topk(model, ids)
    assert topk.shape == (6, 1, 24, 4)


def test_from_pretrained_builds_every_indexer_whatever_the_checkpoint_schedule(tmp_path):
    model = tiny_model(4)
    model.config.index_topk_pattern = "FSFS"  # as a checkpoint that names a schedule would say
    model.save_pretrained(tmp_path)
    loaded = GlmMoeDsaLayerwise.from_pretrained(tmp_path)
    assert loaded.model.config.indexer_types == ["full"] * 4
    assert all(layer.self_attn.indexer is not None for layer in loaded.model.model.layers)


def test_a_model_built_with_shared_layers_is_refused():
    from transformers import GlmMoeDsaForCausalLM

    with pytest.raises(ValueError, match=r"layers \[1, 3\]"):
        GlmMoeDsaLayerwise(GlmMoeDsaForCausalLM(tiny_config(4, index_topk_pattern="FSFS")))
