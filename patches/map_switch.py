"""``POST /indexcache/map``: switch a running server to another layer map, without a restart.

HTTP server (``http_server.app`` routes): validate the request against the model and the map the server
started with (``sglang_indexcache.switching``), then take the tokenizer manager's ``model_update_lock`` as a
writer, as SGLang's own weight updates do: requests in flight finish under the old map, new ones wait. Then
send ``SwitchMapReq`` to every scheduler and wait for every data-parallel rank's answer.

Schedulers (``Scheduler.init_request_dispatcher``, ``Scheduler.process_input_requests``): a switch waits until
the scheduler is fully idle (nothing running, waiting or still on the GPU), then flushes the radix cache and
KV pool (prefixes were computed under the old map; a layer turning Full has no index keys for them) and
only then gives each indexer its new role. All of it happens between forwards, on the scheduler thread, so
no forward ever mixes two maps. TP ranks run the same loop in lockstep, so they switch in the same iteration.
"""


import importlib
import logging

from sglang_indexcache.counters import COUNTERS
from sglang_indexcache.errors import MapError
from sglang_indexcache.layer_map import LayerMap
from sglang_indexcache.switching import check_switchable, switch_refusal, switch_request

from .indexer_forward import ROLE, LayerRole
from .process_map import plan, requested_map
from .registry import PatchRegistry
from .status import set_switched, startup_map, status
from .targets import (
    AUTH_LEVEL,
    COMMUNICATOR,
    HTTP_APP,
    HTTP_SERVER,
    SCHEDULER_CLASS,
    SWITCH_TARGETS,
    TYPE_DISPATCHER,
)

logger = logging.getLogger("sglang_indexcache")
PENDING = "_indexcache_pending_switch"  # Scheduler attribute: (request, loop iterations waited)
MAX_WAIT_ITERATIONS = 1_000_000  # counted in loop iterations, not seconds, so every TP rank gives up together
ROUTE = "/indexcache/map"


# ---------------------------------------------------------------- schedulers


def apply_switch_scheduler(registry: PatchRegistry) -> None:
    from .switch_messages import SwitchMapReq

    cls = SCHEDULER_CLASS.resolve()
    for target in SWITCH_TARGETS:
        target.resolve()
    dispatcher_cls = TYPE_DISPATCHER.resolve()
    if registry.is_applied(cls, "init_request_dispatcher"):
        return

    def make_dispatcher(original):
        def init_request_dispatcher(self):
            original(self)
            self._request_dispatcher += dispatcher_cls([(SwitchMapReq, lambda req: receive_switch(self, req))])

        return init_request_dispatcher

    def make_inputs(original):
        def process_input_requests(self, recv_reqs):
            original(self, recv_reqs)
            pending = getattr(self, PENDING, None)
            if pending is not None:
                out = try_switch(self)
                if out is not None:
                    self.send_to_tokenizer.send_output(out, pending[0])

        return process_input_requests

    registry.wrap(cls, "init_request_dispatcher", make_dispatcher, patch="map_switch")
    registry.wrap(cls, "process_input_requests", make_inputs, patch="map_switch")


def receive_switch(scheduler, req):
    """Dispatcher entry: answer now (refused, or idle already) or leave the switch pending."""
    if getattr(scheduler, PENDING, None) is not None:
        return _refused("another map switch is pending")
    refusal = _scheduler_refusal(scheduler)
    if refusal:
        return _refused(refusal)
    setattr(scheduler, PENDING, (req, 0))
    return try_switch(scheduler)


def try_switch(scheduler):
    """Switch if the scheduler is fully idle; None to keep waiting. Any answer ends the pending switch."""
    req, waited = getattr(scheduler, PENDING)
    idle = scheduler.is_fully_idle()
    if not idle and waited < MAX_WAIT_ITERATIONS:
        setattr(scheduler, PENDING, (req, waited + 1))
        return None
    setattr(scheduler, PENDING, None)
    if not idle:
        return _refused(f"the scheduler did not become idle within {waited} iterations; nothing was switched")
    try:
        new = _process_map_for(req)
    except MapError as e:
        return _refused(str(e))
    if not scheduler.flush_cache():
        return _refused("flushing the cache failed; nothing was switched")
    changed = set_roles(_target_model(scheduler), new.effective)
    set_switched(new)
    COUNTERS.reset()
    logger.info("IndexCache switched: %s, pattern %s, %d/%d Full (%d layer roles changed; cache flushed)",
                new.requested.source, new.effective.pattern, len(new.effective.full_layers),
                new.effective.num_layers, changed)
    return _answer(True, "switched")


def _answer(ok: bool, message: str):
    from .switch_messages import SwitchMapReqOutput

    return SwitchMapReqOutput(ok=ok, message=message, state=status() or {})


def _refused(message: str):
    return _answer(False, message)


def set_roles(model, effective: LayerMap) -> int:
    """Give every indexer that has a role its role under ``effective``; returns how many changed."""
    changed = 0
    for module in model.modules():
        role = module.__dict__.get(ROLE)
        if role is None:  # draft (NextN) indexers and models without a map
            continue
        new = LayerRole(role.layer, effective.is_full(role.layer), effective.source_layer(role.layer))
        if new != role:
            setattr(module, ROLE, new)
            changed += 1
    return changed


def _process_map_for(req):
    startup = startup_map()
    if startup is None:
        raise MapError("POST /indexcache/map", "(server)", "this process serves no IndexCache map",
                       "start the server with a map")
    layer_map = LayerMap(req.pattern, source=req.source)
    check_switchable(layer_map, startup.effective)
    # Runtime switching is refused with pipeline stages and two-batch overlap, so nothing is forced here.
    return plan(layer_map, layer_map.num_layers, (0, layer_map.num_layers), None)


def _scheduler_refusal(scheduler) -> str | None:
    runner = _model_runner(scheduler)
    if getattr(runner, "graph_runner", None) is not None:
        return "this server captured CUDA graphs; runtime map switching needs --disable-cuda-graph"
    return switch_refusal(scheduler.server_args)


def _model_runner(scheduler):
    return scheduler.tp_worker.model_runner


def _target_model(scheduler):
    return _model_runner(scheduler).model


# ---------------------------------------------------------------- HTTP server


def apply_switch_endpoint(registry: PatchRegistry) -> None:
    from fastapi import Request
    from fastapi.responses import JSONResponse
    from fastapi.routing import APIRoute
    from sglang.srt.utils.auth import AuthLevel

    app = HTTP_APP.resolve()
    http_server = importlib.import_module(HTTP_SERVER)
    communicator_cls, dispatcher_cls = COMMUNICATOR.resolve(), TYPE_DISPATCHER.resolve()

    def communicator(tm):
        from .switch_messages import SwitchMapReqOutput

        comm = tm.__dict__.get("_indexcache_switch_communicator")
        if comm is None:
            comm = communicator_cls(tm.send_to_scheduler, tm.server_args.dp_size)
            tm._result_dispatcher += dispatcher_cls([(SwitchMapReqOutput, comm.handle_recv)])
            tm._indexcache_switch_communicator = comm
        return comm

    # No `from __future__ import annotations` in this module: FastAPI reads this annotation at runtime.
    @AUTH_LEVEL.resolve()(AuthLevel.ADMIN_FORCE)
    async def indexcache_switch_map(request: Request):
        from .switch_messages import SwitchMapReq

        tm = http_server._global_state.tokenizer_manager
        try:
            body = await request.json()
        except ValueError:
            body = None
        refusal = switch_refusal(tm.server_args)
        if refusal:
            return JSONResponse({"error": refusal}, status_code=400)
        try:
            layer_map = validate_switch(body, tm.server_args)
        except MapError as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        if getattr(tm, "is_pause", False):
            return JSONResponse({"error": "generation is paused (/pause_generation); continue it first"},
                                status_code=409)
        tm.auto_create_handle_loop()
        async with tm.model_update_lock.writer_lock:  # in-flight requests finish first; new ones wait
            replies = await communicator(tm)(SwitchMapReq(pattern=layer_map.pattern,
                                                          source=layer_map.label))
        failed = [r.message for r in replies if not r.ok]
        body = {"switched": not failed, "map": layer_map.label, "pattern": layer_map.pattern,
                "dp_ranks": [r.state for r in replies]}
        if failed:
            return JSONResponse({**body, "error": "; ".join(sorted(set(failed)))}, status_code=409)
        return body

    if any(getattr(r, "path", None) == ROUTE for r in app.router.routes):
        return
    registry.append(app.router.routes, APIRoute(ROUTE, indexcache_switch_map, methods=["POST"]),
                    patch="map_switch_endpoint", what=f"POST {ROUTE}")


def validate_switch(body, server_args) -> LayerMap:
    """The requested map, checked against the model and against the map this server started with."""
    from .server_args import _model_config

    config, source = _model_config(server_args)
    layer_map = switch_request(body, config, source)
    startup = requested_map()
    if startup is None:
        raise MapError("POST /indexcache/map", "(server)", "this server was started without an IndexCache map",
                       "start it with a map (SGLANG_INDEXCACHE_MAP or --json-model-override-args)")
    check_switchable(layer_map, startup)
    return layer_map
