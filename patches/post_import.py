"""Run a callback right after a module is first imported, without importing it ourselves."""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Callable


class _CallbackLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader, callback: Callable) -> None:
        self._loader, self._callback = loader, callback

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._callback(module)


class PostImportFinder(importlib.abc.MetaPathFinder):
    """Wraps the real loader of each watched module so its callback runs once the module has executed."""

    def __init__(self) -> None:
        self._callbacks: dict[str, Callable] = {}

    def watch(self, name: str, callback: Callable) -> None:
        if name in sys.modules:
            callback(sys.modules[name])
        else:
            self._callbacks[name] = callback

    def find_spec(self, name, path, target=None):
        callback = self._callbacks.pop(name, None)
        if callback is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None and spec.loader is not None:
                spec.loader = _CallbackLoader(spec.loader, callback)
                return spec
        return None


_FINDER: PostImportFinder | None = None


def when_imported(name: str, callback: Callable) -> None:
    global _FINDER
    if _FINDER is None:
        _FINDER = PostImportFinder()
        sys.meta_path.insert(0, _FINDER)
    _FINDER.watch(name, callback)
