"""Config keys that request IndexCache (kept import-free: the start-up hook reads them in every process)."""

MAP_KEY = "indexcache_map"
SCHEDULE_KEYS = ("indexer_types", "index_topk_pattern", "index_topk_freq", "index_skip_topk_offset")
REQUEST_KEYS = (MAP_KEY, *SCHEDULE_KEYS)
ENV_MAP = "SGLANG_INDEXCACHE_MAP"  # a map name or YAML path to serve
ENV_MAP_DIR = "SGLANG_INDEXCACHE_MAP_DIR"  # the only directory POST /indexcache/map may read map files from
ENV_SWITCH_TIMEOUT = "SGLANG_INDEXCACHE_SWITCH_TIMEOUT"  # seconds a runtime switch may wait
