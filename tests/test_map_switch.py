"""POST /indexcache/map: auth, validation, the drain, and the schedulers' switch between forwards.

Real SGLang parts: the model (built on the meta device with the map it starts with), its indexers' roles,
``TypeBasedDispatcher``, ``BaseReq`` messages (pickled as they cross process boundaries), the tokenizer
manager's ``RWLock`` and ``_Communicator``, the auth middleware. Stand-ins, as small as the switch allows: the
scheduler's loop body (``process_input_requests`` dispatches as SGLang's does), idleness and cache flush, and
the tokenizer manager's sockets, which hand messages to the stand-in schedulers in-process.
"""

import asyncio
import json
import pickle
from types import SimpleNamespace

import pytest

import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_indexcache.counters import COUNTERS  # noqa: E402
from sglang_indexcache.patches import REGISTRY, apply_model_patches, revert  # noqa: E402
from sglang_indexcache.patches import map_switch  # noqa: E402
from sglang_indexcache.patches.env import ENV_PATTERN, ENV_SOURCE  # noqa: E402
from sglang_indexcache.patches.indexer_forward import ROLE  # noqa: E402
from sglang_indexcache.patches.status import set_active, status  # noqa: E402

pytestmark = pytest.mark.sglang
STARTUP = "FSFSFSFS"


def roles(model) -> str:
    found = {}
    for module in model.modules():
        role = module.__dict__.get(ROLE)
        if role is not None:
            found[role.layer] = "F" if role.full else "S"
    return "".join(found[i] for i in sorted(found))


def sources(model) -> dict:
    return {m.__dict__[ROLE].layer: m.__dict__[ROLE].source for m in model.modules() if ROLE in m.__dict__}


class StandInScheduler:
    """What the switch touches on SGLang's Scheduler; ``idle`` says whether anything is still running."""

    def __init__(self, model, **server_args):
        self.idle = True
        self.flushes = 0
        self.sent = []
        self.inbox = []
        self.server_args = SimpleNamespace(**{"disable_cuda_graph": True, "pp_size": 1,
                                              "enable_two_batch_overlap": False, "tokenizer_worker_num": 1,
                                              **server_args})
        self.tp_worker = SimpleNamespace(model_runner=SimpleNamespace(model=model, graph_runner=None))
        self.send_to_tokenizer = SimpleNamespace(send_output=lambda out, req: self.sent.append(out))

    def is_fully_idle(self):
        return self.idle

    def flush_cache(self):
        assert self.idle, "SGLang's flush_cache refuses unless fully idle"
        self.flushes += 1
        return True


@pytest.fixture
def served(monkeypatch, tmp_path):
    """A model built with the start-up map, and the scheduler patches applied over stand-in loop methods."""
    from sglang.srt.managers.scheduler import Scheduler
    from sglang.utils import TypeBasedDispatcher

    def init_request_dispatcher(self):
        self._request_dispatcher = TypeBasedDispatcher([])

    def process_input_requests(self, recv_reqs):  # SGLang's: dispatch, send any immediate output
        for req in recv_reqs:
            out = self._request_dispatcher(req)
            if out is not None:
                self.send_to_tokenizer.send_output(out, req)

    monkeypatch.setattr(Scheduler, "init_request_dispatcher", init_request_dispatcher)
    monkeypatch.setattr(Scheduler, "process_input_requests", process_input_requests)
    monkeypatch.setenv(ENV_PATTERN, STARTUP)
    monkeypatch.setenv(ENV_SOURCE, "startup.yaml")
    config = sglang_cpu.tiny_dsa_config()
    (tmp_path / "config.json").write_text(json.dumps(config))
    apply_model_patches()
    model = sglang_cpu.build_model(config)
    COUNTERS.reset()
    yield SimpleNamespace(model=model, model_path=str(tmp_path))
    revert()
    set_active(None, rank=0)


def new_scheduler(model, **server_args):
    from sglang.srt.managers.scheduler import Scheduler

    scheduler = StandInScheduler(model, **server_args)
    Scheduler.init_request_dispatcher(scheduler)
    return scheduler


def loop_once(scheduler):
    from sglang.srt.managers.scheduler import Scheduler

    reqs, scheduler.inbox = scheduler.inbox, []
    Scheduler.process_input_requests(scheduler, reqs)


def switch_req(pattern, source="new.yaml"):
    from sglang_indexcache.patches.switch_messages import SwitchMapReq

    return pickle.loads(pickle.dumps(SwitchMapReq(pattern=pattern, source=source)))  # crosses a process boundary


# ---------------------------------------------------------------- schedulers


def test_switch_waits_for_idle_then_flushes_and_sets_roles(served):
    model = served.model
    assert roles(model) == STARTUP
    scheduler = new_scheduler(model)
    scheduler.idle = False  # requests still running
    scheduler.inbox.append(switch_req("FSSSFSSS"))
    for _ in range(3):
        loop_once(scheduler)
        # Nothing changes while anything runs: no forward can see two maps.
        assert roles(model) == STARTUP and scheduler.flushes == 0 and scheduler.sent == []
    COUNTERS.record(0, ran=True)
    scheduler.idle = True
    loop_once(scheduler)
    (reply,) = scheduler.sent
    assert reply.ok, reply.message
    assert roles(model) == "FSSSFSSS" and scheduler.flushes == 1
    assert sources(model)[3] == 0 and sources(model)[5] == 4
    assert reply.state["pattern"] == "FSSSFSSS" and reply.state["switches"] == 1
    assert reply.state["switchable_full_layers"] == [0, 2, 4, 6]
    assert COUNTERS.snapshot()["calls"] == {}  # counters restart with the map
    assert status()["map"] == "new.yaml"
    # And back: every start-up Full layer is still switchable.
    scheduler.inbox.append(switch_req(STARTUP, "startup.yaml"))
    loop_once(scheduler)
    assert scheduler.sent[-1].ok and roles(model) == STARTUP and scheduler.flushes == 2


def test_layers_freed_at_startup_cannot_come_back(served):
    scheduler = new_scheduler(served.model)
    scheduler.inbox.append(switch_req("FFSSSSSS"))
    loop_once(scheduler)
    (reply,) = scheduler.sent
    assert not reply.ok and "layers [1]" in reply.message
    assert roles(served.model) == STARTUP and scheduler.flushes == 0


def test_refused_with_cuda_graphs_and_when_one_is_pending(served):
    scheduler = new_scheduler(served.model)
    scheduler.tp_worker.model_runner.graph_runner = object()
    scheduler.inbox.append(switch_req("FSSSFSSS"))
    loop_once(scheduler)
    assert not scheduler.sent[-1].ok and "--disable-cuda-graph" in scheduler.sent[-1].message
    scheduler.tp_worker.model_runner.graph_runner = None
    scheduler.idle = False
    scheduler.inbox += [switch_req("FSSSFSSS"), switch_req("FSFSFSSS")]
    loop_once(scheduler)
    assert "pending" in scheduler.sent[-1].message and roles(served.model) == STARTUP
    scheduler.idle = True
    loop_once(scheduler)
    assert scheduler.sent[-1].ok and roles(served.model) == "FSSSFSSS"


def test_gives_up_if_never_idle(served, monkeypatch):
    monkeypatch.setattr(map_switch, "MAX_WAIT_ITERATIONS", 3)
    scheduler = new_scheduler(served.model)
    scheduler.idle = False
    scheduler.inbox.append(switch_req("FSSSFSSS"))
    for _ in range(5):
        loop_once(scheduler)
    (reply,) = scheduler.sent
    assert not reply.ok and "did not become idle" in reply.message and roles(served.model) == STARTUP
    scheduler.idle = True
    scheduler.inbox.append(switch_req("FSSSFSSS"))  # a later request is not blocked by the failed one
    loop_once(scheduler)
    assert scheduler.sent[-1].ok


def test_prometheus_deltas_restart_with_the_counters(served):
    from prometheus_client import REGISTRY as PROM

    from sglang_indexcache.patches.status import Metrics

    metrics = Metrics(rank=7, interval_s=0)
    try:
        COUNTERS.record(0, ran=True)
        COUNTERS.record(0, ran=True)
        metrics.maybe_flush(now=1.0)
        COUNTERS.reset()  # a switch
        COUNTERS.record(0, ran=True)
        metrics.maybe_flush(now=2.0)
        assert PROM.get_sample_value("sglang:indexcache_indexer_calls_total", {"rank": "7", "layer": "0"}) == 3
    finally:
        for metric in (metrics.calls, metrics.skips, metrics.full):
            PROM.unregister(metric)


# ---------------------------------------------------------------- HTTP endpoint


class StandInTokenizerManager:
    """The tokenizer manager's parts the endpoint uses; its socket delivers to the stand-in schedulers."""

    def __init__(self, model_path, schedulers, **server_args):
        from sglang.srt.utils.aio_rwlock import RWLock
        from sglang.utils import TypeBasedDispatcher

        self.server_args = SimpleNamespace(**{
            "model_path": model_path, "trust_remote_code": False, "revision": None, "disable_cuda_graph": True,
            "pp_size": 1, "enable_two_batch_overlap": False, "tokenizer_worker_num": 1, "dp_size": len(schedulers),
            **server_args})
        self.model_update_lock = RWLock()
        self._result_dispatcher = TypeBasedDispatcher([])
        self.is_pause = False
        self.schedulers = schedulers
        self.send_to_scheduler = SimpleNamespace(send_pyobj=self._deliver)

    def _deliver(self, obj):
        for scheduler in self.schedulers:
            scheduler.inbox.append(pickle.loads(pickle.dumps(obj)))

    def auto_create_handle_loop(self):
        pass

    async def run_schedulers(self, stop: asyncio.Event):
        """Scheduler loops, and the tokenizer manager's loop handing their replies to the result dispatcher."""
        while not stop.is_set():
            for scheduler in self.schedulers:
                loop_once(scheduler)
                for out in scheduler.sent:
                    self._result_dispatcher(pickle.loads(pickle.dumps(out)))
                scheduler.sent = []
            await asyncio.sleep(0.001)


def switch_app(monkeypatch, tm, admin_api_key):
    from fastapi import FastAPI
    from sglang.srt.entrypoints import http_server
    from sglang.srt.utils.auth import add_api_key_middleware

    map_switch.apply_switch_endpoint(REGISTRY)
    (route,) = [r for r in http_server.app.router.routes if getattr(r, "path", None) == "/indexcache/map"]
    monkeypatch.setattr(http_server, "_global_state", SimpleNamespace(tokenizer_manager=tm))
    app = FastAPI()
    app.router.routes.append(route)
    add_api_key_middleware(app, api_key="user-key", admin_api_key=admin_api_key)
    return app


async def post(app, body, key="secret", during=None):
    """POST the switch while the stand-in schedulers run; ``during(tm)`` runs concurrently with it."""
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return await client.post("/indexcache/map", json=body, headers=headers)


def run_with_schedulers(tm, coro):
    async def main():
        stop = asyncio.Event()
        loops = asyncio.create_task(tm.run_schedulers(stop))
        try:
            return await asyncio.wait_for(coro, 20)
        finally:
            stop.set()
            await loops

    return asyncio.run(main())


@pytest.mark.parametrize("admin_key, key, code", [
    (None, "secret", 403),  # no --admin-api-key: closed
    ("secret", None, 401),
    ("secret", "user-key", 401),  # the ordinary API key is not enough
    ("secret", "wrong", 401),
])
def test_endpoint_needs_the_admin_key(served, monkeypatch, admin_key, key, code):
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, admin_key)
    response = run_with_schedulers(tm, post(app, {"index_topk_pattern": "FSSSFSSS"}, key=key))
    assert response.status_code == code
    assert roles(served.model) == STARTUP


@pytest.mark.parametrize("body, words", [
    ({"pattern": "FSSSFSSS"}, "unknown key"),
    ({"index_topk_pattern": "FSS"}, "index_topk_pattern"),
    ({"index_topk_pattern": "FFSSSSSS"}, "layers [1]"),
    ({"map": "no/such-map"}, "no/such-map"),
])
def test_endpoint_rejects_bad_maps_before_touching_schedulers(served, monkeypatch, body, words):
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")
    response = run_with_schedulers(tm, post(app, body))
    assert response.status_code == 400
    error = response.json()["error"]
    assert words in error and "Fix:" in error and "\n" not in error
    assert scheduler.flushes == 0 and roles(served.model) == STARTUP


def test_endpoint_refuses_with_cuda_graphs(served, monkeypatch):
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler], disable_cuda_graph=False)
    app = switch_app(monkeypatch, tm, "secret")
    response = run_with_schedulers(tm, post(app, {"index_topk_freq": 4}))
    assert response.status_code == 400 and "--disable-cuda-graph" in response.json()["error"]


def test_endpoint_drains_in_flight_requests_then_switches_every_rank(served, monkeypatch):
    ranks = [new_scheduler(served.model), new_scheduler(served.model)]
    tm = StandInTokenizerManager(served.model_path, ranks)
    app = switch_app(monkeypatch, tm, "secret")
    events = []

    async def scenario():
        request_done = asyncio.Event()

        async def in_flight_request():  # what every /generate holds for its whole life
            async with tm.model_update_lock.reader_lock:
                events.append("request started")
                await request_done.wait()
                events.append(f"request finished under {roles(served.model)}")

        request = asyncio.create_task(in_flight_request())
        await asyncio.sleep(0.01)
        switch = asyncio.create_task(post(app, {"index_topk_freq": 4, "index_skip_topk_offset": 1}))
        await asyncio.sleep(0.05)
        # The switch waits for the request: nothing was sent to the schedulers yet.
        assert all(s.flushes == 0 for s in ranks) and roles(served.model) == STARTUP
        events.append("request finishing")
        request_done.set()
        await request
        response = await switch
        events.append(f"switched to {roles(served.model)}")
        return response

    response = run_with_schedulers(tm, scenario())
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["switched"] and body["pattern"] == "FSSSFSSS" and len(body["dp_ranks"]) == 2
    assert all(state["pattern"] == "FSSSFSSS" for state in body["dp_ranks"])
    assert [s.flushes for s in ranks] == [1, 1]
    assert events == ["request started", "request finishing", f"request finished under {STARTUP}",
                      "switched to FSSSFSSS"]


def test_endpoint_is_reverted(served):
    from sglang.srt.entrypoints.http_server import app

    map_switch.apply_switch_endpoint(REGISTRY)
    assert any(getattr(r, "path", None) == "/indexcache/map" for r in app.router.routes)
    REGISTRY.revert()
    assert not any(getattr(r, "path", None) == "/indexcache/map" for r in app.router.routes)
