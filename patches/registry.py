"""A record of every attribute we replace in SGLang, so that ``revert()`` restores the exact originals, and the
one record of which patches are applied."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_MISSING = object()  # the attribute was inherited, not in the owner's own __dict__


@dataclass(frozen=True)
class Applied:
    owner: Any
    attr: str
    original: Any  # the owner's own __dict__ entry, or _MISSING
    replacement: Any
    patch: str


@dataclass(frozen=True)
class Appended:
    items: list
    item: Any
    patch: str
    what: str


class PatchRegistry:
    def __init__(self) -> None:
        self._applied: list[Applied | Appended] = []

    def wrap(self, owner: Any, attr: str, make: Callable[[Callable], Callable], patch: str) -> None:
        """Replace ``owner.attr`` by ``make(current)``; refuses to wrap twice."""
        if self.is_applied(owner, attr):
            raise RuntimeError(f"{_name(owner)}.{attr} is already patched by {self._owner_of(owner, attr)}")
        current = getattr(owner, attr)
        replacement = make(current)
        functools.update_wrapper(replacement, current)
        replacement.__indexcache_patch__ = patch
        original = owner.__dict__.get(attr, _MISSING)
        setattr(owner, attr, replacement)
        self._applied.append(Applied(owner, attr, original, replacement, patch))

    def append(self, items: list, item: Any, patch: str, what: str) -> None:
        """Add ``item`` to a list the engine owns (e.g. its HTTP routes); ``revert()`` removes it again."""
        items.append(item)
        self._applied.append(Appended(items, item, patch, what))

    def has(self, patch: str) -> bool:
        """Whether patch ``patch`` replaced anything: the one idempotence guard (``patches.apply`` asks it)."""
        return any(a.patch == patch for a in self._applied)

    def is_applied(self, owner: Any, attr: str) -> bool:
        return any(isinstance(a, Applied) and a.owner is owner and a.attr == attr for a in self._applied)

    def applied(self) -> list[tuple[str, str]]:
        return [(a.what if isinstance(a, Appended) else f"{_name(a.owner)}.{a.attr}", a.patch) for a in self._applied]

    def revert(self) -> None:
        """Undo in reverse order; inherited attributes are deleted so inheritance shows through again."""
        while self._applied:
            a = self._applied.pop()
            if isinstance(a, Appended):
                a.items.remove(a.item)
            elif a.original is _MISSING:
                delattr(a.owner, a.attr)
            else:
                setattr(a.owner, a.attr, a.original)

    def _owner_of(self, owner: Any, attr: str) -> str:
        return next(a.patch for a in self._applied if isinstance(a, Applied) and a.owner is owner and a.attr == attr)


def _name(owner: Any) -> str:
    return getattr(owner, "__qualname__", None) or getattr(owner, "__name__", repr(owner))
