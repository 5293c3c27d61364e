"""A stand-in for an SGLang server on loopback: ``/generate`` (native, streamed or not), ``/v1/completions``
(OpenAI, streamed), ``/server_info``, ``/flush_cache``, ``/health`` and ``/start_profile``/``/stop_profile``,
with latencies the tests can predict: prefill takes ``prefill_s_per_token * input length``, each further token
``decode_s``. A profile writes a PyTorch-profiler-shaped trace in which the indexer's range launched kernels
taking ``indexer_share`` of the GPU time.

As an IndexCache server (``num_layers`` given): ``GET /indexcache`` and ``POST /indexcache/map`` with the
subset rule against ``startup_pattern``, and prompt logprobs (``return_logprob``) from ``logprobs(pattern,
ids)``. It keeps a radix-cache stand-in: a prompt scored again under another map without a flush in between
counts in ``stale_hits`` (a real server would have reused a prefix computed under the old map). With
``flush_on_switch`` False the switch leaves that cache alone, so only the client's own flush prevents it."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from pathlib import Path

from aiohttp import web


class FakeServer:
    def __init__(self, prefill_s_per_token=1e-6, decode_s=0.002, capacity=100_000, fail_every=0, indexer_share=0.25,
                 num_layers=None, startup_pattern=None, logprobs=None, flush_on_switch=False, port=None,
                 admin_api_key=None, version="0.5.17"):
        self.prefill_s_per_token, self.decode_s = prefill_s_per_token, decode_s
        self.version = version  # the SGLang release /server_info reports
        self.capacity, self.fail_every, self.indexer_share = capacity, fail_every, indexer_share
        self.requests = 0
        self.flushes = 0
        self.prompt_lengths: list[int] = []
        self.profiles: list[dict] = []
        self.num_layers, self.logprobs, self.flush_on_switch, self.port = num_layers, logprobs, flush_on_switch, port
        self.startup_pattern = startup_pattern or ("F" * num_layers if num_layers else None)
        self.pattern = self.startup_pattern
        self.admin_api_key = admin_api_key  # when set, the admin endpoints need it, as in SGLang
        self.switches: list[str] = []
        self.scored: list[tuple[str, tuple[int, ...]]] = []  # (pattern, prompt) of every prompt-logprob request
        self.cached: dict[tuple[int, ...], str] = {}  # prompt -> the map it was cached under
        self.stale_hits = 0

    async def _tokens(self, n_in, n_out):
        """Yield the running completion count as tokens are produced."""
        await asyncio.sleep(self.prefill_s_per_token * n_in)
        yield 1
        for k in range(2, n_out + 1):
            await asyncio.sleep(self.decode_s)
            yield k

    def _fail(self) -> bool:
        self.requests += 1
        return bool(self.fail_every) and self.requests % self.fail_every == 0

    async def generate(self, request):
        body = await request.json()
        if self._fail():
            return web.Response(status=500, text="injected failure")
        if body.get("return_logprob"):
            return web.json_response(self._prompt_logprobs(body))
        ids, n_out = body["input_ids"], body["sampling_params"]["max_new_tokens"]
        self.prompt_lengths.append(len(ids))
        if not body.get("stream"):
            async for _ in self._tokens(len(ids), n_out):
                pass
            return web.json_response({"output_ids": [7] * n_out, "meta_info": {"completion_tokens": n_out}})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        async for k in self._tokens(len(ids), n_out):
            await response.write(f"data: {json.dumps({'meta_info': {'completion_tokens': k}})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    async def completions(self, request):
        body = await request.json()
        if self._fail():
            return web.Response(status=500, text="injected failure")
        prompt, n_out = body["prompt"], body["max_tokens"]
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        base = {"id": "c", "object": "text_completion", "created": 0, "model": body["model"]}
        async for _ in self._tokens(len(prompt), n_out):
            chunk = {**base, "choices": [{"index": 0, "text": "x", "finish_reason": None, "logprobs": None}]}
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        usage = {"prompt_tokens": len(prompt), "completion_tokens": n_out, "total_tokens": len(prompt) + n_out}
        await response.write(f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        return response

    def _prompt_logprobs(self, body):
        assert body.get("logprob_start_len") == 0, "prompt logprobs need logprob_start_len 0"
        prompts = body["input_ids"] if isinstance(body["input_ids"][0], list) else [body["input_ids"]]
        outputs = []
        for ids in prompts:
            key = tuple(ids)
            if self.cached.get(key, self.pattern) != self.pattern:
                self.stale_hits += 1
            self.cached[key] = self.pattern
            self.scored.append((self.pattern, key))
            logprobs = self.logprobs(self.pattern, ids)
            entries = [[None, ids[0], None]] + [[lp, t, None] for lp, t in zip(logprobs, ids[1:])]
            outputs.append({"output_ids": [7], "meta_info": {"input_token_logprobs": entries}})
        return outputs if isinstance(body["input_ids"][0], list) else outputs[0]

    def _indexcache_state(self):
        return {"map": "fake", "pattern": self.pattern, "requested_pattern": self.pattern,
                "num_layers": self.num_layers, "full_layers": self.pattern.count("F"),
                "switchable_full_layers": [l for l, c in enumerate(self.startup_pattern) if c == "F"]}

    def _refused(self, request):
        if self.admin_api_key and request.headers.get("Authorization") != f"Bearer {self.admin_api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return None

    async def indexcache(self, request):
        if refused := self._refused(request):
            return refused
        return web.json_response({"dp_ranks": [self._indexcache_state()]})

    async def indexcache_map(self, request):
        if refused := self._refused(request):
            return refused
        pattern = (await request.json())["index_topk_pattern"]
        if len(pattern) != self.num_layers:
            return web.json_response({"error": f"{len(pattern)} layers"}, status=400)
        missing = [l for l, c in enumerate(pattern) if c == "F" and self.startup_pattern[l] != "F"]
        if missing:
            return web.json_response({"error": f"layers {missing} were Shared at start-up"}, status=400)
        self.pattern = pattern
        self.switches.append(pattern)
        if self.flush_on_switch:
            self.cached.clear()
        return web.json_response({"switched": True, "pattern": pattern, "dp_ranks": [self._indexcache_state()]})

    async def server_info(self, request):
        return web.json_response({"max_total_num_tokens": self.capacity, "version": self.version})

    async def flush_cache(self, request):
        if refused := self._refused(request):
            return refused
        self.flushes += 1
        self.cached.clear()
        return web.Response(text="ok")

    async def health(self, request):
        return web.Response(text="ok")

    def _write_trace(self, output_dir: str) -> None:
        from sglang_indexcache.names import PROFILER_RANGE

        ours = 1000 * self.indexer_share
        events = [
            {"ph": "X", "cat": "user_annotation", "name": PROFILER_RANGE, "pid": 1, "tid": 1, "ts": 10, "dur": 10},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 12, "dur": 1,
             "args": {"correlation": 1}},
            {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": 30, "dur": 1,
             "args": {"correlation": 2}},
            {"ph": "X", "cat": "kernel", "name": "mqa_logits", "ts": 40, "dur": ours, "args": {"correlation": 1}},
            {"ph": "X", "cat": "kernel", "name": "fused_moe", "ts": 90, "dur": 1000 - ours, "args": {"correlation": 2}},
        ]
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / f"{time.time()}-TP-0.trace.json").write_text(json.dumps({"traceEvents": events}))

    async def start_profile(self, request):
        body = await request.json()
        self.profiles.append(body)
        if body.get("num_steps"):  # SGLang stops by itself after that many steps
            self._write_trace(body["output_dir"])
        return web.Response(text="ok")

    async def stop_profile(self, request):
        self._write_trace(self.profiles[-1]["output_dir"])
        return web.Response(text="ok")

    def start(self) -> str:
        app = web.Application()
        app.add_routes([web.post("/generate", self.generate), web.post("/v1/completions", self.completions),
                        web.get("/server_info", self.server_info), web.post("/flush_cache", self.flush_cache),
                        web.get("/health", self.health), web.post("/start_profile", self.start_profile),
                        web.post("/stop_profile", self.stop_profile), web.get("/indexcache", self.indexcache),
                        web.post("/indexcache/map", self.indexcache_map)])
        port = self.port
        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = self.port = s.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve():
            asyncio.set_event_loop(self._loop)
            self._runner = web.AppRunner(app)
            self._loop.run_until_complete(self._runner.setup())
            self._loop.run_until_complete(web.TCPSite(self._runner, "127.0.0.1", port).start())
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()
        ready.wait(10)
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
