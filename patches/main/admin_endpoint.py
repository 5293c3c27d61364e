"""``GET /indexcache`` (HTTP server): every data-parallel rank's IndexCache state, as the schedulers report it
(``worker/scheduler_status.py``). An admin endpoint: refused unless the server was started with
``--admin-api-key`` and the request carries it (checked by the endpoint itself, ``admin_auth``).
"""

from __future__ import annotations

import importlib

from sglang_indexcache.names import ROUTE_STATUS

from ..registry import PatchRegistry
from ..targets import HTTP_APP, HTTP_SERVER
from .admin_auth import admin_route


def apply_admin_endpoint(registry: PatchRegistry) -> None:
    app = HTTP_APP.resolve()
    http_server = importlib.import_module(HTTP_SERVER)

    async def indexcache_status(_request):
        states = await http_server._global_state.tokenizer_manager.get_internal_state()
        return {"dp_ranks": [state.get("indexcache") for state in states]}

    registry.append(app.router.routes, admin_route(ROUTE_STATUS, "GET", indexcache_status),
                    patch="admin_endpoint", what=f"GET {ROUTE_STATUS}")
