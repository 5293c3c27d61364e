"""What a running server says about itself in ``GET /server_info``: the KV pool's size and memory."""

from __future__ import annotations

import requests


def server_info(url: str) -> dict:
    return requests.get(f"{url}/server_info", timeout=30).json()


def served_version(url: str) -> str | None:
    """The SGLang release the server runs (``version`` in ``/server_info``; None where it does not say)."""
    return server_info(url).get("version")


def check_release(served: str | None, expected: str | None) -> None:
    """A measurement is only about the release it names: a server of another one (a kit not sourced, another
    SGLang on the path) stops it."""
    if expected and (served or "").split("+")[0] != expected:
        raise RuntimeError(f"the server runs SGLang {served}, not {expected} (--sglang): source the kit of that "
                           "release (e.g. .gpukit/setup.sh) or drop --sglang")


def _scheduler_state(info: dict) -> dict:
    return (info.get("internal_states") or [{}])[0]


def token_capacity(info: dict) -> int:
    """Tokens the KV pool holds. SGLang versions put it at the top level, in the first scheduler's state, or in
    that state's memory usage."""
    state = _scheduler_state(info)
    value = info.get("max_total_num_tokens") or state.get("max_total_num_tokens") or \
        state.get("memory_usage", {}).get("token_capacity")
    if value is None:
        raise KeyError("/server_info states no max_total_num_tokens (top level, internal_states or memory_usage)")
    return int(value)


def capacity(url: str) -> dict:
    """The pool's tokens and the KV cache's and weights' memory (GB; None where not reported)."""
    info = server_info(url)
    memory = _scheduler_state(info).get("memory_usage", {})
    return {"max_total_num_tokens": token_capacity(info), "kv_cache_gb": memory.get("kvcache"),
            "weights_gb": memory.get("weight")}


def requests_that_fit(url: str, input_len: int, output_len: int) -> int:
    """How many requests of this size fit in the server's KV pool at once."""
    return max(1, token_capacity(server_info(url)) // (input_len + output_len))
