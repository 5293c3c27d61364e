"""Adapters that hook IndexCache into SGLang; everything SGLang-specific lives here and nowhere else.

Patch manifest (each is one small module, applied through ``PatchRegistry`` so ``revert()`` restores the
exact original objects; targets are feature-detected in ``targets.py``):

| patch | target | why |
|---|---|---|
| ``indexer_forward`` | ``nsa_indexer.Indexer.forward`` | Full layers run the indexer and publish its top-k on the ForwardBatch; Shared layers run no indexer work at all (no projections, no index-K writes, no top-k) |
| ``attention_roles`` | ``deepseek_v2.DeepseekV2AttentionMLA.__init__`` | give each layer's indexer its Full/Shared role from the map; switch SGLang's native ``skip_topk`` sharing off so there is one implementation; NextN/MTP layers keep their own indexer |
| ``model_checks`` | ``deepseek_v2.DeepseekV2Model.__init__`` | refuse to build a model whose local DSA layers did not all get a role; log the active map once per process |
| ``model_forward_reset`` | ``deepseek_v2.DeepseekV2Model.forward`` | clear the ForwardBatch's indices on entry, so a re-run batch (CUDA-graph capture) never reads the last run's |
| ``index_k_memory`` | ``NSATokenToKVPool.__init__``, ``ModelRunnerKVCacheMixin.get_cell_size_per_token`` / ``_init_pools`` | Shared layers get no index-key cache (132 B/token/layer) and the token budget counts only Full layers, so ``max_total_num_tokens`` grows; draft (NextN) pools and HiSparse pools keep every buffer |
| ``shared_indexer_weights`` | ``DeepseekV2ForCausalLM.load_weights`` (+ in ``attention_roles``) | Shared layers' indexer projections and ``k_norm`` are removed after construction and their checkpoint tensors dropped before loading, so checkpoints without them (GLM-5.2) load and the memory goes to KV |
| ``scheduler_status`` | ``scheduler.Scheduler.get_internal_state`` | report the active map and per-layer indexer counters in SGLang's internal state (``/server_info``) |
| ``admin_endpoint`` | ``http_server.app`` routes | ``GET /indexcache``: that state per data-parallel rank; an admin endpoint (needs ``--admin-api-key``, checked by the endpoint itself in every HTTP mode: ``admin_auth``) |
| ``map_switch`` | ``scheduler.Scheduler.init_request_dispatcher`` / ``process_input_requests`` | schedulers take a ``SwitchMapReq``, answer ready once fully idle, and on the commit flush the radix cache and KV pool and give every indexer its role under the new map (between forwards, so no forward mixes two maps); a cancel drops an uncommitted switch |
| ``map_switch_endpoint`` | ``http_server.app`` routes | ``POST /indexcache/map`` (admin, key checked by the endpoint): validate against the model and the start-up map off the event loop, drain through the tokenizer manager's ``model_update_lock``, commit once every rank is ready, all within ``SGLANG_INDEXCACHE_SWITCH_TIMEOUT`` |
| ``topk_capture`` | ``nsa_indexer.Indexer.forward_cuda``, ``DeepseekV2ForCausalLM.forward`` | capture mode, only with ``SGLANG_INDEXCACHE_CAPTURE_DIR`` set (otherwise nothing is wrapped): the top-k of requests flagged by their ``rid`` is copied per layer and written after the forward, bounded in size, for ``sglang-indexcache analyze --url`` |
| ``server_args`` | ``server_args.ServerArgs.__post_init__`` | main process only: resolve and validate the requested map against the model config before any weights load, and hand it to the spawned workers |

Upstream status: SGLang 0.5.10.post1 carries indices between layers natively (``index_topk_freq``/
``index_topk_pattern``) but drops them in two-batch overlap, falls back to a Shared layer's own indexer at
pipeline-stage starts, and knows neither ``index_skip_topk_offset`` nor ``indexer_types``. It has no top-k
capturer; 0.5.12.post1 and later return the indexer's top-k natively (``--enable-return-indexer-topk``), which
``topk_capture`` should build on once that SGLang is supported.
"""

from __future__ import annotations

from .registry import PatchRegistry

REGISTRY = PatchRegistry()
_PLANS: dict[int, object] = {}


def apply_model_patches() -> None:
    """Patch the model classes; idempotent. Raises ``IncompatibleSGLang`` if a target is missing."""
    from .attention_roles import apply_attention_roles
    from .index_k_memory import apply_index_k_memory
    from .indexer_forward import apply_indexer_forward
    from .map_switch import apply_switch_scheduler
    from .model_checks import apply_model_checks
    from .shared_indexer_weights import apply_shared_indexer_weights
    from .status import apply_scheduler_status
    from .topk_capture import apply_topk_capture
    from .targets import ATTENTION_CLASS, check_model_targets

    if REGISTRY.is_applied(ATTENTION_CLASS.resolve(), "__init__"):
        return
    check_model_targets()
    apply_indexer_forward(REGISTRY)
    apply_attention_roles(REGISTRY, plan_for)
    apply_model_checks(REGISTRY, plan_for)
    apply_index_k_memory(REGISTRY, plan_for)
    apply_scheduler_status(REGISTRY)
    apply_shared_indexer_weights(REGISTRY, plan_for)
    apply_switch_scheduler(REGISTRY)
    apply_topk_capture(REGISTRY)


def revert() -> None:
    REGISTRY.revert()
    _PLANS.clear()


def plan_for(config):
    """This process's map for a model config, computed once; None when no map is requested."""
    from .process_map import plan, requested_map

    key = id(config)
    if key not in _PLANS:
        layer_map = requested_map()
        _PLANS[key] = None if layer_map is None else plan(
            layer_map, config.num_hidden_layers, _stage(config.num_hidden_layers), _tbo_start(config))
    return _PLANS[key]


def _stage(num_layers: int) -> tuple[int, int]:
    from .targets import PP_GROUP, PP_INDICES

    try:
        group = PP_GROUP.resolve()()
    except AssertionError:  # no pipeline group initialised: a single stage
        return 0, num_layers
    return tuple(PP_INDICES.resolve()(num_layers, group.rank_in_group, group.world_size))


def _tbo_start(config) -> int | None:
    from .targets import GLOBAL_SERVER_ARGS

    if not getattr(GLOBAL_SERVER_ARGS.resolve()(), "enable_two_batch_overlap", False):
        return None
    return getattr(config, "first_k_dense_replace", 0)

