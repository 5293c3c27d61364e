"""Feature detection: every SGLang object we hook, found and checked before anything is patched.

We probe names and signatures instead of comparing version strings, so a newer SGLang that keeps these
seams works and one that moved them is refused with the target named.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass

SUPPORTED = "sglang 0.5.10.post1"


class IncompatibleSGLang(RuntimeError):
    pass


@dataclass(frozen=True)
class Target:
    module: str
    qualname: str
    params: tuple[str, ...] = ()  # parameters the callable must accept

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.qualname}"

    def resolve(self):
        try:
            obj = importlib.import_module(self.module)
            for part in self.qualname.split("."):
                obj = getattr(obj, part)
        except (ImportError, AttributeError) as e:
            raise IncompatibleSGLang(self._refusal(f"not found ({e})")) from None
        if self.params:
            try:
                have = inspect.signature(obj).parameters
            except (TypeError, ValueError) as e:
                raise IncompatibleSGLang(self._refusal(f"has no inspectable signature ({e})")) from None
            missing = [p for p in self.params if p not in have]
            if missing:
                raise IncompatibleSGLang(self._refusal(f"lacks parameter(s) {', '.join(missing)}"))
        return obj

    def _refusal(self, why: str) -> str:
        return (f"IndexCache cannot patch this SGLang: {self.dotted} {why}. Supported: {SUPPORTED}. "
                "Refusing to start rather than serve a model without IndexCache.")


INDEXER = "sglang.srt.layers.attention.nsa.nsa_indexer"
DEEPSEEK = "sglang.srt.models.deepseek_v2"

INDEXER_FORWARD_CUDA = Target(INDEXER, "Indexer.forward_cuda",
                              ("x", "q_lora", "positions", "forward_batch", "layer_id", "return_indices"))
INDEXER_CLASS = Target(INDEXER, "Indexer")
INDEXER_FORWARD = Target(INDEXER, "Indexer.forward")
ATTENTION_CLASS = Target(DEEPSEEK, "DeepseekV2AttentionMLA")
ATTENTION_INIT = Target(DEEPSEEK, "DeepseekV2AttentionMLA.__init__", ("config", "layer_id", "is_nextn"))
MODEL_CLASS = Target(DEEPSEEK, "DeepseekV2Model")
MODEL_INIT = Target(DEEPSEEK, "DeepseekV2Model.__init__", ("config",))
MODEL_FORWARD = Target(DEEPSEEK, "DeepseekV2Model.forward", ("forward_batch",))
SERVER_ARGS_CLASS = Target("sglang.srt.server_args", "ServerArgs")
PP_INDICES = Target("sglang.srt.distributed.utils", "get_pp_indices", ("num_hidden_layers", "pp_rank", "pp_size"))
PP_GROUP = Target("sglang.srt.distributed", "get_pp_group")
GLOBAL_SERVER_ARGS = Target("sglang.srt.server_args", "get_global_server_args")

MODEL_TARGETS = (INDEXER_CLASS, INDEXER_FORWARD_CUDA, INDEXER_FORWARD, ATTENTION_CLASS, ATTENTION_INIT, MODEL_CLASS,
                 MODEL_INIT, MODEL_FORWARD, PP_INDICES, PP_GROUP, GLOBAL_SERVER_ARGS)

KV_MIXIN = "sglang.srt.model_executor.model_runner_kv_cache_mixin"
NSA_POOL_CLASS = Target("sglang.srt.mem_cache.memory_pool", "NSATokenToKVPool")
NSA_POOL_INIT = Target("sglang.srt.mem_cache.memory_pool", "NSATokenToKVPool.__init__",
                       ("size", "page_size", "layer_num", "start_layer", "index_buf_size"))
KV_MIXIN_CLASS = Target(KV_MIXIN, "ModelRunnerKVCacheMixin")
CELL_SIZE = Target(KV_MIXIN, "ModelRunnerKVCacheMixin.get_cell_size_per_token", ("num_layers",))
INIT_POOLS = Target(KV_MIXIN, "ModelRunnerKVCacheMixin._init_pools")

MEMORY_TARGETS = (NSA_POOL_CLASS, NSA_POOL_INIT, KV_MIXIN_CLASS, CELL_SIZE, INIT_POOLS)


SCHEDULER_STATE = Target("sglang.srt.managers.scheduler", "Scheduler.get_internal_state", ("recv_req",))
SCHEDULER_CLASS = Target("sglang.srt.managers.scheduler", "Scheduler")
SCHEDULER_DISPATCHER = Target("sglang.srt.managers.scheduler", "Scheduler.init_request_dispatcher")
SCHEDULER_INPUTS = Target("sglang.srt.managers.scheduler", "Scheduler.process_input_requests", ("recv_reqs",))
SCHEDULER_IDLE = Target("sglang.srt.managers.scheduler", "Scheduler.is_fully_idle")
SCHEDULER_FLUSH = Target("sglang.srt.managers.scheduler", "Scheduler.flush_cache")
TYPE_DISPATCHER = Target("sglang.utils", "TypeBasedDispatcher")
BASE_REQ = Target("sglang.srt.managers.io_struct", "BaseReq")
HTTP_SERVER = "sglang.srt.entrypoints.http_server"
HTTP_APP = Target(HTTP_SERVER, "app")
AUTH_LEVEL = Target("sglang.srt.utils.auth", "auth_level", ("level",))

CAUSAL_LM_CLASS = Target(DEEPSEEK, "DeepseekV2ForCausalLM")
LOAD_WEIGHTS = Target(DEEPSEEK, "DeepseekV2ForCausalLM.load_weights", ("weights", "is_nextn"))

# Everything the workers patch: checked in the main process before launch and again in each worker.
SWITCH_TARGETS = (SCHEDULER_DISPATCHER, SCHEDULER_INPUTS, SCHEDULER_IDLE, SCHEDULER_FLUSH, TYPE_DISPATCHER, BASE_REQ)
ALL_TARGETS = MODEL_TARGETS + MEMORY_TARGETS + SWITCH_TARGETS + (SCHEDULER_CLASS, SCHEDULER_STATE, CAUSAL_LM_CLASS,
                                                                 LOAD_WEIGHTS)


def check_model_targets() -> None:
    for target in ALL_TARGETS:
        target.resolve()
