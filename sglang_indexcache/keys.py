"""Config keys that request IndexCache (kept import-free: the start-up hook reads them in every process)."""

MAP_KEY = "indexcache_map"
SCHEDULE_KEYS = ("indexer_types", "index_topk_pattern", "index_topk_freq", "index_skip_topk_offset")
REQUEST_KEYS = (MAP_KEY, *SCHEDULE_KEYS)
