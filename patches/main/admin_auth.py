"""The admin key check of IndexCache's HTTP endpoints, made by the endpoints themselves.

SGLang enforces ``ADMIN_FORCE`` in a middleware that it installs only with one tokenizer worker; with
``--tokenizer-worker-num > 1`` its HTTP workers run without it. So every IndexCache endpoint checks the
server's ``--admin-api-key`` itself (constant-time) and is closed when the server has none.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoint's annotation at runtime.

import importlib
import secrets

from fastapi import Request
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from ..targets import AUTH_LEVEL, AUTH_LEVELS, HTTP_SERVER


def admin_refusal(request: Request):
    """A 403/401 answer, or None when the request carries this server's admin key."""
    state = getattr(importlib.import_module(HTTP_SERVER), "_global_state", None)
    server_args = getattr(getattr(state, "tokenizer_manager", None), "server_args", None)
    admin_key = getattr(server_args, "admin_api_key", None)
    if not admin_key:
        return JSONResponse({"error": "Forbidden: this admin endpoint needs the server to be started with "
                                      "--admin-api-key"}, status_code=403)
    scheme, _, token = (request.headers.get("Authorization") or "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), admin_key.encode()):
        return JSONResponse({"error": "Unauthorized"}, status_code=401)
    return None


def admin_route(path: str, method: str, handler) -> APIRoute:
    """A route whose endpoint refuses without the admin key before ``handler(request)`` runs.

    It is also marked ``ADMIN_FORCE``, so SGLang's own middleware, where it runs, refuses first.
    """
    @AUTH_LEVEL.resolve()(AUTH_LEVELS.resolve().ADMIN_FORCE)
    async def endpoint(request: Request):
        refusal = admin_refusal(request)
        if refusal is not None:
            return refusal
        return await handler(request)

    endpoint.__name__ = handler.__name__
    return APIRoute(path, endpoint, methods=[method])
