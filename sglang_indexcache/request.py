"""Which map a server launch asks for: a map name/path, or the standard Hugging Face schedule keys.

Every way a map arrives (``--json-model-override-args``, ``SGLANG_INDEXCACHE_MAP``, the admin endpoint's
body, the CLI's flags) goes through :class:`~sglang_indexcache.schema.MapRequest`, so each gives the same
error for the same mistake.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from .errors import MapError
from .layer_map import LayerMap
from .model_config import require_dsa
from .names import ENV_MAP, MAP_KEY, OVERRIDE_FLAG, REQUEST_KEYS, SCHEDULE_KEYS
from .schema import MapRequest, to_map_error

CHECKPOINT = "checkpoint"  # how start-up lines name a schedule that came from the checkpoint's config.json


def parse_request(values: Mapping[str, Any], source: str) -> MapRequest:
    """``values`` (request keys only) checked with strict types and the rules of one request."""
    try:
        return MapRequest.model_validate(dict(values))
    except ValidationError as e:
        raise to_map_error(e, source) from None


def resolve_request(env_map: str | None, overrides: Mapping[str, Any], config: Mapping[str, Any],
                    config_source: str, request_source: str = OVERRIDE_FLAG) -> LayerMap | None:
    """The map to serve, checked against the model's config; None when IndexCache is not requested."""
    request = parse_request({k: overrides[k] for k in REQUEST_KEYS if k in overrides}, request_source)
    if env_map and request.indexcache_map is None:
        if request.schedule:
            raise MapError(request_source, MAP_KEY, f"{ENV_MAP} given together with {', '.join(request.schedule)}",
                           f"give either a map (indexcache_map or {ENV_MAP}) or the schedule keys, not both")
        request = parse_request({MAP_KEY: env_map}, ENV_MAP)
    return requested_map(request, config, config_source, request_source)


def requested_map(request: MapRequest, config: Mapping[str, Any], config_source: str,
                  request_source: str) -> LayerMap | None:
    """Schedule keys replace the checkpoint's own schedule keys as a whole, so what the user passed is what
    runs (a checkpoint's ``indexer_types`` cannot silently win over a requested pattern)."""
    if request.indexcache_map is not None:
        return LayerMap.for_model(request.indexcache_map, config, config_source)
    if request.schedule:
        require_dsa(dict(config), config_source)
        base = {k: v for k, v in config.items() if k not in SCHEDULE_KEYS}
        return LayerMap.from_hf_config({**base, **request.schedule}, source=request_source)
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
