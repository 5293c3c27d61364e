"""Where SGLang keeps what the worker patches read, release by release: one adapter per moved seam.

Each adapter asks ``targets`` which name this SGLang has (an ``Attribute`` with alternatives, a ``OneOf``)
and reads it; no patch tests a version string.
"""

from __future__ import annotations

from ..targets import ATTENTION_TP_RANK, GRAPH_RUNNERS, SERVER_ARGS_RESOLUTION, TOKENIZER_SENDER, IncompatibleSGLang


def graph_runners(runner) -> list:
    """The CUDA-graph runners a model runner captured: one before 0.5.14, decode and prefill after.

    From 0.5.17 a phase whose graphs are off holds the model runner's ``eager_runner`` in its slot, so that
    one is not a captured graph."""
    names = ("decode_cuda_graph_runner", "prefill_cuda_graph_runner") \
        if GRAPH_RUNNERS.resolve() == "decode_cuda_graph_runner" else ("graph_runner",)
    eager = getattr(runner, "eager_runner", None)
    return [r for r in (getattr(runner, name, None) for name in names) if r is not None and r is not eager]


def tokenizer_sender():
    """How a scheduler reaches the tokenizer manager: ``send_to_tokenizer``, inside ``ipc_channels`` from 0.5.14.
    Resolved once, where a patch is applied."""
    if TOKENIZER_SENDER.resolve() == "ipc_channels":
        return lambda scheduler: scheduler.ipc_channels.send_to_tokenizer
    return lambda scheduler: scheduler.send_to_tokenizer


def layer_range(owner) -> tuple[int, int]:
    """The layers a model runner (or, from 0.5.17, its KV-cache configurator) holds; 0.5.17 moved them into
    ``layer_info``."""
    info = getattr(owner, "layer_info", None)
    where = owner if info is None else info
    return where.start_layer, where.end_layer


def hisparse(owner) -> bool:
    """HiSparse was a model-runner attribute; the KV-cache configurator (0.5.17) reads it from the server args."""
    if hasattr(owner, "enable_hisparse"):
        return bool(owner.enable_hisparse)
    return bool(getattr(owner.server_args, "enable_hisparse", False))


def attention_tp_rank() -> int:
    chosen = ATTENTION_TP_RANK.chosen()
    value = chosen.resolve()()
    return value.attn_tp_rank if chosen.qualname == "get_parallel" else value  # 0.5.17: a ParallelContext


def sglang_sizes_shared_layers() -> bool:
    """Where the main process hands the map to SGLang as ``indexer_types`` before the model is built (0.5.20+,
    ``server_args.hand_over``), SGLang itself allocates no index-key cache for Shared layers and sizes its pool
    for the Full ones (0.5.18+), so ``index_k_memory`` stays out (its pool seam is a read-only property there)."""
    try:
        return SERVER_ARGS_RESOLUTION.chosen().qualname == "ServerArgs.resolve_once"
    except IncompatibleSGLang:
        return False
