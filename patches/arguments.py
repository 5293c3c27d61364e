"""Where a wrapped callable's argument arrives, looked up once from the target's signature when a patch is applied.

A wrapper that took ``args[3]`` for granted would read the wrong value, silently, once SGLang reorders its
parameters; the position comes from the signature instead, and a parameter that is gone refuses the patch.
"""

from __future__ import annotations

import inspect
from typing import Any

from .targets import IncompatibleSGLang, refusal

_NO_DEFAULT = inspect.Parameter.empty


class Argument:
    """Parameter ``name`` of ``func``; ``get(args, kwargs)`` reads it from a call with ``self`` left out of ``args``."""

    def __init__(self, func, name: str, dotted: str) -> None:
        params = list(inspect.signature(func).parameters.values())
        if params and params[0].name == "self":
            params = params[1:]
        found = [(i, p) for i, p in enumerate(params) if p.name == name]
        if not found:
            raise IncompatibleSGLang(refusal(f"{dotted} lacks parameter {name}"))
        index, param = found[0]
        positional = param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD)
        self.name, self.index = name, index if positional else None
        self.default = param.default

    def get(self, args: tuple, kwargs: dict) -> Any:
        if self.name in kwargs:
            return kwargs[self.name]
        if self.index is not None and self.index < len(args):
            return args[self.index]
        if self.default is _NO_DEFAULT:
            raise TypeError(f"missing argument {self.name}")
        return self.default
