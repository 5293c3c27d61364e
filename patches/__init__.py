"""Adapters that hook IndexCache into SGLang; everything SGLang-specific lives here and nowhere else.

Layout, by the process a patch runs in: ``main/`` patches the server's main process (server arguments, the
HTTP routes and their admin key check), ``worker/`` every scheduler process (the model, its memory, the
scheduler). Shared by both: ``table.py`` (every patch, declared), ``registry.py`` (what is replaced, for
``revert()``), ``targets.py`` (the one door into SGLang), ``state.py`` (this process's state), ``process_map.py``
(the map this process runs), ``switch_messages.py`` (what the HTTP server and the schedulers send each other),
``autoload.py`` / ``post_import.py`` (arming in every process without importing anything at start-up).

Patch manifest (``table.py`` holds the same rows with the upstream status and when each can go; every patch
is applied through ``PatchRegistry`` so ``revert()`` restores the exact original objects):

| patch | process | target | why |
|---|---|---|---|
| ``indexer_forward`` | worker | ``dsa_indexer.Indexer.forward`` or ``nsa_indexer.Indexer.forward`` (before 0.5.14) | Full layers run the indexer and publish its top-k on the ForwardBatch; Shared layers run no indexer work at all (no projections, no index-K writes, no top-k) |
| ``attention_roles`` | worker | ``deepseek_v2.DeepseekV2AttentionMLA.__init__`` | give each layer's indexer its Full/Shared role from the map; switch SGLang's native ``skip_topk`` sharing off so there is one implementation; NextN/MTP layers keep their own indexer |
| ``model_checks`` | worker | ``deepseek_v2.DeepseekV2Model.__init__`` | refuse to build a model whose local DSA layers did not all get a role; log the active map once per process |
| ``model_forward_reset`` | worker | ``deepseek_v2.DeepseekV2Model.forward`` | clear the ForwardBatch's indices on entry, so a re-run batch (CUDA-graph capture) never reads the last run's |
| ``index_k_memory`` | worker | ``memory_pool.DSATokenToKVPool.__init__`` (``memory_pool.NSATokenToKVPool.__init__`` before 0.5.14), ``pool_configurator.DefaultPoolConfigurator._compute_cell_size`` (``model_runner_kv_cache_mixin.ModelRunnerKVCacheMixin.get_cell_size_per_token`` before 0.5.11), ``kv_cache_configurator.KVCacheConfigurator._init_pools`` (``model_runner_kv_cache_mixin.ModelRunnerKVCacheMixin._init_pools`` before 0.5.17) | Shared layers get no index-key cache (132 B/token/layer) and the token budget counts only Full layers, so ``max_total_num_tokens`` grows; draft (NextN) pools and HiSparse pools keep every buffer |
| ``shared_indexer_weights`` | worker | ``deepseek_v2.DeepseekV2ForCausalLM.load_weights`` | Shared layers' indexer projections and ``k_norm`` are removed after construction (in ``attention_roles``) and their checkpoint tensors dropped before loading, so checkpoints without them (GLM-5.2) load and the memory goes to KV |
| ``scheduler_status`` | worker | ``scheduler.Scheduler.get_internal_state`` | report the active map and per-layer indexer counters in SGLang's internal state (``/server_info``) |
| ``map_switch`` | worker | ``scheduler.Scheduler.init_request_dispatcher``, ``scheduler.Scheduler.process_input_requests`` | schedulers take a ``SwitchMapReq``, answer ready once fully idle, and on the commit flush the radix cache and KV pool and give every indexer its role under the new map (between forwards, so no forward mixes two maps); a cancel drops an uncommitted switch |
| ``topk_capture`` | worker | ``dsa_indexer.Indexer.forward_cuda`` or ``nsa_indexer.Indexer.forward_cuda``, ``deepseek_v2.DeepseekV2ForCausalLM.forward`` | capture mode, only with ``SGLANG_INDEXCACHE_CAPTURE_DIR`` set (otherwise nothing is wrapped): the top-k of requests flagged by their ``rid`` is copied per layer and written after the forward, bounded in size, for ``sglang-indexcache analyze --url`` |
| ``server_args`` | main | ``server_args.ServerArgs.resolve_once`` (0.5.20+), ``server_args.ServerArgs.__post_init__`` (before) | resolve and validate the requested map against the model config before any weights load, and hand it to the spawned workers |
| ``admin_endpoint`` | main | ``http_server.app`` | ``GET /indexcache``: that state per data-parallel rank; an admin endpoint (needs ``--admin-api-key``, checked by the endpoint itself in every HTTP mode: ``main/admin_auth.py``) |
| ``map_switch_endpoint`` | main | ``http_server.app`` | ``POST /indexcache/map`` (admin, key checked by the endpoint): validate against the model and the start-up map off the event loop, drain through the tokenizer manager's ``model_update_lock``, commit once every rank is ready, all within ``SGLANG_INDEXCACHE_SWITCH_TIMEOUT`` |

Upstream status: SGLang 0.5.10.post1 carries indices between layers natively (``index_topk_freq``/
``index_topk_pattern``) but drops them in two-batch overlap, falls back to a Shared layer's own indexer at
pipeline-stage starts, and knows neither ``index_skip_topk_offset`` nor ``indexer_types``. It has no top-k
capturer; 0.5.12.post1 and later return the indexer's top-k natively (``--enable-return-indexer-topk``), which
``topk_capture`` should build on once that SGLang is supported.
"""

from __future__ import annotations

import logging

from .registry import PatchRegistry
from .state import reset
from .table import WORKER, check_worker_targets, missing_target, rows

logger = logging.getLogger("sglang_indexcache")

REGISTRY = PatchRegistry()


def apply(process: str | None = None, when: str | None = None) -> None:
    """Apply the table's patches of ``process`` triggered by the import of ``when`` (None: all); idempotent.

    Core worker patches are all or nothing about SGLang: every target they use is probed first, and a missing
    one raises ``IncompatibleSGLang`` before anything is replaced. An optional patch whose own targets this
    SGLang lacks is skipped; its feature is then off (``table.unavailable``), and an endpoint of that feature
    whose own targets are present is still added, to answer why.
    """
    todo = [patch for patch in rows(process, when) if patch.enabled() and not REGISTRY.has(patch.name)]
    if any(patch.process == WORKER and patch.core for patch in todo):
        check_worker_targets()
    for patch in todo:
        if not patch.core:
            missing = missing_target(patch)  # its own targets only: a scheduler must not import the HTTP server
            if missing:
                logger.info("IndexCache: %s not applied: %s", patch.name, missing)
                continue
        for target in patch.targets:
            target.resolve()
        patch.function()(REGISTRY)


def apply_model_patches() -> None:
    """The worker patches (the model, its memory, the scheduler); idempotent."""
    apply(WORKER)


def revert() -> None:
    """Undo every patch and forget this process's state."""
    REGISTRY.revert()
    reset()
