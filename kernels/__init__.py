"""Triton kernels, each beside a pure-torch reference.

- ``topk_overlap``: top-k overlap between every pair of layers over all query positions
  (reference: ``naive.topk_overlap_naive``; result type ``overlap_result.PairwiseOverlap``).
"""
