"""Arm IndexCache in every Python process that SGLang starts: when a map is requested, or when the checkpoint
being served states its own sharing schedule.

The ``.pth`` start-up hook imports nothing: it leaves a finder on ``sys.meta_path`` that calls
:func:`on_sglang_import` when the process first imports ``sglang`` (spawned workers too); newer SGLang also
calls :func:`load_plugin` through the ``sglang.srt.plugins`` entry point. Arming only registers post-import
callbacks, so nothing of SGLang is imported here; each patch of ``table.py`` is applied when the SGLang module it
names (``when``) is imported. With no request, only ``ServerArgs`` is watched: the main process reads the
checkpoint's config there (``main/server_args.py``) and arms fully if it states a schedule.
"""

from __future__ import annotations

import os
import sys

from sglang_indexcache.names import ENV_DISABLE, ENV_MAP, ENV_PATTERN, OVERRIDE_FLAG, REQUEST_KEYS

from .state import STATE
from .targets import SERVER_ARGS


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
    from . import apply
    from .post_import import when_imported
    from .table import MAIN

    when_imported(SERVER_ARGS, lambda _module: apply(MAIN, SERVER_ARGS))


def arm() -> None:
    """Apply every patch of the table when the SGLang module that triggers it is first imported (now, if it is
    already imported)."""
    if STATE.armed:
        return
    STATE.armed = True
    from . import apply
    from .post_import import when_imported
    from .table import PATCHES

    for when in dict.fromkeys(patch.when for patch in PATCHES):
        when_imported(when, lambda _module, when=when: apply(when=when))
