"""The retrofit DSA testbed on a tiny random Llama: attention, indexer, objective and map semantics."""

import pytest
import torch

from sglang_indexcache.inprocess import LayerwiseDSA
from sglang_indexcache.inprocess.runner import capture_topk, mean_loss, run_layers
from sglang_indexcache.testbed import dense_token_losses, naive, tiny_model
from sglang_indexcache.testbed.attention import blockwise_attention
from sglang_indexcache.testbed.distill import layer_kl
from sglang_indexcache.testbed.indexer import index_scores, indexer_topk, random_topk

torch.set_num_threads(2)


def random_qkv(seq, heads=4, kv_heads=2, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, heads, seq, dim, generator=g)
    k = torch.randn(2, kv_heads, seq, dim, generator=g)
    v = torch.randn(2, kv_heads, seq, dim, generator=g)
    return q, k, v


def random_selection(seq, k, seed=0):
    return random_topk(torch.zeros(2, seq, dtype=torch.long), k, 16, torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seq", [1, 63, 111])
@pytest.mark.parametrize("block", [16, 40])
def test_blockwise_sparse_attention_equals_dense_masked_reference(seq, block):
    q, k, v = random_qkv(seq)
    topk = random_selection(seq, 8)
    got = blockwise_attention(q, k, v, topk, 0.3, block)
    want, _ = naive.attention(q, k, v, topk, 0.3)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # a different selection gives a different result: the mask is really applied
    other = blockwise_attention(q, k, v, random_selection(seq, 8, seed=1), 0.3, block)
    if seq > 8:
        assert (other - got).abs().max() > 1e-3


@pytest.mark.parametrize("seq", [1, 63, 111])
def test_selection_of_every_visible_key_is_dense_causal_attention(seq):
    q, k, v = random_qkv(seq)
    everything = random_selection(seq, seq)
    dense, _ = naive.attention(q, k, v, None, 0.3)
    torch.testing.assert_close(blockwise_attention(q, k, v, everything, 0.3, 16), dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(blockwise_attention(q, k, v, None, 0.3, 16), dense, atol=1e-5, rtol=1e-5)


def test_topk_pads_short_rows_and_matches_reference_scores():
    model = tiny_model(num_layers=1, index_topk=8)
    x = torch.randn(2, 37, 32)
    inputs = model.indexers[0].project(x, torch.arange(37).expand(2, 37))
    full = naive.index_scores(inputs)
    torch.testing.assert_close(index_scores(inputs, 0, 37), full, atol=1e-5, rtol=1e-5)
    topk = indexer_topk(inputs, 8, block=5)
    assert topk.shape == (2, 37, 8)
    for t in range(37):
        row = topk[0, t]
        assert (row >= 0).sum() == min(8, t + 1)
        assert (row[row >= 0] <= t).all()
        chosen = set(row[row >= 0].tolist())
        best = full[0, t, : t + 1]
        # a set compare with ties allowed: every chosen key scores at least the best unchosen one
        rest = [j for j in range(t + 1) if j not in chosen]
        if rest:
            assert best[list(chosen)].min() >= best[rest].max() - 1e-6


def test_layerwise_interface_and_all_full_with_k_ge_seq_is_the_base_model():
    model = tiny_model(num_layers=3, index_topk=64)
    assert isinstance(model, LayerwiseDSA)
    ids = torch.randint(0, 128, (2, 40))
    base = dense_token_losses(model, ids).mean().item()
    assert mean_loss(model, "FFF", [ids]) == pytest.approx(base, abs=1e-5)
    model.index_topk = 4
    assert abs(mean_loss(model, "FFF", [ids]) - base) > 1e-4


def test_dense_path_equals_transformers_forward():
    model = tiny_model(num_layers=2)
    ids = torch.randint(0, 128, (2, 30))
    with torch.no_grad():
        logits = model.lm(ids).logits[:, :-1]
    want = torch.nn.functional.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none")
    torch.testing.assert_close(dense_token_losses(model, ids), want, atol=1e-5, rtol=1e-5)


def test_shared_layers_attend_through_exactly_the_source_layers_indices():
    model = tiny_model(num_layers=4, index_topk=6)
    ids = torch.randint(0, 128, (1, 45))
    own = capture_topk(model, ids)
    calls = []
    original = model.select

    def spy(index, x, positions):
        calls.append(index)
        return original(index, x, positions)

    model.select = spy
    keep = []
    state = run_layers(model, "FSFS", model.embed(ids), keep=keep)
    assert calls == [0, 2]
    assert torch.equal(keep[2].topk, keep[1].topk)  # layer 1 handed on layer 0's selection unchanged
    assert torch.equal(state.topk, keep[3].topk)
    torch.testing.assert_close(keep[2].topk, own[0])  # layer 0's selection is its all-Full selection
    # layer 1 under S equals layer 1 forced to attend through layer 0's indices
    forced = model.layer(1, keep[1], full=False)
    torch.testing.assert_close(forced.hidden, keep[2].hidden)
    # and it is not what layer 1 does with its own indexer
    assert not torch.equal(model.layer(1, keep[1], full=True).hidden, keep[2].hidden)
    # changing a Shared layer's indexer changes nothing
    before = mean_loss(model, "FSFS", [ids])
    with torch.no_grad():
        model.indexers[1].wq.weight.mul_(-3.0)
        model.indexers[3].wq.weight.mul_(-3.0)
    assert mean_loss(model, "FSFS", [ids]) == before
    assert mean_loss(model, "FFFF", [ids]) != pytest.approx(before, abs=1e-7)


@pytest.mark.parametrize("sparse", [False, True])
def test_indexer_kl_matches_dense_reference_and_trains_only_indexers(sparse):
    model = tiny_model(num_layers=2, index_topk=8, block=7)
    ids = torch.randint(0, 128, (2, 33))
    state = model.embed(ids)
    loss, after = layer_kl(model, 0, state, sparse=sparse)
    a = model.attention_inputs(0, state)
    inputs = model.indexers[0].project(a.x, state.extra.ids)
    topk = indexer_topk(inputs, 8, 7) if sparse else None
    _, p = naive.attention(a.q, a.k, a.v, topk, a.scale)
    allowed = naive.causal_mask(33, p.device)[None].expand(2, -1, -1)
    if sparse:
        allowed = allowed & naive.topk_mask(topk, 33)
    want = naive.kl_loss(p, naive.index_scores(inputs), allowed)
    torch.testing.assert_close(loss, want, atol=1e-5, rtol=1e-4)
    assert loss.item() > 0
    loss.backward()
    assert model.indexers[0].wq.weight.grad is not None and model.indexers[0].wq.weight.grad.abs().sum() > 0
    assert model.indexers[1].wq.weight.grad is None
    assert all(p.grad is None for p in model.lm.parameters())
    # the state after the layer is the layer's forward under the same attention
    ref = model.layer(0, state, full=True) if sparse else model.dense_layer(0, state)
    torch.testing.assert_close(after.hidden, ref.hidden, atol=1e-5, rtol=1e-5)
