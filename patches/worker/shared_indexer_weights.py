"""Shared layers carry no indexer weights, and checkpoints need none for them.

A Shared layer never runs its indexer, so its projections (``wq_b``, ``wk``, ``weights_proj``; the last two
fused as ``wk_weights_proj`` from 0.5.17) and ``k_norm`` are removed right after the layer is built (about 14M
parameters per layer at DeepSeek-V3.2's size; SGLang empties the allocator cache before sizing the KV pool, so
the memory goes to KV). The checkpoint tensors of those modules are dropped before SGLang's loader sees them, so
checkpoints that ship no indexer weights for Shared layers (GLM-5.2) and checkpoints that do both load cleanly.
NextN/MTP layers keep theirs.
"""

from __future__ import annotations

import inspect
import re

from ..arguments import Argument
from ..process_map import plan_for
from ..registry import PatchRegistry
from ..targets import CAUSAL_LM_CLASS, LOAD_WEIGHTS

WEIGHT_MODULES = ("wq_b", "wk", "weights_proj", "wk_weights_proj", "k_norm")
_INDEXER_WEIGHT = re.compile(r"^model\.layers\.(\d+)\.self_attn\.indexer\.")


def drop_indexer_weights(indexer) -> None:
    for name in WEIGHT_MODULES:
        if hasattr(indexer, name):
            delattr(indexer, name)


def apply_shared_indexer_weights(registry: PatchRegistry) -> None:
    cls = CAUSAL_LM_CLASS.resolve()
    signature = inspect.signature(LOAD_WEIGHTS.resolve())
    nextn_arg = Argument(LOAD_WEIGHTS.resolve(), "is_nextn", LOAD_WEIGHTS.dotted)

    def make(original):
        def load_weights(self, *args, **kwargs):
            process_map = None if nextn_arg.get(args, kwargs) else plan_for(self.config)
            if process_map is not None:
                bound = signature.bind(self, *args, **kwargs)
                bound.arguments["weights"] = _without_shared_indexers(bound.arguments["weights"],
                                                                      process_map.effective)
                return original(*bound.args, **bound.kwargs)
            return original(self, *args, **kwargs)

        return load_weights

    registry.wrap(cls, "load_weights", make, patch="shared_indexer_weights")


def _without_shared_indexers(weights, effective):
    for name, tensor in weights:
        match = _INDEXER_WEIGHT.match(name)
        if match and int(match.group(1)) < effective.num_layers and not effective.is_full(int(match.group(1))):
            continue
        yield name, tensor
