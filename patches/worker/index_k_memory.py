"""Shared layers get no index-key cache, and the KV pool's token budget counts only Full layers.

A Shared layer never runs its indexer (``indexer_forward``), so nothing reads or writes its index-key
buffer (132 bytes per token per layer). Three hooks, all inside one model runner's pool set-up:

- the cell size (``ModelRunnerKVCacheMixin.get_cell_size_per_token``; from 0.5.11
  ``DefaultPoolConfigurator._compute_cell_size``): the per-token size SGLang divides free memory by leaves out
  the Shared layers' index keys, so ``max_total_num_tokens`` grows accordingly;
- the pool set-up (``ModelRunnerKVCacheMixin._init_pools``; from 0.5.17 ``KVCacheConfigurator._init_pools``):
  says which of this runner's layers are Shared (none for a draft worker: NextN/MTP layers keep their indexer)
  while the pools are built;
- the DSA pool's ``__init__`` (``NSATokenToKVPool``, ``DSATokenToKVPool`` from 0.5.14): builds the pool with
  one-page index buffers, then gives Full layers their full-size buffer and lets all Shared layers point at one
  shared page.

Both hooks on the set-up side get an object with the model runner's fields: the runner itself, or, from 0.5.17,
the KV-cache configurator built from it (``eras``).
"""

from __future__ import annotations

import contextvars
import inspect
import os
from contextlib import nullcontext

import torch

from sglang_indexcache.names import ENV_KEEP_INDEX_CACHE

from ..process_map import plan_for
from ..registry import PatchRegistry
from ..targets import CELL_SIZE, DSA_POOL_CLASS, DSA_POOL_INIT, INIT_POOLS
from .eras import hisparse, layer_range

_SHARED_LAYERS: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar(
    "indexcache_shared", default=frozenset()
)


def shared_local_layers(runner) -> frozenset[int]:
    """This runner's layers whose index-key cache is left out: empty for draft workers, without a map, and
    where another component copies every layer's index buffer (host-memory cache, PD disaggregation).
    ``runner``: the model runner or the KV-cache configurator (0.5.17)."""
    if getattr(runner, "is_draft_worker", False) or not _may_drop_buffers(runner):
        return frozenset()
    process_map = plan_for(runner.model_config.hf_config)
    if process_map is None:
        return frozenset()
    effective = process_map.effective
    return frozenset(l for l in range(*layer_range(runner)) if not effective.is_full(l))


def index_bytes_per_token(pool_cls) -> int:
    element = torch.empty((), dtype=pool_cls.index_k_with_scale_buffer_dtype).element_size()
    head_dim = 128  # the DSA pool asserts index_head_dim == 128
    return (head_dim + head_dim // pool_cls.quant_block_size * 4) * element


def apply_index_k_memory(registry: PatchRegistry) -> None:
    pool_cls = DSA_POOL_CLASS.resolve()
    pool_signature = inspect.signature(DSA_POOL_INIT.resolve())
    cell_size_signature = inspect.signature(CELL_SIZE.resolve())
    per_layer = index_bytes_per_token(pool_cls)

    def make_cell_size(original):
        def cell_size(self, *args, **kwargs):
            size = original(self, *args, **kwargs)
            runner = _sizing_runner(cell_size_signature.bind(self, *args, **kwargs))
            if _builds_plain_dsa_pool(runner):
                size -= len(shared_local_layers(runner)) * per_layer
            return size

        return cell_size

    def make_init_pools(original):
        def _init_pools(self, *args, **kwargs):
            token = _SHARED_LAYERS.set(shared_local_layers(self))
            try:
                return original(self, *args, **kwargs)
            finally:
                _SHARED_LAYERS.reset(token)

        return _init_pools

    def make_pool_init(original):
        def __init__(self, *args, **kwargs):
            shared = _SHARED_LAYERS.get()
            if not shared or type(self) is not pool_cls:  # HiSparse and other subclasses keep every buffer
                return original(self, *args, **kwargs)
            bound = pool_signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            tokens = bound.arguments["index_buf_size"]
            tokens = bound.arguments["size"] if tokens is None else tokens
            bound.arguments["index_buf_size"] = 0  # every layer gets one page; Full layers are grown below
            original(*bound.args, **bound.kwargs)
            _grow_full_layers(self, shared, tokens)

        return __init__

    registry.wrap(*CELL_SIZE.owner(), make_cell_size, patch="index_k_memory")
    registry.wrap(*INIT_POOLS.owner(), make_init_pools, patch="index_k_memory")
    registry.wrap(pool_cls, "__init__", make_pool_init, patch="index_k_memory")


def _may_drop_buffers(runner) -> bool:
    if os.environ.get(ENV_KEEP_INDEX_CACHE):
        return False
    server_args = getattr(runner, "server_args", None)
    return not (
        getattr(server_args, "enable_hierarchical_cache", False)
        or getattr(server_args, "disaggregation_mode", "null") != "null"
    )


def _sizing_runner(bound):
    """What the cell size is computed for: the model runner itself (``self``, up to 0.5.10.post1), or the runner
    or KV-cache configurator handed to the pool configurator (from 0.5.11: the argument before ``num_layers``)."""
    arguments = list(bound.arguments.values())
    return arguments[1] if len(arguments) > 2 else arguments[0]


def _builds_plain_dsa_pool(runner) -> bool:
    """The token budget shrinks only where the pool does (HiSparse pools keep every buffer)."""
    return bool(getattr(runner, "use_mla_backend", False)) and not hisparse(runner)


def _grow_full_layers(pool, shared: frozenset[int], tokens: int) -> None:
    one_page = pool.index_k_with_scale_buffer[0]
    # The DSA pool's own sizing of an index buffer holding `tokens` tokens.
    pages = (tokens + pool.page_size + 1) // pool.page_size
    custom = getattr(pool, "custom_mem_pool", None)
    with torch.cuda.use_mem_pool(custom) if custom else nullcontext():
        pool.index_k_with_scale_buffer = [
            one_page
            if pool.start_layer + i in shared
            else torch.zeros((pages, one_page.shape[1]), dtype=one_page.dtype, device=one_page.device)
            for i in range(pool.layer_num)
        ]
    # SGLang recorded (and reports in /server_info) the pool's size while every index buffer was one page.
    buffers = [*pool.kv_buffer, *{id(b): b for b in pool.index_k_with_scale_buffer}.values()]
    pool.mem_usage = sum(b.numel() * b.element_size() for b in buffers) / (1 << 30)
