"""The layer maps shipped with the package, addressed by name (``glm-5/searched-1of4``)."""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SUFFIX = ".yaml"


class ShippedName(str):
    """A map name that must load the shipped map, never a file of the same name in the working directory."""


def _root() -> Traversable:
    return resources.files("sglang_indexcache.configs")


def shipped_maps() -> dict[str, Traversable]:
    """Name -> file for every shipped map: ``<model family>/<map>``."""
    found = {}
    for family in _root().iterdir():
        if not family.is_dir() or family.name.startswith(("_", ".")) or family.name == "models":
            continue
        for item in family.iterdir():
            if item.name.endswith(SUFFIX):
                found[f"{family.name}/{item.name[: -len(SUFFIX)]}"] = item
    return dict(sorted(found.items()))
