"""The greedy search: the fast in-process search makes exactly the naive search's choices, at under half its
layer forwards; an oracle model whose removable layers are known by construction; resume; pipeline blocks."""

import pytest
import torch
from tiny_glm import sampled_batches, tiny_model, zero_residual
from toy_dsa import ToyDSA

from sglang_indexcache.calibrate.naive import naive_search
from sglang_indexcache.calibrate.search import (
    SearchState,
    best,
    flip,
    full_count,
    greedy_search,
    knee,
    pattern_after,
    stage_blocks,
)
from sglang_indexcache.calibrate.torch_scorer import TorchScorer
from sglang_indexcache.inprocess.runner import mean_loss


def random_batches(vocab, count=2, batch=2, seq=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (batch, seq), generator=g) for _ in range(count)]


def naive(model, batches, min_full):
    return naive_search(lambda p: mean_loss(model, p, batches), model.num_layers, min_full)


@pytest.mark.parametrize("num_layers,min_full,seed", [(12, 1, 0), (12, 3, 1), (9, 2, 2)])
def test_fast_search_equals_naive_on_toy(num_layers, min_full, seed):
    model = ToyDSA(num_layers, seed=seed)
    batches = random_batches(model.vocab, seed=seed)
    order, losses, base = naive(model, batches, min_full)
    scorer = TorchScorer(model, batches)
    state = greedy_search(scorer, min_full)
    assert state.order == order
    # Every reused state is the tensor a full forward computes; only the summation order of the losses differs.
    assert state.loss == pytest.approx(losses, rel=1e-12, abs=0)
    assert state.base_loss == pytest.approx(base, rel=1e-12, abs=0)
    assert state.pattern.count("F") == min_full
    naive_forwards = num_layers * (1 + state.evaluations)
    assert scorer.layer_forwards <= 0.5 * naive_forwards


def test_fast_search_equals_naive_on_glm_moe_dsa():
    from sglang_indexcache.inprocess.glm_moe_dsa import GlmMoeDsaLayerwise

    model = GlmMoeDsaLayerwise(tiny_model(7))
    batches = random_batches(97, count=2, batch=2, seq=12)
    order, losses, base = naive(model, batches, 2)
    scorer = TorchScorer(model, batches)
    state = greedy_search(scorer, 2)
    assert state.order == order
    # transformers' layers run on sliced positions here (the first index_topk are unembedded once), so float32
    # matmuls of other shapes round differently on some CPUs (~1e-8 relative); the removal order is exact.
    assert [state.base_loss, *state.loss] == pytest.approx([base, *losses], rel=1e-6, abs=0)
    assert scorer.layer_forwards <= 0.5 * 7 * (1 + state.evaluations)


def test_without_cached_candidates_the_choices_stay_and_the_cost_rises():
    model = ToyDSA(10, seed=3)
    batches = random_batches(model.vocab)
    cached, uncached = TorchScorer(model, batches), TorchScorer(model, batches, cache_bytes=0)
    a, b = greedy_search(cached, 2), greedy_search(uncached, 2)
    assert (a.order, a.loss) == (b.order, b.loss)
    assert cached.layer_forwards < uncached.layer_forwards


def test_oracle_zero_residual_layers_go_first_with_zero_loss_change():
    """Layers 2 and 5 add exactly nothing to the residual stream, so flipping one while the layer after it is
    Full cannot change any output. The data are sampled from the all-Full model itself, so every other flip
    raises the expected loss. The search must take exactly {2, 5} first, at exactly the base loss."""
    from sglang_indexcache.inprocess.glm_moe_dsa import GlmMoeDsaLayerwise

    hf = tiny_model(8, std=0.5)
    zero_residual(hf, [2, 5])
    model = GlmMoeDsaLayerwise(hf)
    batches = sampled_batches(hf, count=2, batch=4, seq=40)
    state = greedy_search(TorchScorer(model, batches), 4)
    assert set(state.order[:2]) == {2, 5}
    assert state.loss[:2] == [state.base_loss, state.base_loss]
    assert state.loss[2] > state.base_loss  # the first real flip costs
    # The same model without the zeroed layers: 2 and 5 are no longer free.
    plain = GlmMoeDsaLayerwise(tiny_model(8, std=0.5))
    other = greedy_search(TorchScorer(plain, sampled_batches(plain.model, count=2, batch=4, seq=40)), 4)
    assert all(loss != other.base_loss for loss in other.loss[:2])


def test_oracle_identical_selection_is_decided_without_a_forward():
    """Layer 3 is a copy of layer 2's indexer path (input norm, query down-projection, indexer) and layer 2
    adds nothing to the residual stream, so layer 3 selects exactly layer 2's top-k: flipping it is free, and
    the scorer decides so from the cached indices alone. A full forward agrees, bit for bit."""
    from sglang_indexcache.inprocess.glm_moe_dsa import GlmMoeDsaLayerwise

    hf = tiny_model(6)
    zero_residual(hf, [2])
    src, dst = hf.model.layers[2], hf.model.layers[3]
    dst.input_layernorm.load_state_dict(src.input_layernorm.state_dict())
    for name in ("q_a_proj", "q_a_layernorm", "indexer"):
        getattr(dst.self_attn, name).load_state_dict(getattr(src.self_attn, name).state_dict())
    model = GlmMoeDsaLayerwise(hf)
    batches = random_batches(97, seq=20)
    scorer = TorchScorer(model, batches)
    base = scorer.start("F" * 6)
    before = scorer.layer_forwards
    assert scorer.candidate_loss(3) == base
    assert scorer.layer_forwards == before and scorer.skipped == 1
    assert mean_loss(model, "FFFSFF", batches) == mean_loss(model, "F" * 6, batches)
    assert scorer.candidate_loss(4) != base  # an ordinary layer is not free, and costs forwards
    assert scorer.layer_forwards > before


def test_resume_continues_exactly():
    model = ToyDSA(10, seed=4)
    batches = random_batches(model.vocab)
    whole = greedy_search(TorchScorer(model, batches), 2)

    saved = []

    def crash_after_three(state):
        saved.append(SearchState.from_json(state.to_json()))
        if len(state.order) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        greedy_search(TorchScorer(model, batches), 2, on_step=crash_after_three)
    resumed = greedy_search(TorchScorer(model, batches), 2, state=saved[-1])
    assert (resumed.order, resumed.loss, resumed.base_loss) == (whole.order, whole.loss, whole.base_loss)


def test_pipeline_blocks_one_flip_per_block_per_step():
    model = ToyDSA(12, seed=5)
    batches = random_batches(model.vocab)
    blocks = stage_blocks(12, 3)
    assert blocks == [(0, 4), (4, 8), (8, 12)]
    state = greedy_search(TorchScorer(model, batches), 3, blocks=blocks)
    assert state.pattern.count("F") == 3
    assert all(state.pattern[start] == "F" for start, _ in blocks)
    for step in set(state.steps):
        flipped = [l for l, s in zip(state.order, state.steps) if s == step]
        assert len({next(i for i, (a, b) in enumerate(blocks) if a <= l < b) for l in flipped}) == len(flipped)
    assert len(set(state.steps)) == 3  # 9 flips, 3 per step
    # Every loss recorded is the loss of the map after that flip.
    for k in range(len(state.order)):
        expected = mean_loss(model, pattern_after(12, state.order[:k + 1]), batches)
        assert state.loss[k] == pytest.approx(expected, rel=1e-12, abs=0)
    # The flips of a step are each block's best under the step's map.
    first = [l for l, s in zip(state.order, state.steps) if s == 1]
    for start, stop in blocks:
        scores = {l: mean_loss(model, flip("F" * 12, l), batches) for l in range(start + 1, stop)}
        assert best(scores) in first


def test_positions_that_see_at_most_k_keys_are_scored_once():
    """Their loss is the same under every map: each candidate's unembedding covers only the later positions,
    and the mean still counts every position."""
    model = ToyDSA(6, seed=8)
    batches = random_batches(model.vocab, count=1, seq=12)
    calls = []
    original = model.token_losses

    def counting(state, ids):
        calls.append(ids.shape[1])
        return original(state, ids)

    model.token_losses = counting
    scorer = TorchScorer(model, batches)
    assert scorer.start("F" * 6) == pytest.approx(mean_loss(model, "F" * 6, batches), rel=1e-12)
    assert scorer.candidate_loss(2) == pytest.approx(mean_loss(model, "FFSFFF", batches), rel=1e-12)
    k = model.index_topk
    assert [c for c in calls if c != 12] == [12 - k, 12 - k]  # each map: the tail only
    assert calls.count(12) == 1 + 2  # the scorer's first map, and the two reference forwards


def test_ties_go_to_the_lower_layer():
    assert best({5: 1.0, 3: 1.0, 7: 2.0}) == 3


def test_full_count_rounds_up_and_keeps_layer_0():
    assert [full_count(r, 78) for r in (0.5, 0.25, 0.125)] == [39, 20, 10]
    assert full_count(0.25, 8) == 2 and full_count(0.01, 8) == 1 and full_count(1 / 3, 9) == 3


def test_knee_is_where_the_curve_bends():
    flat_then_steep = [1.0, 1.0, 1.01, 1.02, 1.5, 2.5]
    assert knee(7, 1.0, flat_then_steep) == 7 - 4
    assert knee(4, 1.0, [0.9, 0.8]) is None  # no rise, no knee


@pytest.mark.parametrize("stages,min_full", [(1, 2), (1, 5), (3, 3), (3, 5), (4, 4)])
def test_the_progress_total_is_the_number_of_candidates_scored(stages, min_full):
    from sglang_indexcache.calibrate.run import evaluations_needed

    model = ToyDSA(12, seed=6)
    blocks = stage_blocks(12, stages) if stages > 1 else None
    fixed = sorted({0, *(a for a, _ in blocks or ())})
    state = greedy_search(TorchScorer(model, random_batches(model.vocab, count=1)), min_full, blocks=blocks)
    assert evaluations_needed(12, fixed, blocks, min_full, None) == state.evaluations
    halfway = SearchState.from_json({**state.to_json(), "order": state.order[:3], "loss": state.loss[:3],
                                     "steps": state.steps[:3]})
    if stages == 1:
        assert evaluations_needed(12, fixed, None, min_full, halfway) == sum(range(min_full, 12 - 3))
