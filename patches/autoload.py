"""Arm IndexCache in every Python process that SGLang starts: when a map is requested, or when the checkpoint
being served states its own sharing schedule.

The ``.pth`` start-up hook imports nothing: it leaves a finder on ``sys.meta_path`` that calls
:func:`on_sglang_import` when the process first imports ``sglang`` (spawned workers too); newer SGLang also
calls :func:`load_plugin` through the ``sglang.srt.plugins`` entry point. Arming only registers post-import
callbacks, so nothing of SGLang is imported here. With no request, only ``ServerArgs`` is watched: the main
process reads the checkpoint's config there (``server_args``) and arms fully if it states a schedule.
"""

from __future__ import annotations

import os
import sys

from sglang_indexcache.keys import REQUEST_KEYS

from .env import ENV_DISABLE, ENV_MAP, ENV_PATTERN

OVERRIDE_FLAG = "--json-model-override-args"
_armed = False


def requested(environ, argv) -> bool:
    if environ.get(ENV_DISABLE):
        return False
    if environ.get(ENV_MAP) or environ.get(ENV_PATTERN):
        return True
    return any(key in value for value in _override_values(argv) for key in REQUEST_KEYS)


def _override_values(argv):
    for i, arg in enumerate(argv):
        if arg == OVERRIDE_FLAG and i + 1 < len(argv):
            yield argv[i + 1]
        elif arg.startswith(OVERRIDE_FLAG + "="):
            yield arg.split("=", 1)[1]


def arm_if_requested() -> None:
    if requested(os.environ, getattr(sys, "orig_argv", sys.argv)):
        arm()


def load_plugin() -> None:
    """Entry point for SGLang's plugin loader; re-entrant."""
    on_sglang_import()


def on_sglang_import() -> None:
    """The process is importing SGLang: arm for a request, else watch for a checkpoint that states a schedule."""
    if os.environ.get(ENV_DISABLE):
        return
    if requested(os.environ, getattr(sys, "orig_argv", sys.argv)):
        arm()
        return
    from .post_import import when_imported

    when_imported("sglang.srt.server_args", _patch_server_args)


def arm() -> None:
    global _armed
    if _armed:
        return
    _armed = True
    from .post_import import when_imported

    when_imported("sglang.srt.server_args", _patch_server_args)
    when_imported("sglang.srt.models.deepseek_v2", _patch_models)
    when_imported("sglang.srt.entrypoints.http_server", _add_admin_endpoint)


def _patch_server_args(_module) -> None:
    from . import REGISTRY
    from .server_args import apply_server_args

    apply_server_args(REGISTRY)


def _add_admin_endpoint(_module) -> None:
    from . import REGISTRY
    from .map_switch import apply_switch_endpoint
    from .status import apply_admin_endpoint

    apply_admin_endpoint(REGISTRY)
    apply_switch_endpoint(REGISTRY)


def _patch_models(_module) -> None:
    from . import apply_model_patches

    apply_model_patches()
