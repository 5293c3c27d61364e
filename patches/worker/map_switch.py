"""The schedulers' half of ``POST /indexcache/map`` (the HTTP half: ``main/map_switch_endpoint.py``).

``Scheduler.init_request_dispatcher``, ``Scheduler.process_input_requests``: a switch waits until
the scheduler is fully idle (nothing running, waiting or still on the GPU), then flushes the radix cache and
KV pool (prefixes were computed under the old map; a layer turning Full has no index keys for them) and
only then gives each indexer its new role. All of it happens between forwards, on the scheduler thread, so
no forward ever mixes two maps. TP ranks receive the same messages in the same loop iteration and switch only
after all of that iteration's messages (a cancel included) are handled, so they switch, or drop the switch,
together.
"""


from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from sglang_indexcache.errors import MapError
from sglang_indexcache.layer_map import LayerMap
from sglang_indexcache.names import ENDPOINT
from sglang_indexcache.switching import check_switchable, switch_refusal

from ..process_map import plan
from ..registry import PatchRegistry
from ..state import COUNTERS, set_switched, startup_map
from ..targets import SCHEDULER_CLASS, TYPE_DISPATCHER
from .eras import graph_runners, tokenizer_sender
from .indexer_forward import ROLE, LayerRole
from .scheduler_status import status

logger = logging.getLogger("sglang_indexcache")
PENDING = "_indexcache_pending_switch"  # Scheduler attribute: the Pending switch of this scheduler


@dataclass
class Pending:
    """A switch on one scheduler: waiting to be idle, then ready (answered, map staged), then committed."""

    req: Any
    staged: Any = None  # the ProcessMap to switch to, once this rank answered ready
    commit: Any = None  # the CommitSwitchMapReq, once every rank was ready


def apply_map_switch(registry: PatchRegistry) -> None:
    from ..switch_messages import CancelSwitchMapReq, CommitSwitchMapReq, SwitchMapReq

    cls = SCHEDULER_CLASS.resolve()
    dispatcher_cls = TYPE_DISPATCHER.resolve()
    sender = tokenizer_sender()

    def make_dispatcher(original):
        def init_request_dispatcher(self):
            original(self)
            self._request_dispatcher += dispatcher_cls([
                (SwitchMapReq, lambda req: receive_switch(self, req)),
                (CommitSwitchMapReq, lambda req: receive_commit(self, req)),
                (CancelSwitchMapReq, lambda req: receive_cancel(self, req)),
            ])

        return init_request_dispatcher

    def make_inputs(original):
        def process_input_requests(self, recv_reqs):
            original(self, recv_reqs)
            if getattr(self, PENDING, None) is not None:
                answer = advance(self)
                if answer is not None:
                    sender(self).send_output(*answer)

        return process_input_requests

    registry.wrap(cls, "init_request_dispatcher", make_dispatcher, patch="map_switch")
    registry.wrap(cls, "process_input_requests", make_inputs, patch="map_switch")


def receive_switch(scheduler, req):
    """Dispatcher entry: refuse now, or leave the switch pending until this iteration's messages are handled
    (a cancel in the same batch must win on every TP rank alike)."""
    if getattr(scheduler, PENDING, None) is not None:
        return _refused(req, "another map switch is pending")
    refusal = _scheduler_refusal(scheduler)
    if refusal:
        return _refused(req, refusal)
    setattr(scheduler, PENDING, Pending(req))
    return None


def receive_commit(scheduler, commit):
    """Every rank is ready: switch (in this iteration's ``advance``, or once idle again)."""
    pending = getattr(scheduler, PENDING, None)
    if pending is None or pending.req.rid != commit.switch_rid or pending.staged is None:
        return _refused(commit, "no switch is ready on this rank; nothing was switched")
    pending.commit = commit
    return None


def receive_cancel(scheduler, cancel):
    """The HTTP server gave up (a rank timed out or refused): drop the switch it names, if not committed."""
    pending = getattr(scheduler, PENDING, None)
    if pending is None or pending.req.rid != cancel.rid or pending.commit is not None:
        return None
    setattr(scheduler, PENDING, None)
    if pending.staged is not None:  # this rank answered ready already; the server has its answer
        return None
    return _refused(pending.req, "the scheduler did not become idle in time; the switch was cancelled and "
                                 "nothing was switched")


def advance(scheduler):
    """Move the pending switch on when the scheduler is fully idle: answer ready, or switch once committed.
    Returns (answer, request answered) or None."""
    pending = getattr(scheduler, PENDING)
    if not scheduler.is_fully_idle():
        return None
    if pending.staged is None:
        try:
            pending.staged = _process_map_for(pending.req)
        except MapError as e:
            setattr(scheduler, PENDING, None)
            return _refused(pending.req, str(e)), pending.req
        return _answer(pending.req, True, "ready"), pending.req
    if pending.commit is None:
        return None
    setattr(scheduler, PENDING, None)
    return switch_now(scheduler, pending.staged, pending.commit), pending.commit


def switch_now(scheduler, new, commit):
    if not scheduler.flush_cache():
        return _refused(commit, "flushing the cache failed; nothing was switched")
    changed = set_roles(_target_model(scheduler), new.effective)
    set_switched(new)
    COUNTERS.reset()
    logger.info("IndexCache switched: %s, pattern %s, %d/%d Full (%d layer roles changed; cache flushed)",
                new.requested.source, new.effective.pattern, len(new.effective.full_layers),
                new.effective.num_layers, changed)
    return _answer(commit, True, "switched")


def _answer(req, ok: bool, message: str):
    from ..switch_messages import SwitchMapReqOutput

    return SwitchMapReqOutput(ok=ok, message=message, state=status() or {}, rid=req.rid)


def _refused(req, message: str):
    return _answer(req, False, message)


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
        raise MapError(ENDPOINT, "(server)", "this process serves no IndexCache map",
                       "start the server with a map")
    layer_map = LayerMap(req.pattern, source=req.source)
    check_switchable(layer_map, startup.effective)
    # Runtime switching is refused with pipeline stages and two-batch overlap, so nothing is forced here.
    return plan(layer_map, layer_map.num_layers, (0, layer_map.num_layers), None)


def _scheduler_refusal(scheduler) -> str | None:
    runner = _model_runner(scheduler)
    if graph_runners(runner):
        return "this server captured CUDA graphs; runtime map switching needs --disable-cuda-graph"
    return switch_refusal(scheduler.server_args)


def _model_runner(scheduler):
    return scheduler.tp_worker.model_runner


def _target_model(scheduler):
    return _model_runner(scheduler).model
