"""Arm IndexCache in every Python process that SGLang starts: when a map is requested, or when the checkpoint
being served states its own sharing schedule.

Two routes lead here, and both end in :func:`on_sglang_import`, whose arming is once per process (``STATE.armed``,
and the registry never applies a patch twice):

- the ``.pth`` start-up hook, in every interpreter: it imports nothing, only leaves a finder on ``sys.meta_path``
  that calls :func:`on_sglang_import` when the process first imports ``sglang``. It is the route on SGLang
  without a plugin loader (0.5.10.post1) and in processes the loader does not run in (multi-tokenizer HTTP
  workers), and it runs whatever ``SGLANG_PLUGINS`` says, so it is what notices an allowlist that leaves us out;
- SGLang's plugin loader (0.5.11+), through the ``sglang.srt.plugins`` entry point :func:`load_plugin`.

Arming only registers post-import callbacks, so nothing of SGLang is imported here; each patch of ``table.py``
is applied when the SGLang module it names (``when``) is imported. With no request, only ``ServerArgs`` is
watched: the main process reads the checkpoint's config there (``main/server_args.py``) and arms fully if it
states a schedule.
"""

from __future__ import annotations

import importlib.machinery
import logging
import os
import sys
from pathlib import Path

from sglang_indexcache.errors import MapError
from sglang_indexcache.names import (
    ENV_DISABLE,
    ENV_MAP,
    ENV_PATTERN,
    ENV_PLUGINS,
    OVERRIDE_FLAG,
    PLUGIN_GROUP,
    PLUGIN_NAME,
    REQUEST_KEYS,
)

from .state import STATE
from .targets import SERVER_ARGS, IncompatibleSGLang

logger = logging.getLogger("sglang_indexcache")


class LaunchRefused(SystemExit):
    """Stops the process with exit status 2 after printing the one-line reason.

    A ``SystemExit``, because SGLang's plugin loader catches every ``Exception`` around a plugin (and only logs
    it), which would leave the server running without IndexCache; ``SystemExit`` is not an ``Exception``.
    """

    def __init__(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr, flush=True)
        super().__init__(2)
        self.message = message


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
    """Entry point for SGLang's plugin loader; re-entrant. Every failure stops the process: the loader would
    swallow an exception and serve without IndexCache what was asked to be served with it."""
    try:
        on_sglang_import()
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - any failure here means the request cannot be served as asked
        logger.exception("IndexCache could not arm")
        raise LaunchRefused(f"IndexCache could not arm ({type(e).__name__}: {e})") from e


def on_sglang_import() -> None:
    """The process is importing SGLang: arm for a request, else watch for a checkpoint that states a schedule."""
    if os.environ.get(ENV_DISABLE):
        return
    try:
        if requested(os.environ, getattr(sys, "orig_argv", sys.argv)):
            check_allowlist(os.environ, "an IndexCache map is requested")
            arm()
            return
    except (MapError, IncompatibleSGLang) as e:
        raise LaunchRefused(str(e)) from None
    from . import apply
    from .post_import import when_imported
    from .table import MAIN

    when_imported(SERVER_ARGS, lambda _module: apply(MAIN, SERVER_ARGS))


def check_allowlist(environ, why: str) -> None:
    """Refuse when SGLang's plugin allowlist leaves IndexCache out while ``why`` (a map is to be served): its
    loader would skip us with an INFO line and serve the model without the map. Only where that loader exists."""
    allowed = {name.strip() for name in environ.get(ENV_PLUGINS, "").split(",") if name.strip()}
    if allowed and PLUGIN_NAME not in allowed and has_plugin_loader():
        raise MapError(ENV_PLUGINS, ",".join(sorted(allowed)),
                       f"leaves out the {PLUGIN_NAME!r} plugin while {why}, so SGLang would serve the model without "
                       "it", f"add {PLUGIN_NAME} to {ENV_PLUGINS}, or set {ENV_DISABLE}=1 to serve without IndexCache")


def has_plugin_loader() -> bool:
    """Whether the installed SGLang has the ``sglang.srt.plugins`` loader (0.5.11+). Looks for the file without
    importing anything: this runs while the process is importing ``sglang``."""
    package = sys.modules.get("sglang")
    if package is not None:
        locations = list(getattr(package, "__path__", ()))
    else:
        spec = importlib.machinery.PathFinder.find_spec("sglang")
        locations = list(spec.submodule_search_locations or ()) if spec else []
    relative = Path(*PLUGIN_GROUP.split(".")[1:], "__init__.py")
    return any((Path(location) / relative).is_file() for location in locations)


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
