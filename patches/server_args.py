"""After ``ServerArgs.__post_init__`` (main process): resolve, validate and export the requested map.

This runs before any worker is spawned or any weight is loaded, so a bad map stops the launch with the
same one-line message as ``sglang-indexcache validate``.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from sglang_indexcache.errors import MapError
from sglang_indexcache.request import OVERRIDES, resolve_request
from sglang_indexcache.safe_input import load_json_object
from sglang_indexcache.switching import check_map_dir, switch_timeout

from .env import ENV_EXTERNAL_PACKAGE, ENV_MAP, WORKER_PACKAGE
from .process_map import export
from .registry import PatchRegistry
from .targets import SERVER_ARGS_CLASS, IncompatibleSGLang, check_model_targets

logger = logging.getLogger("sglang_indexcache")
PTH = "sglang_indexcache.pth"


def apply_server_args(registry: PatchRegistry) -> None:
    cls = SERVER_ARGS_CLASS.resolve()
    if registry.is_applied(cls, "__post_init__"):
        return

    def make(original):
        def __post_init__(self):
            check_overrides_json(self)  # before SGLang parses it, which fails with a traceback
            original(self)
            resolve_in_main_process(self)

        return __post_init__

    registry.wrap(cls, "__post_init__", make, patch="server_args")


def check_overrides_json(server_args) -> None:
    try:
        load_json_object(server_args.json_model_override_args or "{}", OVERRIDES)
    except MapError as e:
        _refuse(e)


def resolve_in_main_process(server_args) -> None:
    try:
        overrides = load_json_object(server_args.json_model_override_args or "{}", OVERRIDES)
        config, source = _model_config(server_args)
        layer_map = resolve_request(os.environ.get(ENV_MAP), overrides, config, source)
        if layer_map is None:
            return
        check_map_dir(os.environ)
        switch_timeout(os.environ)
        check_model_targets()
    except (MapError, IncompatibleSGLang) as e:
        _refuse(e)
        return
    try:
        _reach_workers()
    except IncompatibleSGLang as e:
        _refuse(e)
        return
    export(layer_map)
    logger.info("IndexCache requested: %s, pattern %s, %d/%d Full", layer_map.label,
                layer_map.pattern, len(layer_map.full_layers), layer_map.num_layers)


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
    from sglang.srt.utils.hf_transformers_utils import get_config

    config = get_config(server_args.model_path, trust_remote_code=server_args.trust_remote_code,
                        revision=server_args.revision)
    return config.to_dict(), str(Path(server_args.model_path) / "config.json")


def _refuse(error: Exception) -> None:
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None) == "sglang.launch_server":
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    raise error
