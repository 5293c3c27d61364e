"""Which maps a running server can switch to, and when a server cannot switch at all.

A server keeps index-key cache and indexer weights only for the layers that are Full in the map it started
with; Shared layers' were never allocated or loaded. So a running server can switch to any map whose Full
layers it started with, and to no other. Start with the widest map you will want (all-F keeps every
layer switchable, at the cost of the memory IndexCache would save).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .errors import MapError
from .layer_map import LayerMap
from .maps import ShippedName, shipped_maps
from .names import ENDPOINT, ENV_MAP_DIR, ENV_SWITCH_TIMEOUT, MAP_KEY, SCHEDULE_KEYS
from .request import parse_request, requested_map
from .schema import MapRequest

SWITCH_KEYS = ("map", *SCHEDULE_KEYS)  # a request body: a map name/path, or the HF schedule keys
DEFAULT_SWITCH_TIMEOUT_S = 120.0


def parse_switch_body(body: Any, source: str = ENDPOINT) -> MapRequest:
    """A switch request (the endpoint's body, or what the CLI is about to send) under the launch rules."""
    if not isinstance(body, Mapping):
        raise MapError(source, "(body)", "not a JSON object",
                       'send {"map": "name-or-path.yaml"} or HF schedule keys such as {"index_topk_freq": 4}')
    unknown = sorted(set(body) - set(SWITCH_KEYS))
    if unknown:
        raise MapError(source, str(unknown[0])[:40], "unknown key", f"use one of {', '.join(SWITCH_KEYS)}")
    try:
        request = parse_request({MAP_KEY if k == "map" else k: v for k, v in body.items()}, source)
    except MapError as e:  # name the key as the body spells it
        raise MapError(e.source, "map" if e.key == MAP_KEY else e.key, e.problem, e.fix) from None
    if request.indexcache_map is None and not request.schedule:
        raise MapError(source, "(body)", "no map given", f"give one of {', '.join(SWITCH_KEYS)}")
    return request


def switch_request(body: Any, config: Mapping[str, Any], config_source: str, map_dir: str | None = None) -> LayerMap:
    """The map a switch request asks for, checked against the model like a launch request.

    ``map`` may only name a shipped map or a file inside ``map_dir`` (``SGLANG_INDEXCACHE_MAP_DIR``): the
    endpoint must not become a way to read the server's files.
    """
    request = parse_switch_body(body)
    if request.indexcache_map is not None:
        request = request.model_copy(update={MAP_KEY: allowed_map_file(request.indexcache_map, map_dir)})
    layer_map = requested_map(request, config, config_source, ENDPOINT)
    assert layer_map is not None
    return layer_map


def allowed_map_file(ref: str, map_dir: str | None) -> str:
    """``ref`` as a shipped name, or as a file inside ``map_dir`` (symlinks resolved); else refused with one
    message whatever lies at ``ref``, so the answer reveals nothing about the server's files."""
    shipped = shipped_maps()
    if ref.removesuffix(".yaml") in shipped:
        return ShippedName(ref.removesuffix(".yaml"))
    if map_dir:
        root = Path(map_dir).resolve()
        try:
            candidate = (root / ref).resolve()
        except (OSError, ValueError, RuntimeError):
            candidate = root
        if candidate != root and candidate.is_relative_to(root):
            return str(candidate)
    where = f"a file inside {ENV_MAP_DIR}" if map_dir else f"a file (the server was started without {ENV_MAP_DIR})"
    raise MapError(ENDPOINT, "map", f"not a shipped map name or {where}",
                   f"use one of {', '.join(shipped)}, or a file in the directory {ENV_MAP_DIR} names at launch")


def switch_timeout(environ: Mapping[str, str]) -> float:
    """Seconds a switch may wait for requests in flight to finish and every scheduler to switch."""
    raw = environ.get(ENV_SWITCH_TIMEOUT)
    if raw is None or raw == "":
        return DEFAULT_SWITCH_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not math.isfinite(seconds) or seconds <= 0:
        raise MapError(ENV_SWITCH_TIMEOUT, "(value)", "not a positive number of seconds",
                       f"set it to e.g. {DEFAULT_SWITCH_TIMEOUT_S:g}, or unset it")
    return seconds


def check_map_dir(environ: Mapping[str, str]) -> None:
    """At launch: ``SGLANG_INDEXCACHE_MAP_DIR``, when set, is a directory."""
    map_dir = environ.get(ENV_MAP_DIR)
    try:
        is_dir = not map_dir or Path(map_dir).is_dir()
    except (OSError, ValueError):
        is_dir = False
    if not is_dir:
        raise MapError(ENV_MAP_DIR, "(value)", "not a directory",
                       "name the directory holding the maps POST /indexcache/map may switch to, or unset it")


def check_switchable(new: LayerMap, startup: LayerMap) -> None:
    """``new`` may only use Full layers that ``startup`` had: the others have no index-key cache or weights."""
    if new.num_layers != startup.num_layers:
        raise MapError(new.source, "num_layers", f"{new.num_layers} layers, the served model has "
                       f"{startup.num_layers}", "give a map for this model")
    missing = sorted(set(new.full_layers) - set(startup.full_layers))
    if missing:
        raise MapError(new.source, "pattern", f"layers {missing} are Full in this map but were Shared when the "
                       f"server started ({startup.pattern}), so they have no indexer weights or index-key cache",
                       "switch to a map whose Full layers the server started with, or restart the server with "
                       "this map (or with a wider one, e.g. all-F, to keep every layer switchable)")


def switch_refusal(server_args: Any) -> str | None:
    """Why a server started with these settings cannot switch maps at runtime; None when it can."""
    if not getattr(server_args, "disable_cuda_graph", False):
        return ("runtime map switching needs --disable-cuda-graph: captured CUDA graphs replay the layer roles "
                "they were captured with. Restart with the new map, or start the server with --disable-cuda-graph")
    if getattr(server_args, "pp_size", 1) > 1:
        return "runtime map switching is not supported with --pp-size > 1; restart with the new map"
    if getattr(server_args, "enable_two_batch_overlap", False):
        return "runtime map switching is not supported with --enable-two-batch-overlap; restart with the new map"
    if getattr(server_args, "tokenizer_worker_num", 1) > 1:
        return "runtime map switching is not supported with --tokenizer-worker-num > 1; restart with the new map"
    return None
