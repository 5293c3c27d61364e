"""Client for a serving SGLang's IndexCache admin endpoints (``GET /indexcache``, ``POST /indexcache/map``).

Meant for scripts such as a calibration loop: switch, measure, switch again. Both endpoints need the
server's ``--admin-api-key``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from .names import ROUTE_STATUS, ROUTE_SWITCH


class AdminError(RuntimeError):
    """The server answered with an error (``status`` is the HTTP status, the message is the server's), or could
    not be reached (``status`` 0)."""

    def __init__(self, status: int, message: str):
        self.status = status
        super().__init__(f"HTTP {status}: {message}" if status else message)


def _call(url: str, admin_api_key: str, method: str, path: str, body: dict | None = None,
          timeout: float = 900) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{url.rstrip('/')}{path}", data=data, method=method, headers={
        "Authorization": f"Bearer {admin_api_key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as e:
        text = e.read().decode(errors="replace")
        try:
            text = json.loads(text).get("error", text)
        except (ValueError, AttributeError):
            pass
        raise AdminError(e.code, text) from None
    except OSError as e:
        raise AdminError(0, f"cannot reach the server at {url}: {e}") from None


def status(url: str, admin_api_key: str) -> list[dict | None]:
    """The active map and counters of each data-parallel rank."""
    return _call(url, admin_api_key, "GET", ROUTE_STATUS)["dp_ranks"]


def switch_map(url: str, admin_api_key: str, map_ref: str | None = None, timeout: float = 900,
               **schedule: Any) -> dict[str, Any]:
    """Switch the server to ``map_ref`` (a shipped name, or a file in the server's
    ``SGLANG_INDEXCACHE_MAP_DIR``) or to HF schedule keys
    (``index_topk_pattern=...``, ``index_topk_freq=..., index_skip_topk_offset=...``). Returns the server's
    answer; raises ``AdminError`` if the server refused."""
    body = {k: v for k, v in schedule.items() if v is not None}
    if map_ref is not None:
        body["map"] = map_ref
    return _call(url, admin_api_key, "POST", ROUTE_SWITCH, body, timeout=timeout)
