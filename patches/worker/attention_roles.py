"""After ``DeepseekV2AttentionMLA.__init__``: give the layer's indexer its role and switch native sharing off.

SGLang 0.5.10.post1 has its own ``skip_topk`` / ``next_skip_topk`` flags; with them False every layer calls
its indexer and our ``Indexer.forward`` decides, so there is one implementation, not two. SGLang 0.5.18+ builds
no indexer at all for a layer its schedule keys make Shared (the map handed over as ``indexer_types``, or the
checkpoint's own schedule): such a layer gets a stand-in without parameters, so it runs our Shared path too.
"""

from __future__ import annotations

import inspect

from ..process_map import plan_for
from ..registry import PatchRegistry
from ..targets import ATTENTION_CLASS, ATTENTION_INIT, INDEXER_CLASS, USES_DSA
from .indexer_forward import ROLE, LayerRole
from .shared_indexer_weights import drop_indexer_weights


def apply_attention_roles(registry: PatchRegistry) -> None:
    """Layers of a model built without a map are left alone (``plan_for`` is None)."""
    owner = ATTENTION_CLASS.resolve()
    signature = inspect.signature(ATTENTION_INIT.resolve())
    dsa_flag = USES_DSA.resolve()  # use_nsa up to 0.5.12.post1, use_dsa after

    def make(original):
        def __init__(self, *args, **kwargs):
            original(self, *args, **kwargs)
            if not getattr(self, dsa_flag):
                return
            bound = signature.bind(self, *args, **kwargs)
            bound.apply_defaults()
            process_map = plan_for(bound.arguments["config"])
            if process_map is None:
                return
            if bound.arguments["is_nextn"]:
                # Draft layers always run their own indexer; SGLang 0.5.14+ would have them reuse the top-k of
                # the previous draft step instead.
                self.skip_topk = False
                self.next_skip_topk = False
                return
            layer = bound.arguments["layer_id"]
            effective = process_map.effective
            if self.indexer is None:
                if effective.is_full(layer):
                    raise RuntimeError(
                        f"IndexCache: SGLang built no indexer for layer {layer}, which the map "
                        f"({process_map.requested.label}) makes Full: SGLang read other schedule keys than the "
                        "map; request the checkpoint's own schedule or pass the map as indexer_types")
                self.indexer = shared_stand_in()
            setattr(self.indexer, ROLE, LayerRole(layer, effective.is_full(layer), effective.source_layer(layer)))
            if not effective.is_full(layer):
                drop_indexer_weights(self.indexer)
            self.skip_topk = False
            self.next_skip_topk = False

        return __init__

    registry.wrap(owner, "__init__", make, patch="attention_roles")


def shared_stand_in():
    """An ``Indexer`` with no parameters, buffers or kernel state: a Shared layer only ever takes the cache-aware
    forward's Shared path, which reads the Full layer's top-k from the forward batch. Only its dispatch base
    (``BaseFusedOp``) is initialised, so code that walks the model's ops (torch.compile mode) finds its
    bookkeeping."""
    cls = INDEXER_CLASS.resolve()
    stand_in = cls.__new__(cls)
    super(cls, stand_in).__init__()
    return stand_in
