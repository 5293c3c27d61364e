"""Capture mode: every indexer's top-k of flagged requests, written to a directory the operator names.

Off unless ``SGLANG_INDEXCACHE_CAPTURE_DIR`` is set at launch: then, and only then, ``Indexer.forward_cuda``
and ``DeepseekV2ForCausalLM.forward`` are wrapped (with it unset nothing is patched, so other requests run
exactly as before). Only prefill (extend) forwards holding a request whose ``rid`` starts with
``indexcache-capture-`` are touched: each layer that runs its indexer copies that request's rows (the tensor it
returns is not changed), and after the forward the rows go to ``<dir>/<rid>/`` (file format:
:mod:`sglang_indexcache.analysis.capture_files`). Other requests in the same batch are unaffected but wait
for the copy. Bounded: at most ``SGLANG_INDEXCACHE_CAPTURE_MAX_TOKENS`` query positions per request and
``SGLANG_INDEXCACHE_CAPTURE_MAX_BYTES`` written per process; beyond them rows are dropped and the file says so.
Only attention-TP rank 0 writes (the other ranks compute the same indices).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch

from sglang_indexcache.analysis.capture_files import DEFAULT_MAX_BYTES, DEFAULT_MAX_TOKENS, is_flagged, write_chunk
from sglang_indexcache.names import ENV_CAPTURE_DIR, ENV_CAPTURE_MAX_BYTES, ENV_CAPTURE_MAX_TOKENS

from ..registry import PatchRegistry
from ..targets import CAUSAL_LM_CLASS, CAUSAL_LM_FORWARD, INDEXER_CLASS, INDEXER_FORWARD_CUDA, IncompatibleSGLang
from .eras import attention_tp_rank

logger = logging.getLogger("sglang_indexcache")
PENDING = "_indexcache_capture"  # ForwardBatch attribute: {rid: {"layers": {layer: rows}, "positions": ...}}
_ARG_ORDER = ("x", "q_lora", "positions", "forward_batch", "layer_id")


class CaptureSink:
    def __init__(self, root: Path, max_tokens: int, max_bytes: int, writer: bool | None = None) -> None:
        self.root, self.max_tokens, self.max_bytes = Path(root), max_tokens, max_bytes
        self._writer = writer  # decided at the first flagged forward, once the process groups exist
        self.taken: dict[str, int] = {}  # query positions kept per request so far
        self.written = 0
        self.warned: set[str] = set()

    def flagged(self, forward_batch) -> list[int]:
        """Batch slots of flagged requests, for prefill forwards run eagerly; empty otherwise (the common case)."""
        rids = getattr(forward_batch, "rids", None)
        if not rids or not any(is_flagged(r) for r in rids) or not self.writer:
            return []
        mode = getattr(forward_batch, "forward_mode", None)
        if mode is None or not mode.is_extend() or _graph_capturing():
            return []
        return [b for b, r in enumerate(rids) if is_flagged(r)]

    @property
    def writer(self) -> bool:
        if self._writer is None:
            self._writer = _is_writer()
        return self._writer

    def record(self, forward_batch, layer: int, topk: torch.Tensor, positions: torch.Tensor, slots: list[int]):
        lens = list(forward_batch.extend_seq_lens_cpu)
        if topk.shape[0] < sum(lens):  # rows split across ranks (scattered input, context parallel)
            self._warn_once("split", "IndexCache capture: this batch's rows are split across ranks; not captured")
            return
        pending = forward_batch.__dict__.setdefault(PENDING, {})
        starts = [sum(lens[:b]) for b in range(len(lens))]
        for b in slots:
            rid = forward_batch.rids[b]
            entry = pending.get(rid)
            if entry is None:
                room = max(0, self.max_tokens - self.taken.get(rid, 0))
                keep = min(lens[b], room)
                entry = pending[rid] = {"keep": keep, "truncated": keep < lens[b], "layers": {},
                                        "positions": positions[starts[b]:starts[b] + keep].to("cpu", copy=True)}
            # To host memory at once: a long prefill chunk's rows of every layer would not fit beside the KV pool.
            entry["layers"][layer] = topk[starts[b]:starts[b] + entry["keep"]].to("cpu", copy=True)

    def flush(self, forward_batch) -> None:
        pending = forward_batch.__dict__.pop(PENDING, None)
        for rid, entry in (pending or {}).items():
            if entry["keep"] == 0 or not entry["layers"]:
                continue
            layers = sorted(entry["layers"])
            topk = torch.stack([entry["layers"][layer] for layer in layers])
            size = topk.numel() * 4
            if self.written + size > self.max_bytes:
                self._warn_once("bytes", f"IndexCache capture: {ENV_CAPTURE_MAX_BYTES} reached; no more captures")
                continue
            write_chunk(self.root, rid, layers, topk, entry["positions"], entry["truncated"])
            self.written += size
            self.taken[rid] = self.taken.get(rid, 0) + entry["keep"]

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self.warned:
            self.warned.add(key)
            logger.warning(message)


def sink_from_env(environ=os.environ) -> CaptureSink | None:
    root = environ.get(ENV_CAPTURE_DIR)
    if not root:
        return None
    return CaptureSink(Path(root), int(environ.get(ENV_CAPTURE_MAX_TOKENS, DEFAULT_MAX_TOKENS)),
                       int(environ.get(ENV_CAPTURE_MAX_BYTES, DEFAULT_MAX_BYTES)))


def apply_topk_capture(registry: PatchRegistry, sink: CaptureSink | None = None) -> CaptureSink | None:
    """Wrap the two targets when capture mode is on; returns the sink (``None``: off, nothing patched)."""
    sink = sink or sink_from_env()
    if sink is None:
        return None
    for target in (INDEXER_FORWARD_CUDA, CAUSAL_LM_FORWARD):
        target.resolve()
    sink.root.mkdir(parents=True, exist_ok=True)

    def make_kernel(original):
        def forward_cuda(self, *args, **kwargs):
            out = original(self, *args, **kwargs)
            bound = dict(zip(_ARG_ORDER, args), **kwargs)
            slots = sink.flagged(bound["forward_batch"])
            if slots and isinstance(out, torch.Tensor):
                sink.record(bound["forward_batch"], bound["layer_id"], out, bound["positions"], slots)
            return out

        return forward_cuda

    def make_forward(original):
        def forward(self, input_ids, positions, forward_batch, *args, **kwargs):
            out = original(self, input_ids, positions, forward_batch, *args, **kwargs)
            if PENDING in getattr(forward_batch, "__dict__", {}):
                sink.flush(forward_batch)
            return out

        return forward

    registry.wrap(INDEXER_CLASS.resolve(), "forward_cuda", make_kernel, patch="topk_capture")
    registry.wrap(CAUSAL_LM_CLASS.resolve(), "forward", make_forward, patch="topk_capture")
    logger.info(f"IndexCache capture mode: flagged requests' top-k go to {sink.root}")
    return sink


def _is_writer() -> bool:
    try:
        return attention_tp_rank() == 0
    except (IncompatibleSGLang, AssertionError, AttributeError):
        import torch.distributed as dist

        return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _graph_capturing() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()
