"""Timed requests against a running server, through SGLang's native ``/generate`` or the OpenAI API."""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urlparse

import requests

# Prompt logprobs of the last tokens only: a 30K-token prompt's full logits over the vocabulary would not fit.
LOGPROB_TAIL = 256


@dataclass
class RequestResult:
    ok: bool
    prompt_tokens: int
    output_tokens: int = 0
    latency: float = 0.0  # seconds, request sent to last token
    ttft: float | None = None  # seconds to the first output token
    itl: list[float] = field(default_factory=list)  # gaps between streamed chunks, per token
    error: str | None = None

    @property
    def tpot(self) -> float | None:
        if self.ttft is None or self.output_tokens < 2:
            return None
        return (self.latency - self.ttft) / (self.output_tokens - 1)


def require_loopback(url: str) -> str:
    """Load tests only ever target this machine."""
    host = urlparse(url).hostname or ""
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as e:
        raise SystemExit(f"error: cannot resolve {host!r} ({e})") from None
    if not addresses or not all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses):
        raise SystemExit(f"error: {url} is not a loopback address; load tests only target servers on this machine")
    return url.rstrip("/")


async def generate_native(session, url: str, input_ids: list[int], max_new_tokens: int, *,
                          stream: bool = True, timeout: float = 1800) -> RequestResult:
    """One ``/generate`` request with ``input_ids``; greedy, ``ignore_eos`` so the length is exact."""
    import aiohttp

    body = {"input_ids": input_ids, "stream": stream,
            "sampling_params": {"max_new_tokens": max_new_tokens, "temperature": 0.0, "ignore_eos": True}}
    result = RequestResult(ok=False, prompt_tokens=len(input_ids))
    start = last = time.perf_counter()
    try:
        async with session.post(f"{url}/generate", json=body,
                                timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            if response.status != 200:
                result.error = f"HTTP {response.status}: {(await response.text())[:200]}"
                return result
            if not stream:
                out = await response.json()
                result.output_tokens = out["meta_info"]["completion_tokens"]
            async for raw in response.content:
                line = raw.decode().strip()
                if not line.startswith("data:") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[5:])
                tokens = chunk["meta_info"]["completion_tokens"]
                now = time.perf_counter()
                new = tokens - result.output_tokens
                if new > 0:
                    if result.ttft is None:
                        result.ttft = now - start
                    else:
                        result.itl.extend([(now - last) / new] * new)
                    result.output_tokens, last = tokens, now
    except Exception as e:  # noqa: BLE001 - every failure is counted, none stops the run
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.latency = time.perf_counter() - start
    if not stream:
        result.ttft = result.latency if result.output_tokens == 1 else None
    result.ok = True
    return result


async def generate_openai(client, model: str, input_ids: list[int], max_new_tokens: int) -> RequestResult:
    """One streamed ``/v1/completions`` request whose prompt is a list of token ids."""
    result = RequestResult(ok=False, prompt_tokens=len(input_ids))
    start = last = time.perf_counter()
    try:
        stream = await client.completions.create(
            model=model, prompt=input_ids, max_tokens=max_new_tokens, temperature=0.0, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        async for chunk in stream:
            now = time.perf_counter()
            if chunk.choices and chunk.choices[0].text is not None:
                if result.ttft is None:
                    result.ttft = now - start
                else:
                    result.itl.append(now - last)
                last = now
            if chunk.usage is not None:
                result.output_tokens = chunk.usage.completion_tokens
    except Exception as e:  # noqa: BLE001
        result.error = f"{type(e).__name__}: {e}"
        return result
    result.latency = time.perf_counter() - start
    result.ok = True
    return result


def random_prompt(rng, length: int, vocab: int = 100_000) -> list[int]:
    """Random token ids; a fresh draw per request keeps the radix cache from serving a prefix."""
    return rng.integers(100, vocab, size=length).tolist()


def greedy(url: str, ids: list[int], new_tokens: int, logprobs: bool = True, timeout: float = 600) -> dict:
    """One blocking greedy ``/generate``: output ids and, with ``logprobs``, the prompt logprobs of the last
    ``LOGPROB_TAIL`` tokens and the output's logprobs."""
    body = {"input_ids": ids, "sampling_params": {"max_new_tokens": new_tokens, "temperature": 0.0}}
    if logprobs:
        body.update(return_logprob=True, logprob_start_len=max(0, len(ids) - LOGPROB_TAIL))
    r = requests.post(f"{url}/generate", json=body, timeout=timeout)
    r.raise_for_status()
    out = r.json()
    meta = out["meta_info"]
    res = {"ids": out["output_ids"], "ttft": meta.get("e2e_latency")}
    if logprobs:
        res["prompt_lp"] = [x[0] for x in meta["input_token_logprobs"] if x[0] is not None]
        res["out_lp"] = [x[0] for x in meta["output_token_logprobs"]]
    return res


def flush_cache(url: str) -> None:
    requests.post(f"{url}/flush_cache", timeout=60)
