"""Environment variables that carry the map to every SGLang process (kept import-free: read at start-up)."""

from sglang_indexcache.keys import ENV_MAP  # noqa: F401 - user-facing: a map name or YAML path
ENV_PATTERN = "SGLANG_INDEXCACHE_PATTERN"  # resolved by the main process, read by spawned workers
ENV_SOURCE = "SGLANG_INDEXCACHE_SOURCE"  # the map's name, for log lines
ENV_DISABLE = "SGLANG_INDEXCACHE_DISABLE"  # set to 1: never arm, whatever is requested (e.g. to run SGLang's native sharing)
ENV_DEBUG_FILE = "SGLANG_INDEXCACHE_DEBUG_FILE"  # a path: each worker rewrites its counters there after every forward
ENV_EXTERNAL_PACKAGE = "SGLANG_EXTERNAL_MODEL_PACKAGE"  # SGLang's own: a package its model registry imports
WORKER_PACKAGE = "sglang_indexcache.patches.worker"
ENV_KEEP_INDEX_CACHE = "SGLANG_INDEXCACHE_KEEP_INDEX_CACHE"  # set to 1: allocate Shared layers' index-key cache anyway
