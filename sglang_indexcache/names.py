"""Every name IndexCache shares with the outside: environment variables, config keys, the override flag, HTTP
routes, metric and profiler names.

Imports nothing (tests/test_names.py): the start-up hook and every SGLang process read these before anything
else is loaded, and a client that only needs a name pays for no more.
"""

# -- environment variables: what users set
ENV_MAP = "SGLANG_INDEXCACHE_MAP"  # a map name or YAML path to serve
ENV_DISABLE = "SGLANG_INDEXCACHE_DISABLE"  # 1: never arm, whatever is requested (e.g. to run SGLang's native sharing)
ENV_MAP_DIR = "SGLANG_INDEXCACHE_MAP_DIR"  # the only directory POST /indexcache/map may read map files from
ENV_SWITCH_TIMEOUT = "SGLANG_INDEXCACHE_SWITCH_TIMEOUT"  # seconds a runtime switch may wait
ENV_KEEP_INDEX_CACHE = "SGLANG_INDEXCACHE_KEEP_INDEX_CACHE"  # 1: allocate Shared layers' index-key cache anyway
ENV_DEBUG_FILE = "SGLANG_INDEXCACHE_DEBUG_FILE"  # a path: each worker rewrites its counters there after every forward
ENV_ADMIN_KEY = "SGLANG_INDEXCACHE_ADMIN_API_KEY"  # the CLI's default --admin-api-key
ENV_CAPTURE_DIR = "SGLANG_INDEXCACHE_CAPTURE_DIR"  # set: capture mode on, files go there
ENV_CAPTURE_MAX_TOKENS = "SGLANG_INDEXCACHE_CAPTURE_MAX_TOKENS"  # query positions kept per request
ENV_CAPTURE_MAX_BYTES = "SGLANG_INDEXCACHE_CAPTURE_MAX_BYTES"  # bytes one server process writes at most

# -- environment variables: what the main process sets for the workers it spawns
ENV_PATTERN = "SGLANG_INDEXCACHE_PATTERN"  # the resolved pattern
ENV_SOURCE = "SGLANG_INDEXCACHE_SOURCE"  # the map's name, for log lines
ENV_EXTERNAL_PACKAGE = "SGLANG_EXTERNAL_MODEL_PACKAGE"  # SGLang's own: a package its model registry imports
WORKER_PACKAGE = "sglang_indexcache.patches.worker.model_registry"  # what it is set to
ENV_PLUGINS = "SGLANG_PLUGINS"  # SGLang's own (0.5.11+): the plugins its loader may load; empty: all

# -- SGLang's plugin loader (0.5.11+)
PLUGIN_GROUP = "sglang.srt.plugins"  # the entry-point group it loads
PLUGIN_NAME = "indexcache"  # our entry point's name there (pyproject.toml), what SGLANG_PLUGINS must list

# -- config keys and the flag they arrive in
MAP_KEY = "indexcache_map"  # the override key naming a map
SCHEDULE_KEYS = ("indexer_types", "index_topk_pattern", "index_topk_freq", "index_skip_topk_offset")  # Hugging Face's
REQUEST_KEYS = (MAP_KEY, *SCHEDULE_KEYS)
OVERRIDE_FLAG = "--json-model-override-args"  # SGLang's flag that carries them

# -- HTTP (admin endpoints)
ROUTE_STATUS = "/indexcache"
ROUTE_SWITCH = "/indexcache/map"
ENDPOINT = f"POST {ROUTE_SWITCH}"  # how error messages name the switch endpoint

# -- metrics, traces, captures
METRIC_CALLS = "sglang:indexcache_indexer_calls"  # a Counter: Prometheus adds _total
METRIC_SKIPS = "sglang:indexcache_indexer_skips"
METRIC_FULL_LAYERS = "sglang:indexcache_full_layers"
PROFILER_RANGE = "indexcache::indexer"  # around each indexer run, so traces attribute its kernels to it
CAPTURE_RID_PREFIX = "indexcache-capture-"  # requests whose rid starts with it are captured

PTH = "sglang_indexcache.pth"  # the start-up hook's file name
