"""Arm IndexCache in every Python process that SGLang starts, only when a map is requested.

A ``.pth`` file calls :func:`arm_if_requested` at interpreter start (spawned workers too); newer SGLang also
calls :func:`load_plugin` through the ``sglang.srt.plugins`` entry point. Arming only registers post-import
callbacks: nothing of SGLang is imported here, and with no request nothing happens at all.
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
    arm_if_requested()


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
