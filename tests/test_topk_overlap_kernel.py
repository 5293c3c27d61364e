"""The Triton overlap kernel under the interpreter against the pure-torch reference (exact integer counts)."""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

from sglang_indexcache.kernels.naive import topk_overlap_naive  # noqa: E402
from sglang_indexcache.kernels.topk_overlap import finish, launch, topk_overlap  # noqa: E402


def random_topk(layers, positions, k, num_tokens, seed=0, pad_short=True):
    """Distinct indices per row; with ``pad_short``, position p sees only ``p + 1`` tokens (causal) and pads."""
    g = torch.Generator().manual_seed(seed)
    out = torch.full((layers, positions, k), -1, dtype=torch.int32)
    for p in range(positions):
        visible = min(p + 1, num_tokens) if pad_short else num_tokens
        for layer in range(layers):
            row = torch.randperm(visible, generator=g)[:k]
            out[layer, p, :len(row)] = row[torch.randperm(len(row), generator=g)].int()
    return out


def assert_same(got, want):
    assert torch.equal(got.sizes, want.sizes)
    assert torch.equal(got.pair_count, want.pair_count)
    torch.testing.assert_close(got.ratio_sum, want.ratio_sum, rtol=0, atol=1e-9)
    torch.testing.assert_close(got.adjacent, want.adjacent, rtol=0, atol=1e-6, equal_nan=True)


@pytest.mark.parametrize("layers,positions,k,num_tokens", [
    (1, 1, 8, 8),      # one layer: no pairs at all
    (3, 63, 16, 40),   # short causal rows at the start
    (5, 111, 24, 30),  # k not a power of two: a masked block tail
    (33, 7, 8, 12),    # two mask words
    (70, 3, 8, 10),    # three words (padded to four), as for 78-layer GLM-5
])
def test_random_against_reference(layers, positions, k, num_tokens):
    topk = random_topk(layers, positions, k, num_tokens, seed=layers * 1000 + positions)
    assert_same(topk_overlap(topk), topk_overlap_naive(topk))


def test_identical_and_disjoint_rows():
    base = random_topk(1, 9, 16, 64, seed=1, pad_short=False)[0]
    identical = base.expand(4, -1, -1).contiguous()
    assert torch.all(topk_overlap(identical).mean() == 1)
    disjoint = torch.stack([torch.arange(16, dtype=torch.int32) + 16 * layer for layer in range(4)])
    disjoint = disjoint[:, None, :].expand(-1, 5, -1).contiguous()
    mean = topk_overlap(disjoint).mean()
    assert torch.all(mean == torch.eye(4, dtype=torch.float64))


def test_padding_and_empty_rows():
    topk = random_topk(4, 12, 16, 64, seed=2, pad_short=False)
    topk[1, 3, 5:] = -1   # a short row: its overlap is over its 5 tokens
    topk[2, 4] = -1       # an empty row: undefined pairs, NaN adjacency
    topk[:, 7] = -1       # a position with no layer selecting anything
    got, want = topk_overlap(topk), topk_overlap_naive(topk)
    assert_same(got, want)
    assert got.sizes[3, 1] == 5 and got.sizes[4, 2] == 0
    assert torch.isnan(got.adjacent[4, 1]) and torch.isnan(got.adjacent[4, 2])
    assert got.pair_count[0, 2, 0] == 12 - 2  # positions 4 and 7 leave the pair (2, 0) undefined


def test_short_row_is_a_subset_of_a_full_one():
    full = torch.arange(16, dtype=torch.int32)
    short = torch.full((16,), -1, dtype=torch.int32)
    short[:4] = torch.tensor([3, 1, 2, 0])
    topk = torch.stack([full, short])[:, None, :]
    assert topk_overlap(topk).mean()[1, 0] == 1.0  # min(|T_i|, |T_j|) denominator


def test_repeated_index_counts_once():
    topk = torch.tensor([[[0, 1, 2, 3]], [[0, 0, 0, 5]]], dtype=torch.int32)
    got, want = topk_overlap(topk), topk_overlap_naive(topk)
    assert_same(got, want)
    assert got.sizes.tolist() == [[4, 2]] and got.mean()[1, 0] == 0.5


def test_buckets_split_the_sums():
    topk = random_topk(3, 20, 8, 30, seed=3)
    buckets = torch.arange(20, dtype=torch.int32) % 3
    got, want = topk_overlap(topk, buckets=buckets, num_buckets=3), topk_overlap_naive(topk, buckets=buckets,
                                                                                      num_buckets=3)
    assert_same(got, want)
    torch.testing.assert_close(got.ratio_sum.sum(0), topk_overlap(topk).ratio_sum[0], rtol=0, atol=1e-9)


def test_poisoned_outputs_are_all_written_and_sums_accumulate():
    topk = random_topk(6, 11, 8, 20, seed=4)
    buckets = torch.zeros(11, dtype=torch.int32)
    lower = torch.zeros(1, 6, 6, dtype=torch.float64)
    sizes = torch.full((11, 6), -7, dtype=torch.int32)
    adjacent = torch.full((11, 5), float("nan"))
    adjacent[:, ::2] = 123.0
    launch(topk, buckets, 20, lower, sizes, adjacent, programs=3)
    assert_same(finish(lower, sizes, adjacent, buckets, 1), topk_overlap_naive(topk))
    assert not torch.isnan(adjacent).any()  # every row is non-empty here, so every value is written
    first = lower.clone()
    launch(topk, buckets, 20, lower, sizes, adjacent, programs=2)
    torch.testing.assert_close(lower, 2 * first, rtol=0, atol=1e-9)


def test_strided_input_and_out_of_range_indices():
    topk = random_topk(3, 30, 8, 25, seed=5)
    view = topk[:, 5:20]  # positions a chunk of a longer capture
    assert not view.is_contiguous()
    assert_same(topk_overlap(view, num_tokens=25), topk_overlap_naive(view.contiguous(), num_tokens=25))
    assert topk_overlap(view, num_tokens=10).sizes.max() <= 8  # indices >= num_tokens count as padding
    assert_same(topk_overlap(view, num_tokens=10), topk_overlap_naive(view, num_tokens=10))


def test_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="layers, positions, k"):
        topk_overlap(torch.zeros(3, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="buckets"):
        topk_overlap(torch.zeros(2, 3, 4, dtype=torch.int32), buckets=torch.tensor([0, 1, 2]), num_buckets=2)
