"""Triton kernel: top-k overlap between every pair of layers, over every query position.

Input ``[layers, positions, k]`` token indices (``-1`` pads short rows). For each position a program scatters
the layers' rows, in layer order, into its own scratch table keyed by token, whose entry is a bitmask of the
layers that picked the token (``ceil(L / 32)`` 32-bit words, so 78 layers fit). Layer ``i``'s atomic OR returns
each token's mask *before* ``i`` set its bit: the layers ``j < i`` that share the token. Summing those bits over
``T_i`` gives ``|T_i ∩ T_j|`` for the whole lower triangle in one pass over the input, and a token repeated
within a row is counted once (its second OR sees its own bit). Afterwards the program stores zeros to exactly
the entries it set, so the table is clean for its next position without clearing ``num_tokens`` entries.

Work per position is ``L * k`` scattered table accesses and ``L * k * 32 * ceil(L / 32)`` bit operations, with no
dependence on the sequence length; the reference (``naive.py``) costs ``L * num_tokens`` per position.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from .interpreter_compat import patch_scalar_index
from .overlap_result import PairwiseOverlap, check_inputs, pair_counts

patch_scalar_index()


@triton.jit
def _overlap_kernel(topk_ptr, stride_layer, stride_pos, bucket_ptr, table_ptr, sums_ptr, sizes_ptr, adjacent_ptr,
                    positions, k, num_tokens, programs, undefined,
                    L: tl.constexpr, WORDS: tl.constexpr, BLOCK: tl.constexpr):
    LANES: tl.constexpr = WORDS * 32  # one lane per (possible) layer j
    pid = tl.program_id(0)
    lanes = tl.arange(0, LANES)
    words = tl.arange(0, WORDS)
    bitpos = tl.arange(0, 32)
    offs = tl.arange(0, BLOCK)
    table = table_ptr + pid.to(tl.int64) * num_tokens * WORDS
    for start in range(0, positions, programs):
        p = start + pid
        if p < positions:
            bucket = tl.load(bucket_ptr + p)
            row_ptr = topk_ptr + p.to(tl.int64) * stride_pos
            sizes = tl.zeros([LANES], dtype=tl.int32)
            for i in range(L):
                own = i // 32
                shift = i % 32
                shared = tl.zeros([LANES], dtype=tl.int32)
                firsts = tl.zeros([BLOCK], dtype=tl.int32)
                for k0 in range(0, k, BLOCK):
                    kk = k0 + offs
                    idx = tl.load(row_ptr + i * stride_layer + kk, mask=kk < k, other=-1)
                    valid = (idx >= 0) & (idx < num_tokens)
                    slot = table + idx.to(tl.int64) * WORDS
                    before = tl.atomic_or(slot + own, tl.full([BLOCK], 1, tl.int32) << shift, mask=valid)
                    first = valid & (((before >> shift) & 1) == 0)
                    # Words of earlier layer groups are final for this position: read them from L2 (.cg), where the
                    # atomics landed, never from a stale L1 line.
                    earlier = tl.load(slot[:, None] + words[None, :], mask=valid[:, None] & (words[None, :] < own),
                                      other=0, cache_modifier=".cg")
                    masks = tl.where(words[None, :] == own, before[:, None], earlier)
                    bits = (masks[:, :, None] >> bitpos[None, None, :]) & 1
                    bits = tl.where(first[:, None, None], bits, 0)
                    shared += tl.reshape(tl.sum(bits, axis=0), [LANES])
                    firsts += first.to(tl.int32)
                size = tl.sum(firsts)
                sizes = tl.where(lanes == i, size, sizes)
                denom = tl.minimum(sizes, size)
                defined = (lanes < i) & (denom > 0)
                ratio = tl.where(defined, shared.to(tl.float64) / tl.maximum(denom, 1).to(tl.float64), 0.0)
                tl.atomic_add(sums_ptr + (bucket * L + i) * L + lanes, ratio, mask=defined)
                previous = lanes == i - 1
                adjacent = tl.where(tl.sum((previous & defined).to(tl.int32)) > 0,
                                    tl.sum(tl.where(previous, ratio, 0.0)).to(tl.float32), undefined)
                tl.store(adjacent_ptr + p.to(tl.int64) * (L - 1) + i - 1, adjacent, mask=i > 0)
                tl.store(sizes_ptr + p.to(tl.int64) * L + i, size)
                tl.debug_barrier()  # layer i's bits are in the table before layer i + 1 reads them
            for i in range(L):
                for k0 in range(0, k, BLOCK):
                    kk = k0 + offs
                    idx = tl.load(row_ptr + i * stride_layer + kk, mask=kk < k, other=-1)
                    valid = (idx >= 0) & (idx < num_tokens)
                    tl.store(table + idx.to(tl.int64) * WORDS + i // 32, tl.zeros([BLOCK], dtype=tl.int32), mask=valid)
            tl.debug_barrier()  # the table is clean before the next position


def words_for(num_layers: int) -> int:
    """32-bit mask words per token, rounded up to a power of two (Triton block shapes)."""
    return triton.next_power_of_2(max(1, -(-num_layers // 32)))


def launch(topk: torch.Tensor, buckets: torch.Tensor, num_tokens: int, ratio_lower: torch.Tensor,
           sizes: torch.Tensor, adjacent: torch.Tensor, block: int = 64, num_warps: int = 4,
           programs: int | None = None) -> None:
    """Run the kernel into caller-owned buffers.

    ``ratio_lower`` ``[buckets, L, L]`` float64 is *added to* (strictly lower triangle only), so one buffer can
    sum over many chunks of positions; ``sizes`` ``[positions, L]`` int32 and ``adjacent`` ``[positions, L - 1]``
    float32 are overwritten. Indices outside ``[0, num_tokens)`` count as padding.
    """
    layers, positions, k = topk.shape
    if positions == 0 or layers == 0:
        return
    if topk.stride(2) != 1:
        topk = topk.contiguous()
    topk = topk.to(torch.int32)
    words = words_for(layers)
    if programs is None:
        programs = _default_programs(topk.device)
    programs = max(1, min(programs, positions))
    table = torch.zeros(programs, max(num_tokens, 1), words, dtype=torch.int32, device=topk.device)
    _overlap_kernel[(programs,)](
        topk, topk.stride(0), topk.stride(1), buckets, table, ratio_lower, sizes, adjacent,
        positions, k, num_tokens, programs, float("nan"),
        L=layers, WORDS=words, BLOCK=min(block, triton.next_power_of_2(k)), num_warps=num_warps,
    )


def _default_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return 4 * torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the Triton interpreter runs programs one after another


@torch.no_grad()
def topk_overlap(topk: torch.Tensor, num_tokens: int | None = None, buckets: torch.Tensor | None = None,
                 num_buckets: int = 1, **launch_options) -> PairwiseOverlap:
    """Pairwise overlap of ``topk`` ``[layers, positions, k]`` (see :class:`PairwiseOverlap` for the definition).

    ``num_tokens``: one more than the largest index (computed when omitted; pass it to save a pass over the
    input). ``buckets``: ``[positions]`` ints in ``[0, num_buckets)`` that split the sums, e.g. by context depth.
    """
    buckets = check_inputs(topk, buckets, num_buckets)
    layers, positions, _ = topk.shape
    if num_tokens is None:
        num_tokens = int(topk.max()) + 1 if topk.numel() else 0
    lower = torch.zeros(num_buckets, layers, layers, dtype=torch.float64, device=topk.device)
    sizes = torch.empty(positions, layers, dtype=torch.int32, device=topk.device)
    adjacent = torch.empty(positions, max(layers - 1, 0), dtype=torch.float32, device=topk.device)
    launch(topk, buckets, num_tokens, lower, sizes, adjacent, **launch_options)
    return finish(lower, sizes, adjacent, buckets, num_buckets)


def finish(lower: torch.Tensor, sizes: torch.Tensor, adjacent: torch.Tensor, buckets: torch.Tensor,
           num_buckets: int) -> PairwiseOverlap:
    """The full symmetric sums from the kernel's lower triangle; a non-empty row overlaps itself fully."""
    counts = pair_counts(sizes, buckets, num_buckets)
    full = lower + lower.transpose(1, 2) + torch.diag_embed(counts.diagonal(dim1=1, dim2=2).double())
    return PairwiseOverlap(full, counts, sizes, adjacent)
