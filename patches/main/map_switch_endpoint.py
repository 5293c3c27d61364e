"""``POST /indexcache/map`` (HTTP server): switch a running server to another layer map, without a restart.

Check the admin key (``admin_auth``), read and validate the request against the model and the map the server
started with (``sglang_indexcache.switching``; off the event loop, since it reads files), then take the
tokenizer manager's ``model_update_lock`` as a writer, as SGLang's own weight updates do: requests in flight
finish under the old map, new ones wait. Then send ``SwitchMapReq`` to every scheduler and wait for every
data-parallel rank's answer (the schedulers' half: ``worker/map_switch.py``). All of it within
``SGLANG_INDEXCACHE_SWITCH_TIMEOUT`` seconds: past it, a ``CancelSwitchMapReq`` makes every rank still waiting
drop the switch, the lock is released and the answer is 503, the server still serving the old map.
"""


import asyncio
import importlib
import os
import uuid

from sglang_indexcache.errors import MapError
from sglang_indexcache.layer_map import LayerMap
from sglang_indexcache.names import ENDPOINT, ENV_MAP_DIR, ROUTE_SWITCH
from sglang_indexcache.safe_input import load_json_object
from sglang_indexcache.switching import check_switchable, switch_refusal, switch_request, switch_timeout

from ..process_map import requested_map
from ..registry import PatchRegistry
from ..table import SWITCHING, unavailable
from ..targets import HTTP_APP, HTTP_SERVER, TYPE_DISPATCHER

MAX_BODY_BYTES = 64 << 10
ACTIVE_LABEL = "_indexcache_active_label"  # tokenizer manager attribute: the map the last switch made active
CONFIRM_S = 10.0  # how long idle ranks have to confirm a commit or a cancel


class ReplyCollector:
    """Every data-parallel rank's answer to one message, matched by request id.

    Answers nobody waits for any more (to a switch the HTTP server gave up on) are dropped, so a late answer
    can never be taken for the next switch's.
    """

    def __init__(self, fan_out: int):
        self.fan_out = fan_out
        self.waiting: dict[str, tuple[list, asyncio.Event]] = {}

    def handle(self, out) -> None:
        entry = self.waiting.get(out.rid)
        if entry is not None:
            entry[0].append(out)
            if len(entry[0]) >= self.fan_out:
                entry[1].set()

    async def ask(self, send, req, timeout_s: float, on_timeout=None) -> tuple[list, bool]:
        """Send ``req`` and wait up to ``timeout_s`` for every rank; then ``on_timeout()`` (the cancel) and
        up to ``CONFIRM_S`` more. Returns (answers, whether every rank answered in time)."""
        req.rid = req.rid or uuid.uuid4().hex
        answers, done = self.waiting[req.rid] = ([], asyncio.Event())
        try:
            send(req)
            if await _wait(done, timeout_s):
                return answers, True
            if on_timeout is not None:
                on_timeout()
                await _wait(done, CONFIRM_S)
            return list(answers), False
        finally:
            del self.waiting[req.rid]


async def _wait(event: asyncio.Event, timeout_s: float) -> bool:
    try:
        await asyncio.wait_for(event.wait(), timeout_s)
        return True
    except asyncio.TimeoutError:
        return False


def apply_map_switch_endpoint(registry: PatchRegistry) -> None:
    from fastapi.responses import JSONResponse

    from .admin_auth import admin_route

    app = HTTP_APP.resolve()
    http_server = importlib.import_module(HTTP_SERVER)
    dispatcher_cls = TYPE_DISPATCHER.resolve()
    one_at_a_time = asyncio.Lock()

    def collector(tm) -> ReplyCollector:
        from ..switch_messages import SwitchMapReqOutput

        replies = tm.__dict__.get("_indexcache_switch_replies")
        if replies is None:
            replies = ReplyCollector(tm.server_args.dp_size)
            tm._result_dispatcher += dispatcher_cls([(SwitchMapReqOutput, replies.handle)])
            tm._indexcache_switch_replies = replies
        return replies

    def error(message: str, status: int, **extra):
        return JSONResponse({**extra, "error": message}, status_code=status)

    async def indexcache_switch_map(request):
        missing = unavailable(SWITCHING)  # the schedulers' half could not be patched into this SGLang
        if missing:
            return error(missing, 501)
        tm = http_server._global_state.tokenizer_manager
        try:
            refusal = switch_refusal(tm.server_args)
            if refusal:
                return error(refusal, 400)
            body = load_json_object(await _read_body(request), f"{ENDPOINT} body", MAX_BODY_BYTES)
            timeout_s = switch_timeout(os.environ)
            # Reading the model config and a map file is file I/O: keep it off the event loop.
            layer_map = await asyncio.to_thread(validate_switch, body, tm.server_args)
        except MapError as e:
            return error(str(e), 400)
        if getattr(tm, "is_pause", False):
            return error("generation is paused (/pause_generation); continue it first", 409)
        if one_at_a_time.locked():
            return error("another map switch is in progress; retry when it has finished", 409)
        async with one_at_a_time:
            return await _switch(tm, layer_map, timeout_s)

    async def _switch(tm, layer_map: LayerMap, timeout_s: float):
        startup = requested_map()
        old = tm.__dict__.get(ACTIVE_LABEL) or (startup.source if startup else "its current map")
        unchanged = f"nothing was switched; the server still serves {old}"
        tm.auto_create_handle_loop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:  # in-flight requests finish first; new ones wait
            await asyncio.wait_for(tm.model_update_lock.acquire_writer(), timeout_s)
        except asyncio.TimeoutError:
            return error(f"requests in flight did not finish within {timeout_s:g} s; {unchanged}", 503)
        try:
            return await _two_phases(tm, layer_map, deadline - loop.time(), timeout_s, unchanged)
        finally:
            await tm.model_update_lock.release_writer()

    async def _two_phases(tm, layer_map, remaining_s, timeout_s, unchanged):
        """Every rank answers ready once idle; only then does any rank switch, so a rank that times out or
        refuses leaves every rank on the old map."""
        from ..switch_messages import CancelSwitchMapReq, CommitSwitchMapReq, SwitchMapReq

        replies, send = collector(tm), tm.send_to_scheduler.send_pyobj
        body = {"switched": False, "map": layer_map.label, "pattern": layer_map.pattern}
        switch = SwitchMapReq(pattern=layer_map.pattern, source=layer_map.label, rid=uuid.uuid4().hex)
        cancel = lambda: send(CancelSwitchMapReq(rid=switch.rid))  # noqa: E731
        ready, in_time = await replies.ask(send, switch, max(remaining_s, 0.001), on_timeout=cancel)
        refused = sorted({r.message for r in ready if not r.ok})
        if not in_time:
            return error(f"the schedulers did not become idle within {timeout_s:g} s; the switch was cancelled, "
                         f"{unchanged}", 503, **body, dp_ranks=[r.state for r in ready])
        if refused:
            cancel()  # the ranks that were ready drop it
            return error(f"{'; '.join(refused)}; {unchanged}", 409, **body, dp_ranks=[r.state for r in ready])
        done, in_time = await replies.ask(send, CommitSwitchMapReq(switch_rid=switch.rid), CONFIRM_S)
        body["dp_ranks"] = [r.state for r in done]
        failed = sorted({r.message for r in done if not r.ok})
        if failed or not in_time:
            return error("; ".join(failed) or f"{tm.server_args.dp_size - len(done)} rank(s) did not confirm the "
                         "switch in time; they switch once idle", 409, **body)
        tm.__dict__[ACTIVE_LABEL] = layer_map.label
        return {**body, "switched": True}

    registry.append(app.router.routes, admin_route(ROUTE_SWITCH, "POST", indexcache_switch_map),
                    patch="map_switch_endpoint", what=ENDPOINT)


async def _read_body(request) -> bytes:
    """The body, refused past ``MAX_BODY_BYTES`` without reading the rest."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise MapError(f"{ENDPOINT} body", "(json)", f"larger than {MAX_BODY_BYTES} bytes",
                           "send a small JSON object")
        chunks.append(chunk)
    return b"".join(chunks)


def validate_switch(body, server_args) -> LayerMap:
    """The requested map, checked against the model and against the map this server started with."""
    from .server_args import _model_config

    config, source = _model_config(server_args)
    layer_map = switch_request(body, config, source, os.environ.get(ENV_MAP_DIR))
    startup = requested_map()
    if startup is None:
        raise MapError(ENDPOINT, "(server)", "this server was started without an IndexCache map",
                       "start it with a map (SGLANG_INDEXCACHE_MAP or --json-model-override-args)")
    check_switchable(layer_map, startup)
    return layer_map
