"""``DeepseekV2Model``: prove at construction that every local DSA layer got its role (``model_checks``), and
clear stale indices at the start of each forward (``model_forward_reset``).

A user who asked for IndexCache must never get a model that silently runs without it: if any local layer
was built without a role (the attention hook did not run), construction fails.
"""

from __future__ import annotations

import json
import logging
import os

import torch

from sglang_indexcache.names import ENV_DEBUG_FILE

from ..arguments import Argument
from ..process_map import plan_for
from ..registry import PatchRegistry
from ..state import COUNTERS, STATE, set_active
from ..targets import FORWARD_KV_POOL, GLOBAL_SERVER_ARGS, INDEXER_CLASS, MODEL_CLASS, MODEL_FORWARD, USES_DSA
from .indexer_forward import ROLE, SLOT
from .scheduler_status import Metrics

logger = logging.getLogger("sglang_indexcache")


def _rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def apply_model_checks(registry: PatchRegistry) -> None:
    cls, indexer_cls = MODEL_CLASS.resolve(), INDEXER_CLASS.resolve()

    def make_init(original):
        def __init__(self, config, *args, **kwargs):
            original(self, config, *args, **kwargs)
            process_map = plan_for(config)
            if process_map is None:
                return
            # Found by type, not through the attributes the roles were set by: a renamed attribute in SGLang
            # leaves layers without a role, and this notices.
            unmanaged = sorted({_layer_of(name) for name, module in self.named_modules()
                                if isinstance(module, indexer_cls) and module.__dict__.get(ROLE) is None}, key=str)
            if unmanaged:
                raise RuntimeError(f"IndexCache was requested but layers {unmanaged} were built without it; "
                                   "refusing to serve a model that is not what was asked for")
            if getattr(config, "index_topk", None) is not None and not any(
                    isinstance(module, indexer_cls) for module in self.modules()) and self.end_layer > self.start_layer:
                raise RuntimeError("IndexCache was requested for a DSA model (index_topk set) but this SGLang built "
                                   "no DSA indexer in it; refusing to serve a model that is not what was asked for")
            rank = _rank()
            logger.info(process_map.startup_line(f"pid {os.getpid()}, rank {rank}"))
            set_active(process_map, rank)
            if getattr(GLOBAL_SERVER_ARGS.resolve()(), "enable_metrics", False):
                STATE.metrics = _metrics(rank)

        return __init__

    registry.wrap(cls, "__init__", make_init, patch="model_checks")


def _metrics(rank: int):
    """The Prometheus exporter; an optional feature, so one that cannot start is a warning, not a refusal."""
    try:
        return Metrics(rank).start()
    except Exception as e:  # noqa: BLE001 - prometheus_client absent or its registry refusing our names
        logger.warning("IndexCache: metrics is unavailable here: %s: %s; serving the map without them",
                       type(e).__name__, e)
        return None


def apply_model_forward_reset(registry: PatchRegistry) -> None:
    batch_arg = Argument(MODEL_FORWARD.resolve(), "forward_batch", MODEL_FORWARD.dotted)
    debug_file = os.environ.get(ENV_DEBUG_FILE)
    dsa_flag = USES_DSA.resolve() if debug_file else None

    def make_forward(original):
        def forward(self, *args, **kwargs):
            forward_batch = batch_arg.get(args, kwargs)
            # A ForwardBatch can be run more than once (CUDA-graph capture): start each forward empty.
            if getattr(forward_batch, SLOT, None) is not None:
                setattr(forward_batch, SLOT, None)
            out = original(self, *args, **kwargs)
            COUNTERS.record_forward()
            if debug_file and not torch.cuda.is_current_stream_capturing():
                _dump_debug(debug_file, self, forward_batch, dsa_flag)
            return out

        return forward

    registry.wrap(MODEL_CLASS.resolve(), "forward", make_forward, patch="model_forward_reset")


def _layer_of(module_name: str) -> int | str:
    parts = module_name.split(".")
    return int(parts[1]) if len(parts) > 1 and parts[0] == "layers" and parts[1].isdigit() else module_name


def _dump_debug(path: str, model, forward_batch, dsa_flag: str) -> None:
    """Verification aid (synchronises the GPU): counters, and which layers' index-key cache holds any data."""
    pool = getattr(forward_batch, "token_to_kv_pool", None)
    if pool is None:  # 0.5.16+: the forward context holds the pool
        pool = FORWARD_KV_POOL.resolve()()
    written = {}
    for i in range(model.start_layer, model.end_layer):
        if getattr(model.layers[i].self_attn, dsa_flag, False):
            written[i] = bool(pool.get_index_k_with_scale_buffer(i).any().item())
    state = {**COUNTERS.snapshot(), "index_k_written": written, "pid": os.getpid()}
    with open(f"{path}.{os.getpid()}", "w") as f:
        json.dump(state, f)
