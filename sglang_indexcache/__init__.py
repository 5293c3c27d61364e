"""IndexCache for SGLang: run the DSA lightning indexer only in Full layers, reuse its top-k in Shared ones.

The core (layer maps, schedules, validation) imports no inference engine; SGLang adapters live in
``sglang_indexcache.patches``.
"""

from .errors import MapError
from .layer_map import LayerMap

__all__ = ["LayerMap", "MapError", "__version__"]
__version__ = "0.1.0"
