"""Which map a server launch asks for: a map name/path, or the standard Hugging Face schedule keys."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import MapError
from .keys import MAP_KEY, SCHEDULE_KEYS
from .layer_map import LayerMap
from .model_config import require_dsa

OVERRIDES = "--json-model-override-args"


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
