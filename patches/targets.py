"""The one door into SGLang: every SGLang object the patches hook, call or read is named here, found and
checked before anything is patched (no other module imports ``sglang``; tests/test_layering.py).

We probe names and signatures instead of comparing version strings, so a newer SGLang that keeps these
seams works and one that moved them is refused with the target named. Which patch uses which target is in
``table.py``; the attributes below are checked with the worker patches' targets (``table.check_worker_targets``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import re
from dataclasses import dataclass

# The releases the suite runs against, oldest first; the ones between are served as far as the probes below find
# their seams. pyproject's sglang extra is bounded by the first and the last (tests/test_sglang_drift.py).
SUPPORTED_VERSIONS = ("0.5.10.post1", "0.5.17", "0.5.23")
SUPPORTED = (f"sglang {SUPPORTED_VERSIONS[0]} to {SUPPORTED_VERSIONS[-1]} "
             f"(tested: {', '.join(SUPPORTED_VERSIONS)})")


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

    def owner(self):
        """The object that holds this target, and the target's name in it: what a patch replaces."""
        path, _, name = self.qualname.rpartition(".")
        return (Target(self.module, path).resolve() if path else importlib.import_module(self.module)), name

    def _refusal(self, why: str) -> str:
        return refusal(f"{self.dotted} {why}")


@dataclass(frozen=True)
class OneOf:
    """The same seam under different names across SGLang releases (a renamed module, class or method): the
    first alternative that resolves is the target. Order the alternatives newest first, so a release that keeps
    an old name as a compatibility shim is patched where it really lives."""

    alternatives: tuple[Target, ...]

    def __init__(self, *alternatives: Target) -> None:
        object.__setattr__(self, "alternatives", alternatives)

    @property
    def dotted(self) -> str:
        return " or ".join(a.dotted for a in self.alternatives)

    def chosen(self) -> Target:
        """The alternative this SGLang has; refuses, naming all of them, if it has none."""
        reasons = []
        for target in self.alternatives:
            try:
                target.resolve()
            except IncompatibleSGLang as e:
                reasons.append(str(e).split(": ", 1)[1].split(". Supported", 1)[0])
                continue
            return target
        raise IncompatibleSGLang(refusal("none of " + "; ".join(reasons)))

    def resolve(self):
        return self.chosen().resolve()

    def owner(self):
        return self.chosen().owner()

    @property
    def module(self) -> str:
        return self.chosen().module

    @property
    def qualname(self) -> str:
        return self.chosen().qualname


def installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sglang")
    except PackageNotFoundError:
        return "unknown"


def refusal(what: str) -> str:
    return (f"IndexCache cannot patch this SGLang: {what}. Supported: {SUPPORTED} (installed: sglang "
            f"{installed_version()}). Refusing to start rather than serve a model without IndexCache.")


@dataclass(frozen=True)
class Attribute:
    """An attribute of SGLang objects that a patch reads: a field of ``owner`` (a dataclass, or a msgspec struct
    such as ``ServerArgs`` from 0.5.20), or an instance attribute that ``owner``'s own code (its class or a base
    class) assigns as ``self.<name>``.

    Patches read these with a default where the object may legitimately lack them at that moment, so a rename in
    SGLang would turn into silent wrong behaviour; probing them here turns it into a refusal.
    """

    owner: Target | OneOf
    name: str | tuple[str, ...]  # several: the same attribute renamed across releases, newest first

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name,) if isinstance(self.name, str) else self.name

    @property
    def dotted(self) -> str:
        return f"{self.owner.dotted}.{'|'.join(self.names)}"

    def resolve(self) -> str:
        """The name this SGLang uses; refuses if it uses none of them."""
        cls = self.owner.resolve()
        fields = _declared_fields(cls)
        for name in self.names:
            if fields is not None:
                if name in fields:
                    return name
            elif any(self._assigned_in(base, name) for base in cls.__mro__ if base.__module__.startswith("sglang")):
                return name
        raise IncompatibleSGLang(refusal(f"attribute {self.dotted} not found"))

    @staticmethod
    def _assigned_in(cls, name: str) -> bool:
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):
            return False
        # `self.name = ...`, `self.name: T = ...`, and tuple targets such as `self.a, self.name, _ = ...`
        return re.search(rf"\bself\.{re.escape(name)}\b[^=\n]*=(?!=)", source) is not None


def _declared_fields(cls) -> frozenset[str] | None:
    """The fields a record class declares, or None for a plain class (whose attributes its code assigns)."""
    if dataclasses.is_dataclass(cls):
        return frozenset(f.name for f in dataclasses.fields(cls))
    struct_fields = getattr(cls, "__struct_fields__", None)  # msgspec.Struct
    return None if struct_fields is None else frozenset(struct_fields)


INDEXER = "sglang.srt.layers.attention.dsa.dsa_indexer"  # 0.5.14 renamed nsa to dsa, keeping nsa as a shim
NSA_INDEXER = "sglang.srt.layers.attention.nsa.nsa_indexer"
DEEPSEEK = "sglang.srt.models.deepseek_v2"
SERVER_ARGS = "sglang.srt.server_args"
HTTP_SERVER = "sglang.srt.entrypoints.http_server"
SCHEDULER = "sglang.srt.managers.scheduler"
KV_MIXIN = "sglang.srt.model_executor.model_runner_kv_cache_mixin"
KV_CONFIGURATOR = "sglang.srt.mem_cache.kv_cache_configurator"
POOL_CONFIGURATOR = "sglang.srt.model_executor.pool_configurator"
MEMORY_POOL = "sglang.srt.mem_cache.memory_pool"

# -- what the patches replace (patches/table.py names them per patch)
INDEXER_CLASS = OneOf(Target(INDEXER, "Indexer"), Target(NSA_INDEXER, "Indexer"))
INDEXER_FORWARD = OneOf(Target(INDEXER, "Indexer.forward"), Target(NSA_INDEXER, "Indexer.forward"))
_FORWARD_CUDA_PARAMS = ("x", "q_lora", "positions", "forward_batch", "layer_id", "return_indices")
INDEXER_FORWARD_CUDA = OneOf(Target(INDEXER, "Indexer.forward_cuda", _FORWARD_CUDA_PARAMS),
                             Target(NSA_INDEXER, "Indexer.forward_cuda", _FORWARD_CUDA_PARAMS))
ATTENTION_CLASS = Target(DEEPSEEK, "DeepseekV2AttentionMLA")
ATTENTION_INIT = Target(DEEPSEEK, "DeepseekV2AttentionMLA.__init__", ("config", "layer_id", "is_nextn"))
MODEL_CLASS = Target(DEEPSEEK, "DeepseekV2Model")
MODEL_INIT = Target(DEEPSEEK, "DeepseekV2Model.__init__", ("config",))
MODEL_FORWARD = Target(DEEPSEEK, "DeepseekV2Model.forward", ("forward_batch",))
# Read by the verification aid only; ForwardBatch.token_to_kv_pool before 0.5.16.
FORWARD_KV_POOL = Target("sglang.srt.model_executor.forward_context", "get_token_to_kv_pool")
CAUSAL_LM_CLASS = Target(DEEPSEEK, "DeepseekV2ForCausalLM")
LOAD_WEIGHTS = Target(DEEPSEEK, "DeepseekV2ForCausalLM.load_weights", ("weights", "is_nextn"))
CAUSAL_LM_FORWARD = Target(DEEPSEEK, "DeepseekV2ForCausalLM.forward", ("input_ids", "positions", "forward_batch"))
_POOL_PARAMS = ("size", "page_size", "layer_num", "start_layer", "index_buf_size")
DSA_POOL_CLASS = OneOf(Target(MEMORY_POOL, "DSATokenToKVPool"), Target(MEMORY_POOL, "NSATokenToKVPool"))
DSA_POOL_INIT = OneOf(Target(MEMORY_POOL, "DSATokenToKVPool.__init__", _POOL_PARAMS),
                      Target(MEMORY_POOL, "NSATokenToKVPool.__init__", _POOL_PARAMS))
# Sizing moved out of the model runner in 0.5.11 (pool configurator, given the runner or, from 0.5.17, the
# KV-cache configurator), pool construction in 0.5.17 (KV-cache configurator).
CELL_SIZE = OneOf(Target(POOL_CONFIGURATOR, "DefaultPoolConfigurator._compute_cell_size", ("num_layers",)),
                  Target(KV_MIXIN, "ModelRunnerKVCacheMixin.get_cell_size_per_token", ("num_layers",)))
INIT_POOLS = OneOf(Target(KV_CONFIGURATOR, "KVCacheConfigurator._init_pools"),
                   Target(KV_MIXIN, "ModelRunnerKVCacheMixin._init_pools"))
SCHEDULER_CLASS = Target(SCHEDULER, "Scheduler")
SCHEDULER_STATE = Target(SCHEDULER, "Scheduler.get_internal_state", ("recv_req",))
SCHEDULER_DISPATCHER = Target(SCHEDULER, "Scheduler.init_request_dispatcher")
SCHEDULER_INPUTS = Target(SCHEDULER, "Scheduler.process_input_requests", ("recv_reqs",))
SERVER_ARGS_CLASS = Target(SERVER_ARGS, "ServerArgs")
# 0.5.20+: construction only records the input and resolve_once() resolves; before, __post_init__ resolved
SERVER_ARGS_RESOLUTION = OneOf(Target(SERVER_ARGS, "ServerArgs.resolve_once"),
                               Target(SERVER_ARGS, "ServerArgs.__post_init__"))
HTTP_APP = Target(HTTP_SERVER, "app")

# -- what the patches call or read
PP_INDICES = Target("sglang.srt.distributed.utils", "get_pp_indices", ("num_hidden_layers", "pp_rank", "pp_size"))
PP_GROUP = Target("sglang.srt.distributed.parallel_state", "get_pp_group")  # 0.5.23 no longer re-exports it
# the process's ServerArgs: get_global_server_args() is a shim from 0.5.17 and only raises from 0.5.20
GLOBAL_SERVER_ARGS = OneOf(Target("sglang.srt.runtime_context", "get_server_args"),
                           Target(SERVER_ARGS, "get_global_server_args"))
SCHEDULER_IDLE = Target(SCHEDULER, "Scheduler.is_fully_idle")
SCHEDULER_FLUSH = Target(SCHEDULER, "Scheduler.flush_cache")
TYPE_DISPATCHER = Target("sglang.utils", "TypeBasedDispatcher")
BASE_REQ = Target("sglang.srt.managers.io_struct", "BaseReq")
AUTH_LEVEL = Target("sglang.srt.utils.auth", "auth_level", ("level",))
AUTH_LEVELS = Target("sglang.srt.utils.auth", "AuthLevel")
GET_CONFIG = Target("sglang.srt.utils.hf_transformers_utils", "get_config", ("model", "trust_remote_code", "revision"))
ATTENTION_TP_RANK = OneOf(Target("sglang.srt.runtime_context", "get_parallel"),  # .attn_tp_rank, 0.5.17
                          Target("sglang.srt.layers.dp_attention", "get_attention_tp_rank"))

# -- attributes the patches read with a default
MODEL_RUNNER = Target("sglang.srt.model_executor.model_runner", "ModelRunner")
TOKENIZER_MANAGER = Target("sglang.srt.managers.tokenizer_manager", "TokenizerManager")
USES_DSA = Attribute(ATTENTION_CLASS, ("use_dsa", "use_nsa"))  # renamed in 0.5.14
GRAPH_RUNNERS = Attribute(MODEL_RUNNER, ("decode_cuda_graph_runner", "graph_runner"))  # + prefill_..., 0.5.14
TOKENIZER_SENDER = Attribute(SCHEDULER_CLASS, ("ipc_channels", "send_to_tokenizer"))  # .send_to_tokenizer, 0.5.14
ATTRIBUTES = (
    USES_DSA,
    Attribute(ATTENTION_CLASS, "indexer"),
    Attribute(ATTENTION_CLASS, "skip_topk"),
    Attribute(ATTENTION_CLASS, "next_skip_topk"),
    Attribute(MODEL_CLASS, "layers"),
    Attribute(MODEL_CLASS, "start_layer"),
    Attribute(MODEL_CLASS, "end_layer"),
    Attribute(MODEL_RUNNER, "is_draft_worker"),
    Attribute(MODEL_RUNNER, "server_args"),
    Attribute(MODEL_RUNNER, "model_config"),
    Attribute(MODEL_RUNNER, "use_mla_backend"),
    Attribute(MODEL_RUNNER, "enable_hisparse"),
    GRAPH_RUNNERS,
    TOKENIZER_SENDER,
    Attribute(MODEL_RUNNER, ("layer_info", "start_layer")),  # layer_info.start_layer/end_layer from 0.5.17
    Attribute(MODEL_RUNNER, ("layer_info", "end_layer")),
    Attribute(TOKENIZER_MANAGER, "is_pause"),
    *(Attribute(SERVER_ARGS_CLASS, name) for name in (
        "json_model_override_args", "model_path", "trust_remote_code", "revision", "load_format",
        "enable_hierarchical_cache", "disaggregation_mode", "enable_two_batch_overlap", "enable_metrics",
        "disable_cuda_graph", "pp_size", "tokenizer_worker_num", "dp_size")),
)
