"""IndexCache for SGLang: run the DSA lightning indexer only in Full layers, reuse its top-k in Shared ones.

The core (layer maps, schedules, validation) imports no inference engine; SGLang adapters live in
``sglang_indexcache.patches``. Names are imported lazily so that the start-up hook, which imports this
package in every Python process, costs nothing when IndexCache is not requested.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

__all__ = ["LayerMap", "MapError", "__version__"]
__version__ = "0.1.0"

if TYPE_CHECKING:
    from .errors import MapError
    from .layer_map import LayerMap


def __getattr__(name: str):
    if name == "LayerMap":
        from .layer_map import LayerMap

        return LayerMap
    if name == "MapError":
        from .errors import MapError

        return MapError
    raise AttributeError(f"module 'sglang_indexcache' has no attribute {name!r}")
