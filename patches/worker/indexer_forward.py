"""Replace ``Indexer.forward``: Full layers run the indexer and publish its top-k; Shared layers run nothing.

The top-k of the latest Full layer is kept on the ``ForwardBatch`` being run: two-batch-overlap
micro-batches and draft models have their own, so they never see each other's indices; CUDA-graph
capture records the Full layer's output tensor flowing into the Shared layers; and the model forward
clears it on entry (``model_forward_reset`` in ``model_checks``), so a new forward cannot read the previous
one's indices.
It is the same tensor the indexer already allocated, so this costs no memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sglang_indexcache.names import PROFILER_RANGE

from ..arguments import Argument
from ..registry import PatchRegistry
from ..state import COUNTERS
from ..targets import INDEXER_CLASS, INDEXER_FORWARD_CUDA

SLOT = "_indexcache_topk"  # ForwardBatch attribute: (Full layer id, its indexer output)
ROLE = "_indexcache_role"  # Indexer attribute, set at construction


@dataclass(frozen=True)
class LayerRole:
    layer: int
    full: bool
    source: int  # the Full layer whose indices this layer uses


class StaleIndices(RuntimeError):
    pass


def apply_indexer_forward(registry: PatchRegistry) -> None:
    # ``Indexer.forward`` is the platform dispatcher (``*args, **kwargs``); the arguments are forward_cuda's.
    implementation = INDEXER_FORWARD_CUDA.resolve()
    batch_arg = Argument(implementation, "forward_batch", INDEXER_FORWARD_CUDA.dotted)
    indices_arg = Argument(implementation, "return_indices", INDEXER_FORWARD_CUDA.dotted)
    registry.wrap(
        INDEXER_CLASS.resolve(),
        "forward",
        lambda original: _cache_aware_forward(original, batch_arg, indices_arg),
        patch="indexer_forward",
    )


def _cache_aware_forward(original, batch_arg: Argument, indices_arg: Argument):
    def forward(self, *args, **kwargs):
        role = self.__dict__.get(ROLE)
        if role is None:  # NextN/MTP draft layers, or a model built without a map
            return original(self, *args, **kwargs)
        forward_batch = batch_arg.get(args, kwargs)
        if role.full:
            if torch.autograd._profiler_enabled():
                # Names the indexer's kernels in profiler traces, GEMMs included (bench.bound reads it); checked
                # first so that serving without a profiler pays nothing.
                with torch.profiler.record_function(PROFILER_RANGE):
                    out = original(self, *args, **kwargs)
            else:
                out = original(self, *args, **kwargs)
            setattr(forward_batch, SLOT, (role.layer, out))
            COUNTERS.record(role.layer, ran=True)
            return out
        stored = getattr(forward_batch, SLOT, None)
        if stored is None or stored[0] != role.source:
            found = "nothing" if stored is None else f"layer {stored[0]}'s"
            raise StaleIndices(
                f"IndexCache: Shared layer {role.layer} needs layer {role.source}'s top-k in this "
                f"forward batch but found {found}"
            )
        COUNTERS.record(role.layer, ran=False)
        return stored[1] if indices_arg.get(args, kwargs) else None

    return forward
