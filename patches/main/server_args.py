"""When SGLang resolves its ``ServerArgs`` (main process): resolve, validate and export the map to serve.

That is the requested map, or with no request the schedule the checkpoint's ``config.json`` states (GLM-5.2's
``index_topk_freq`` / ``index_skip_topk_offset`` / ``indexer_types``, which SGLang alone would read otherwise).
This runs before any worker is spawned or any weight is loaded, so a bad map, or one that makes a layer Full
whose indexer weights the checkpoint lacks, stops the launch with the same one-line message as
``sglang-indexcache validate``.

Where SGLang resolves differs by release: up to 0.5.18 the dataclass resolves itself in ``__post_init__`` and
we run after it; from 0.5.20 construction only records the input and ``resolve_once()`` resolves it, and we run
before that, so the map is in the model override arguments SGLang then derives everything from.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

from sglang_indexcache.checkpoint import check_indexer_weights
from sglang_indexcache.errors import MapError
from sglang_indexcache.names import ENV_EXTERNAL_PACKAGE, ENV_MAP, OVERRIDE_FLAG, PTH, REQUEST_KEYS, WORKER_PACKAGE
from sglang_indexcache.request import checkpoint_schedule, resolve_request
from sglang_indexcache.safe_input import load_json_object
from sglang_indexcache.switching import check_map_dir, switch_timeout

from ..autoload import check_allowlist
from ..process_map import export
from ..registry import PatchRegistry
from ..table import check_worker_targets, warn_unavailable
from ..targets import GET_CONFIG, SERVER_ARGS_CLASS, SERVER_ARGS_RESOLUTION, IncompatibleSGLang

logger = logging.getLogger("sglang_indexcache")


def apply_server_args(registry: PatchRegistry) -> None:
    seam = SERVER_ARGS_RESOLUTION.chosen()
    name = seam.qualname.rsplit(".", 1)[1]
    registry.wrap(SERVER_ARGS_CLASS.resolve(), name, _HOOKS[name], patch="server_args")


def _after_post_init(original):
    def __post_init__(self):
        check_overrides_json(self)  # before SGLang parses it, which fails with a traceback
        original(self)
        resolve_in_main_process(self)

    return __post_init__


def _before_resolve_once(original):
    def resolve_once(self):
        # SGLang calls it more than once per launch (launcher, then engine); only the first resolves.
        if not self.__dict__.get(_RESOLVED):
            check_overrides_json(self)
            layer_map = resolve_in_main_process(self)
            if layer_map is not None:
                hand_over(self, layer_map)
            self.__dict__[_RESOLVED] = True
        original(self)

    return resolve_once


_HOOKS = {"__post_init__": _after_post_init, "resolve_once": _before_resolve_once}
_RESOLVED = "_indexcache_resolved"


def hand_over(server_args, layer_map) -> None:
    """Put the map into the model overrides as ``indexer_types``, the key these releases read before any other.

    transformers' ``GlmMoeDsaConfig`` fills ``indexer_types`` (all Full) at construction and SGLang applies the
    overrides afterwards, so a requested ``index_topk_freq`` or pattern alone would be ignored; with the map
    there, SGLang's own indexer construction, weight loading, index-K pool and memory budget follow it.
    """
    overrides = load_json_object(server_args.json_model_override_args or "{}", OVERRIDE_FLAG)
    overrides["indexer_types"] = ["full" if role == "F" else "shared" for role in layer_map.pattern]
    server_args.json_model_override_args = json.dumps(overrides)


def check_overrides_json(server_args) -> None:
    try:
        load_json_object(server_args.json_model_override_args or "{}", OVERRIDE_FLAG)
    except MapError as e:
        _refuse(e)


def resolve_in_main_process(server_args):
    """The map this launch serves: the request if there is one, else the checkpoint's own schedule, else none.
    Exported for the workers and returned."""
    try:
        overrides = load_json_object(server_args.json_model_override_args or "{}", OVERRIDE_FLAG)
        explicit = bool(os.environ.get(ENV_MAP)) or any(k in overrides for k in REQUEST_KEYS)
        try:
            config, source = _model_config(server_args)
        except Exception:  # noqa: BLE001 - SGLang reports an unreadable model itself; with a request, so do we
            if explicit:
                raise
            return None
        layer_map = resolve_request(os.environ.get(ENV_MAP), overrides, config, source)
        from_checkpoint = layer_map is None
        if from_checkpoint:
            layer_map = checkpoint_schedule(_stated_config(server_args), source)
        if layer_map is None:
            return None
        check_map_dir(os.environ)
        switch_timeout(os.environ)
        check_allowlist(os.environ, "the checkpoint states a sharing schedule" if from_checkpoint
                        else "an IndexCache map is requested")
        check_worker_targets()
        warn_unavailable()
        if server_args.load_format != "dummy":
            check_indexer_weights(layer_map, server_args.model_path)
        _reach_workers()
    except (MapError, IncompatibleSGLang) as e:
        _refuse(e)
        return None
    export(layer_map)
    if from_checkpoint:
        from ..autoload import arm

        arm()  # nothing was requested, so this process has not armed yet: its HTTP server gets the endpoints
    logger.info("IndexCache %s: %s, pattern %s, %d/%d Full",
                "serves the checkpoint's own schedule" if from_checkpoint else "requested", layer_map.label,
                layer_map.pattern, len(layer_map.full_layers), layer_map.num_layers)
    return layer_map


def _reach_workers() -> None:
    """Make sure the spawned workers patch their model: through SGLang's registry hook, else the .pth hook."""
    current = os.environ.get(ENV_EXTERNAL_PACKAGE)
    if current in (None, "", WORKER_PACKAGE):
        os.environ[ENV_EXTERNAL_PACKAGE] = WORKER_PACKAGE
    elif not _pth_installed():
        raise IncompatibleSGLang(
            f"{ENV_EXTERNAL_PACKAGE} is set to {current!r} and sglang_indexcache.pth is not installed, so the "
            "workers would build the model without IndexCache; install sglang-indexcache with pip (not as an "
            f"editable install) or unset {ENV_EXTERNAL_PACKAGE}")


def _pth_installed() -> bool:
    return any((Path(p) / PTH).is_file() for p in sys.path if p)


def _model_config(server_args) -> tuple[dict, str]:
    """The model's config as SGLang reads it (local directory or hub), without the user's overrides."""
    config = GET_CONFIG.resolve()(server_args.model_path, trust_remote_code=server_args.trust_remote_code,
                        revision=server_args.revision)
    return config.to_dict(), str(Path(server_args.model_path) / "config.json")


def _stated_config(server_args) -> dict:
    """The checkpoint's config.json as its authors wrote it: transformers' config classes fill in schedule keys
    (``GlmMoeDsaConfig`` an all-Full ``indexer_types``) that the checkpoint never stated."""
    from transformers import PretrainedConfig

    config, _ = PretrainedConfig.get_config_dict(server_args.model_path, revision=server_args.revision)
    return config


def _refuse(error: Exception) -> None:
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "sglang.launch_server":
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    raise error
