"""``GET /indexcache`` (HTTP server): every data-parallel rank's IndexCache state, as the schedulers report it
(``worker/scheduler_status.py``), and which optional features this server runs. An admin endpoint: refused unless
the server was started with ``--admin-api-key`` and the request carries it (checked by the endpoint itself,
``admin_auth``).
"""

from __future__ import annotations

import importlib

from fastapi.responses import JSONResponse

from sglang_indexcache.names import ROUTE_STATUS

from ..registry import PatchRegistry
from ..table import STATUS, features, unavailable
from ..targets import HTTP_APP, HTTP_SERVER
from .admin_auth import admin_route


def apply_admin_endpoint(registry: PatchRegistry) -> None:
    app = HTTP_APP.resolve()
    http_server = importlib.import_module(HTTP_SERVER)

    async def indexcache_status(_request):
        missing = unavailable(STATUS)  # the schedulers would not report: say so rather than list empty ranks
        if missing:
            return JSONResponse({"error": missing, "features": features()}, status_code=501)
        states = await http_server._global_state.tokenizer_manager.get_internal_state()
        return {"dp_ranks": [state.get("indexcache") for state in states], "features": features()}

    registry.append(app.router.routes, admin_route(ROUTE_STATUS, "GET", indexcache_status),
                    patch="admin_endpoint", what=f"GET {ROUTE_STATUS}")
