"""Which map a server launch asks for: a map name/path, or the standard Hugging Face schedule keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import MapError
from .keys import MAP_KEY, SCHEDULE_KEYS
from .layer_map import LayerMap
from .model_config import require_dsa

OVERRIDES = "--json-model-override-args"
CHECKPOINT = "checkpoint"  # how start-up lines name a schedule that came from the checkpoint's config.json


def resolve_request(env_map: str | None, overrides: Mapping[str, Any], config: Mapping[str, Any],
                    config_source: str, request_source: str = OVERRIDES) -> LayerMap | None:
    """The map to serve, checked against the model's config; None when IndexCache is not requested.

    Schedule keys given as overrides replace the checkpoint's own schedule keys as a whole, so what the user
    passed is what runs (a checkpoint's ``indexer_types`` cannot silently win over an override pattern).
    """
    map_ref = overrides.get(MAP_KEY) or env_map
    schedule = {k: overrides[k] for k in SCHEDULE_KEYS if k in overrides}
    if map_ref and schedule:
        raise MapError(request_source, MAP_KEY, f"given together with {', '.join(schedule)}",
                       "give either a map (indexcache_map or SGLANG_INDEXCACHE_MAP) or the schedule keys, not both")
    if map_ref:
        return LayerMap.for_model(map_ref, config, config_source)
    if schedule:
        require_dsa(dict(config), config_source)
        base = {k: v for k, v in config.items() if k not in SCHEDULE_KEYS}
        return LayerMap.from_hf_config({**base, **schedule}, source=request_source)
    return None


def checkpoint_schedule(config: Mapping[str, Any], config_source: str) -> LayerMap | None:
    """The sharing schedule a DSA checkpoint was trained with, from its own config; None if it states none.

    Read with the Hugging Face keys' meaning and priority (``indexer_types`` first), which is what the
    checkpoint's authors wrote and what its indexer weights follow.
    """
    keys = [k for k in SCHEDULE_KEYS if config.get(k) is not None]
    if not keys or config.get("index_topk") is None:
        return None
    require_dsa(dict(config), config_source)
    stated = ", ".join(f"{k} {_short(config[k])}" for k in keys)
    return LayerMap.from_hf_config(config, source=f"{CHECKPOINT} ({config_source}: {stated})")


def _short(value: Any) -> str:
    text = value if isinstance(value, str) else str(value)
    return text if len(text) <= 24 else f"{text[:21]}..."
