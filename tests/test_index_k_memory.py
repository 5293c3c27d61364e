"""Shared layers get no index-key cache and the KV token budget counts only Full layers (real SGLang pool).

The sizing and the pool set-up are called where the installed SGLang has them (``targets.CELL_SIZE`` /
``INIT_POOLS``): on the model runner up to 0.5.10.post1, on the pool and KV-cache configurators after; the stand-in
runner carries the fields of whichever object that SGLang hands them.
"""

import inspect
from types import SimpleNamespace

import pytest
import sglang_cpu
import torch

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_indexcache.names import ENV_PATTERN  # noqa: E402
from sglang_indexcache.patches import apply_model_patches, revert  # noqa: E402
from sglang_indexcache.patches import targets as t  # noqa: E402
from sglang_indexcache.patches.process_map import plan_for  # noqa: E402
from sglang_indexcache.patches.worker.eras import sglang_sizes_shared_layers  # noqa: E402

pytestmark = [
    pytest.mark.sglang,
    # There SGLang is handed the map as indexer_types and sizes Shared layers itself (test_server_args.py checks
    # the schedule it derives); the patch is neither applied nor probed (test_native_row_is_neither_applied_nor_probed).
    pytest.mark.skipif(sglang_sizes_shared_layers(), reason="SGLang sizes Shared layers' index-key cache itself"),
]
PATTERN = "FFSSSFSS"
POOL_ARGS = dict(size=1000, page_size=64, kv_lora_rank=512, dtype=torch.bfloat16, qk_rope_head_dim=64, layer_num=8,
                 device="cpu", index_head_dim=128, enable_memory_saver=False, kv_cache_dim=576, start_layer=0,
                 end_layer=8)


@pytest.fixture
def runner(monkeypatch):
    """A stand-in ModelRunner with what the pool set-up reads, and the real pool built by `_init_pools`."""
    pool_cls = t.DSA_POOL_CLASS.resolve()

    def build_pool(self, *args, **kwargs):  # stands in for SGLang's _init_pools, which the patch wraps
        self.token_to_kv_pool = pool_cls(**POOL_ARGS)

    server_args = sglang_cpu.sglang_dist_env()
    monkeypatch.setattr(*t.INIT_POOLS.owner(), build_pool)
    monkeypatch.setenv(ENV_PATTERN, PATTERN)
    model_config = sglang_cpu._model_config(sglang_cpu.tiny_dsa_config(), None, is_draft_model=False)
    fake = SimpleNamespace(model_config=model_config, kv_cache_dtype=torch.bfloat16, use_mla_backend=True,
                           is_draft_worker=False, server_args=server_args)
    if t.Attribute(t.MODEL_RUNNER, ("layer_info", "start_layer")).resolve() == "layer_info":
        fake.layer_info = SimpleNamespace(start_layer=0, end_layer=8, num_effective_layers=8)
    else:
        fake.start_layer, fake.end_layer = 0, 8
    if t.INIT_POOLS.chosen() is t.INIT_POOLS.alternatives[-1]:  # the model runner builds the pools
        fake.enable_hisparse = False
    yield fake
    revert()


class Overridden:
    """Server args with some values changed (resolved ServerArgs are read-only from 0.5.17)."""

    def __init__(self, base, **values):
        self.__dict__.update(values, _base=base)

    def __getattr__(self, name):
        return getattr(self._base, name)


def cell_size(runner):
    owner, name = t.CELL_SIZE.owner()
    sizing = getattr(owner, name)
    if list(inspect.signature(sizing).parameters)[1] == "num_layers":  # a method of the model runner
        return sizing(runner, 8)
    return sizing(owner.__new__(owner), runner, 8)  # a pool configurator's, given the runner or its stand-in


def init_pools(runner):
    owner, name = t.INIT_POOLS.owner()
    getattr(owner, name)(runner)
    return runner.token_to_kv_pool


def test_token_budget_counts_only_full_layers(runner):
    before = cell_size(runner)
    apply_model_patches()
    after = cell_size(runner)
    assert before - after == PATTERN.count("S") * 132  # 128 fp8 key bytes + one fp32 scale per token and layer
    runner.is_draft_worker = True
    assert cell_size(runner) == before


def test_shared_layers_get_no_index_buffer(runner):
    stock = init_pools(runner)
    apply_model_patches()
    assert plan_for(runner.model_config.hf_config).effective.pattern == PATTERN
    pool = init_pools(runner)
    full = [l for l, c in enumerate(PATTERN) if c == "F"]
    shared = [l for l, c in enumerate(PATTERN) if c == "S"]
    for l in full:
        assert pool.get_index_k_with_scale_buffer(l).shape == stock.get_index_k_with_scale_buffer(l).shape
    one_page = pool.get_index_k_with_scale_buffer(shared[0])
    assert one_page.shape[0] == 1 and all(pool.get_index_k_with_scale_buffer(l) is one_page for l in shared)
    saved = stock.get_kv_size_bytes() - pool.get_kv_size_bytes()
    full_buffer = stock.get_index_k_with_scale_buffer(0).nbytes
    assert saved == len(shared) * full_buffer - len(shared) * one_page.nbytes
    # The MLA part of the pool is untouched.
    assert [b.shape for b in pool.kv_buffer] == [b.shape for b in stock.kv_buffer]
    # The size SGLang reports counts the buffers the pool really holds (the shared page once).
    held = sum(b.nbytes for b in pool.kv_buffer) + len(full) * full_buffer + one_page.nbytes
    assert pool.mem_usage * (1 << 30) == pytest.approx(held)
    assert stock.mem_usage * (1 << 30) == pytest.approx(stock.get_kv_size_bytes())


def test_draft_worker_keeps_every_buffer(runner):
    apply_model_patches()
    runner.is_draft_worker = True
    pool = init_pools(runner)
    assert len({b.data_ptr() for b in pool.index_k_with_scale_buffer}) == 8
    assert all(b.shape[0] > 1 for b in pool.index_k_with_scale_buffer)


def test_no_map_no_change(runner, monkeypatch):
    monkeypatch.delenv(ENV_PATTERN)
    before = cell_size(runner)
    apply_model_patches()
    assert cell_size(runner) == before
    assert all(b.shape[0] > 1 for b in init_pools(runner).index_k_with_scale_buffer)


@pytest.mark.parametrize("setting", ["keep-env", "hierarchical-cache", "pd-disaggregation"])
def test_buffers_kept_where_something_copies_every_layer(runner, monkeypatch, setting):
    before = cell_size(runner)
    if setting == "keep-env":
        monkeypatch.setenv("SGLANG_INDEXCACHE_KEEP_INDEX_CACHE", "1")
    else:
        runner.server_args = Overridden(runner.server_args, enable_hierarchical_cache=setting == "hierarchical-cache",
                                        disaggregation_mode="prefill" if setting == "pd-disaggregation" else "null")
    apply_model_patches()
    assert cell_size(runner) == before
    assert all(b.shape[0] > 1 for b in init_pools(runner).index_k_with_scale_buffer)
