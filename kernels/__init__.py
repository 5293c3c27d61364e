"""Triton kernels, each beside a pure-torch reference."""
