"""Every patch IndexCache applies to SGLang, in one table; ``patches.apply`` is the one loop that applies it.

A row says what a patch replaces (``targets``), what else of SGLang it uses (``reads``), which process needs it
and which SGLang module's import applies it (``when``), why it exists, what upstream SGLang does about it and
when it can go. The docstring manifest of ``patches/__init__.py`` lists the same rows (tests/test_patch_table.py).

``core`` patches are what serving a map means: without one, the model would run something other than what was
asked, so a missing target of any of them refuses the launch. The others each belong to a ``feature`` (status,
runtime switching, capture) that only adds a way to look at or steer a server: when one of its targets is
missing, that feature is off (one warning naming it and the target; its endpoint answers 501 saying why) and
the server serves the map without it.
"""

from __future__ import annotations

import importlib
import logging
import os
from dataclasses import dataclass

from sglang_indexcache.names import ENV_CAPTURE_DIR

from . import targets as t
from .state import STATE
from .targets import Attribute, IncompatibleSGLang, Target

logger = logging.getLogger("sglang_indexcache")

MAIN, WORKER = "main", "worker"  # the server's main process (HTTP server) / every scheduler process


@dataclass(frozen=True)
class Patch:
    """One patch. ``targets`` and ``reads`` hold objects with ``resolve()`` and ``dotted`` (``targets.Target``),
    so an entry can become a choice among alternative targets without the loop changing."""

    name: str  # also the name the registry records for everything this patch replaces
    process: str  # MAIN or WORKER
    when: str  # the SGLang module whose first import applies it (post-import hook)
    targets: tuple[Target, ...]  # what it replaces
    apply: str  # "module:function" under sglang_indexcache.patches, called with the registry
    why: str
    upstream: str  # what SGLang itself does about it, by version
    remove_when: str
    core: bool = True  # False: part of ``feature``, which is switched off (not refused) when a target is missing
    feature: str | None = None  # an optional patch's feature, as operators know it (FEATURES)
    reads: tuple[Target | Attribute, ...] = ()  # other SGLang names it calls or reads
    enabled_by: str | None = None  # an environment variable without which the patch is off (nothing probed)
    # "module:function": True where SGLang itself does this patch's work for the served map (then it is neither
    # applied nor probed)
    native: str | None = None

    def function(self):
        module, _, name = self.apply.partition(":")
        return getattr(importlib.import_module(f"{__package__}.{module}"), name)

    def enabled(self, environ=os.environ) -> bool:
        if self.enabled_by is not None and not environ.get(self.enabled_by):
            return False
        return not self.is_native()

    def is_native(self) -> bool:
        if self.native is None:
            return False
        module, _, name = self.native.partition(":")
        return bool(getattr(importlib.import_module(f"{__package__}.{module}"), name)())


STATUS, SWITCHING, CAPTURE = "status", "runtime switching", "capture"
FEATURES = (STATUS, SWITCHING, CAPTURE)

PATCHES: tuple[Patch, ...] = (
    Patch(
        "indexer_forward", WORKER, t.DEEPSEEK, (t.INDEXER_FORWARD,), "worker.indexer_forward:apply_indexer_forward",
        why="Full layers run the indexer and publish its top-k on the ForwardBatch; Shared layers run no indexer "
            "work at all (no projections, no index-K writes, no top-k)",
        upstream="0.5.10.post1 shares through skip_topk but drops indices in two-batch overlap and knows no "
                 "offset or indexer_types; 0.5.23 reads indexer_types, refuses two-batch overlap with sharing",
        remove_when="every supported SGLang reads all four schedule keys and keeps indices across micro-batches",
        reads=(t.INDEXER_CLASS, t.INDEXER_FORWARD_CUDA)),
    Patch(
        "attention_roles", WORKER, t.DEEPSEEK, (t.ATTENTION_INIT,), "worker.attention_roles:apply_attention_roles",
        why="give each layer's indexer its Full/Shared role from the map; switch SGLang's native skip_topk sharing "
            "off so there is one implementation; NextN/MTP layers keep their own indexer",
        upstream="native roles from the schedule keys; 0.5.14 renames use_nsa to use_dsa and has draft layers "
                 "reuse the previous draft step's top-k; 0.5.23 builds no indexer for Shared layers",
        remove_when="indexer_forward goes",
        reads=(t.ATTENTION_CLASS, t.PP_INDICES, t.PP_GROUP, t.GLOBAL_SERVER_ARGS)),
    Patch(
        "model_checks", WORKER, t.DEEPSEEK, (t.MODEL_INIT,), "worker.model_checks:apply_model_checks",
        why="refuse to build a model whose local DSA layers did not all get a role; log the active map once per "
            "process",
        upstream="no such check in any version (a renamed attribute silently leaves every role unset)",
        remove_when="attention_roles goes",
        reads=(t.MODEL_CLASS, t.INDEXER_CLASS, t.GLOBAL_SERVER_ARGS)),
    Patch(
        "model_forward_reset", WORKER, t.DEEPSEEK, (t.MODEL_FORWARD,), "worker.model_checks:apply_model_forward_reset",
        why="clear the ForwardBatch's indices on entry, so a re-run batch (CUDA-graph capture) never reads the "
            "last run's",
        upstream="native sharing keeps indices in locals of one forward",
        remove_when="indexer_forward goes"),
    Patch(
        "index_k_memory", WORKER, t.DEEPSEEK, (t.DSA_POOL_INIT, t.CELL_SIZE, t.INIT_POOLS),
        "worker.index_k_memory:apply_index_k_memory",
        why="Shared layers get no index-key cache (132 B/token/layer) and the token budget counts only Full "
            "layers, so max_total_num_tokens grows; draft (NextN) pools and HiSparse pools keep every buffer",
        upstream="native since 0.5.18 (skip_topk_layers); 0.5.16 moved the pool set-up to KVCacheConfigurator",
        remove_when="every supported SGLang is 0.5.18 or later",
        reads=(t.DSA_POOL_CLASS, t.Attribute(t.DSA_POOL_CLASS, "custom_mem_pool"),
               t.Attribute(t.DSA_POOL_CLASS, "index_k_with_scale_buffer")),
        native="worker.eras:sglang_sizes_shared_layers"),
    Patch(
        "shared_indexer_weights", WORKER, t.DEEPSEEK, (t.LOAD_WEIGHTS,),
        "worker.shared_indexer_weights:apply_shared_indexer_weights",
        why="Shared layers' indexer projections and k_norm are removed after construction (in attention_roles) and "
            "their checkpoint tensors dropped before loading, so checkpoints without them (GLM-5.2) load and the "
            "memory goes to KV",
        upstream="0.5.23 builds no indexer for Shared layers and its loader skips absent indexer tensors",
        remove_when="every supported SGLang is 0.5.23 or later",
        reads=(t.CAUSAL_LM_CLASS,)),
    Patch(
        "scheduler_status", WORKER, t.DEEPSEEK, (t.SCHEDULER_STATE,), "worker.scheduler_status:apply_scheduler_status",
        why="report the active map and per-layer indexer counters in SGLang's internal state (/server_info)",
        upstream="no version reports the schedule or indexer counters",
        remove_when="SGLang reports them itself", core=False, feature=STATUS,
        reads=(t.SCHEDULER_CLASS,)),
    Patch(
        "map_switch", WORKER, t.DEEPSEEK, (t.SCHEDULER_DISPATCHER, t.SCHEDULER_INPUTS),
        "worker.map_switch:apply_map_switch",
        why="schedulers take a SwitchMapReq, answer ready once fully idle, and on the commit flush the radix cache "
            "and KV pool and give every indexer its role under the new map (between forwards, so no forward mixes "
            "two maps); a cancel drops an uncommitted switch",
        upstream="no version switches the schedule at runtime",
        remove_when="SGLang switches schedules itself", core=False, feature=SWITCHING,
        reads=(t.SCHEDULER_CLASS, t.SCHEDULER_IDLE, t.SCHEDULER_FLUSH, t.TYPE_DISPATCHER, t.BASE_REQ)),
    Patch(
        "topk_capture", WORKER, t.DEEPSEEK, (t.INDEXER_FORWARD_CUDA, t.CAUSAL_LM_FORWARD),
        "worker.topk_capture:apply_topk_capture",
        why="capture mode, only with SGLANG_INDEXCACHE_CAPTURE_DIR set (otherwise nothing is wrapped): the top-k of "
            "requests flagged by their rid is copied per layer and written after the forward, bounded in size, "
            "for sglang-indexcache analyze --url",
        upstream="0.5.12.post1 and later return the indexer's top-k natively (--enable-return-indexer-topk)",
        remove_when="every supported SGLang is 0.5.12.post1 or later (capture builds on the native return)",
        core=False, feature=CAPTURE, reads=(t.ATTENTION_TP_RANK,), enabled_by=ENV_CAPTURE_DIR),
    Patch(
        "server_args", MAIN, t.SERVER_ARGS, (t.SERVER_ARGS_RESOLUTION,), "main.server_args:apply_server_args",
        why="resolve and validate the requested map against the model config before any weights load, and hand it "
            "to the spawned workers",
        upstream="0.5.20 makes ServerArgs a msgspec struct whose __post_init__ does nothing (resolve_once instead) "
                 "and reads indexer_types before any other schedule key, so the map is handed over as indexer_types",
        remove_when="never: the launch-time refusal is this package's own",
        reads=(t.SERVER_ARGS_CLASS, t.GET_CONFIG)),
    Patch(
        "admin_endpoint", MAIN, t.HTTP_SERVER, (t.HTTP_APP,), "main.admin_endpoint:apply_admin_endpoint",
        why="GET /indexcache: that state per data-parallel rank; an admin endpoint (needs --admin-api-key, checked "
            "by the endpoint itself in every HTTP mode: main.admin_auth)",
        upstream="no version has it",
        remove_when="SGLang reports the schedule itself", core=False, feature=STATUS,
        reads=(t.AUTH_LEVEL, t.AUTH_LEVELS)),
    Patch(
        "map_switch_endpoint", MAIN, t.HTTP_SERVER, (t.HTTP_APP,), "main.map_switch_endpoint:apply_map_switch_endpoint",
        why="POST /indexcache/map (admin, key checked by the endpoint): validate against the model and the start-up "
            "map off the event loop, drain through the tokenizer manager's model_update_lock, commit once every "
            "rank is ready, all within SGLANG_INDEXCACHE_SWITCH_TIMEOUT",
        upstream="no version has it",
        remove_when="map_switch goes", core=False, feature=SWITCHING,
        reads=(t.AUTH_LEVEL, t.AUTH_LEVELS, t.TYPE_DISPATCHER, t.GET_CONFIG)),
)

ALL_TARGETS = tuple(dict.fromkeys(target for p in PATCHES for target in (*p.targets, *p.reads)))


def rows(process: str | None = None, when: str | None = None) -> list[Patch]:
    return [p for p in PATCHES if process in (None, p.process) and when in (None, p.when)]


def check_worker_targets(environ=os.environ) -> None:
    """Every target, call and attribute the core worker patches use: in the main process before launch and again
    in each worker. Raises ``IncompatibleSGLang`` naming the first one missing."""
    for patch in rows(WORKER):
        if patch.core and patch.enabled(environ):
            for target in (*patch.targets, *patch.reads):
                target.resolve()
    for attribute in t.ATTRIBUTES:
        attribute.resolve()


def missing_target(patch: Patch) -> str | None:
    """What of SGLang ``patch`` needs and this SGLang lacks (``"<target> not found (...)"``); None: nothing."""
    for target in (*patch.targets, *patch.reads):
        try:
            target.resolve()
        except IncompatibleSGLang as e:
            return str(e).split(": ", 1)[1].split(". Supported", 1)[0]
    return None


def unavailable(feature: str, environ=os.environ) -> str | None:
    """Why ``feature`` cannot run on this SGLang, probing the patches of every process (they share one SGLang
    install, so the HTTP server can answer for its schedulers); None when it can. Remembered per process."""
    if feature not in STATE.features:
        why = next(filter(None, (missing_target(p) for p in PATCHES if p.feature == feature and p.enabled(environ))),
                   None)
        STATE.features[feature] = why and f"{feature} is unavailable on this SGLang: {why}"
    return STATE.features[feature]


def warn_unavailable(environ=os.environ) -> None:
    """One warning per optional feature this SGLang cannot serve: in the main process, at launch."""
    for feature in FEATURES:
        why = unavailable(feature, environ)
        if why:
            logger.warning("IndexCache: %s; serving the map without it", why)


def features(environ=os.environ) -> dict[str, str]:
    """Each optional feature: ``active``, ``off`` (not asked for) or why it is unavailable (``GET /indexcache``)."""
    out = {}
    for feature in FEATURES:
        rows_of = [p for p in PATCHES if p.feature == feature]
        if not any(p.enabled(environ) for p in rows_of):
            out[feature] = "off"
        else:
            out[feature] = unavailable(feature, environ) or "active"
    return out
