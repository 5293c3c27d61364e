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

from sglang_indexcache.names import ENV_PATTERN, ENV_SOURCE  # noqa: E402
from sglang_indexcache.patches import (  # noqa: E402
    REGISTRY,
    apply_model_patches,
    revert,
    targets,  # noqa: E402
)
from sglang_indexcache.patches.main import map_switch_endpoint  # noqa: E402
from sglang_indexcache.patches.state import COUNTERS  # noqa: E402
from sglang_indexcache.patches.worker import map_switch  # noqa: E402
from sglang_indexcache.patches.worker.indexer_forward import ROLE  # noqa: E402
from sglang_indexcache.patches.worker.scheduler_status import status  # noqa: E402

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


GRAPH_RUNNER = targets.GRAPH_RUNNERS.resolve()  # graph_runner, decode_cuda_graph_runner from 0.5.14


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
        # Laid out as the installed SGLang lays out its scheduler and model runner (targets names them).
        self.tp_worker = SimpleNamespace(model_runner=SimpleNamespace(model=model, **{GRAPH_RUNNER: None}))
        sender = SimpleNamespace(send_output=lambda out, req: self.sent.append(out))
        if targets.TOKENIZER_SENDER.resolve() == "ipc_channels":
            self.ipc_channels = SimpleNamespace(send_to_tokenizer=sender)
        else:
            self.send_to_tokenizer = sender

    def send_output(self, out, req):
        self.sent.append(out)

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
                self.send_output(out, req)

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


def new_scheduler(model, **server_args):
    from sglang.srt.managers.scheduler import Scheduler

    scheduler = StandInScheduler(model, **server_args)
    Scheduler.init_request_dispatcher(scheduler)
    return scheduler


def loop_once(scheduler):
    from sglang.srt.managers.scheduler import Scheduler

    reqs, scheduler.inbox = scheduler.inbox, []
    Scheduler.process_input_requests(scheduler, reqs)


def crossed(message):
    return pickle.loads(pickle.dumps(message))  # messages cross a process boundary


def switch_req(pattern, source="new.yaml", rid=None):
    from sglang_indexcache.patches.switch_messages import SwitchMapReq

    return crossed(SwitchMapReq(pattern=pattern, source=source, rid=rid or f"switch-{pattern}-{source}"))


def commit_req(switch):
    from sglang_indexcache.patches.switch_messages import CommitSwitchMapReq

    return crossed(CommitSwitchMapReq(switch_rid=switch.rid, rid=f"commit-{switch.rid}"))


def switch_and_commit(scheduler, req):
    """Both phases on one scheduler that is idle: ready, then switched. Returns (ready, switched) answers."""
    scheduler.inbox.append(req)
    loop_once(scheduler)
    ready = scheduler.sent[-1]
    if ready.ok:
        scheduler.inbox.append(commit_req(req))
        loop_once(scheduler)
    return ready, scheduler.sent[-1]


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
    (ready,) = scheduler.sent
    assert ready.ok and ready.message == "ready" and ready.rid == "switch-FSSSFSSS-new.yaml"
    # Ready is not switched: only the commit, sent once every rank is ready, switches.
    assert roles(model) == STARTUP and scheduler.flushes == 0
    scheduler.inbox.append(commit_req(switch_req("FSSSFSSS")))
    loop_once(scheduler)
    reply = scheduler.sent[-1]
    assert reply.ok and reply.message == "switched" and reply.rid == "commit-switch-FSSSFSSS-new.yaml"
    assert roles(model) == "FSSSFSSS" and scheduler.flushes == 1
    assert sources(model)[3] == 0 and sources(model)[5] == 4
    assert reply.state["pattern"] == "FSSSFSSS" and reply.state["switches"] == 1
    assert reply.state["switchable_full_layers"] == [0, 2, 4, 6]
    assert COUNTERS.snapshot()["calls"] == {}  # counters restart with the map
    assert status()["map"] == "new.yaml"
    # And back: every start-up Full layer is still switchable.
    _, back = switch_and_commit(scheduler, switch_req(STARTUP, "startup.yaml"))
    assert back.ok and roles(model) == STARTUP and scheduler.flushes == 2


def test_layers_freed_at_startup_cannot_come_back(served):
    scheduler = new_scheduler(served.model)
    scheduler.inbox.append(switch_req("FFSSSSSS"))
    loop_once(scheduler)
    (reply,) = scheduler.sent
    assert not reply.ok and "layers [1]" in reply.message
    assert roles(served.model) == STARTUP and scheduler.flushes == 0


def test_refused_with_cuda_graphs_and_when_one_is_pending(served):
    scheduler = new_scheduler(served.model)
    setattr(scheduler.tp_worker.model_runner, GRAPH_RUNNER, object())
    scheduler.inbox.append(switch_req("FSSSFSSS"))
    loop_once(scheduler)
    assert not scheduler.sent[-1].ok and "--disable-cuda-graph" in scheduler.sent[-1].message
    setattr(scheduler.tp_worker.model_runner, GRAPH_RUNNER, None)
    scheduler.idle = False
    first = switch_req("FSSSFSSS")
    scheduler.inbox += [first, switch_req("FSFSFSSS")]
    loop_once(scheduler)
    assert "pending" in scheduler.sent[-1].message and roles(served.model) == STARTUP
    scheduler.idle = True
    loop_once(scheduler)
    assert scheduler.sent[-1].message == "ready"
    scheduler.inbox.append(commit_req(switch_req("FSFSFSSS")))  # a commit for another switch is refused
    loop_once(scheduler)
    assert not scheduler.sent[-1].ok and roles(served.model) == STARTUP
    scheduler.inbox.append(commit_req(first))
    loop_once(scheduler)
    assert scheduler.sent[-1].ok and roles(served.model) == "FSSSFSSS"


@pytest.mark.skipif(GRAPH_RUNNER != "decode_cuda_graph_runner", reason="one graph runner slot before 0.5.14")
def test_the_eager_runner_in_a_graph_slot_is_no_captured_graph(served):
    # SGLang 0.5.17+ with --disable-cuda-graph: the prefill slot holds the eager runner, decode holds None.
    scheduler = new_scheduler(served.model)
    runner = scheduler.tp_worker.model_runner
    runner.eager_runner = object()
    runner.prefill_cuda_graph_runner = runner.eager_runner
    runner.decode_cuda_graph_runner = None
    scheduler.inbox.append(switch_req("FSSSFSSS"))
    loop_once(scheduler)
    assert scheduler.sent[-1].message == "ready"
    scheduler.inbox.append(cancel_req("switch-FSSSFSSS-new.yaml"))
    loop_once(scheduler)
    runner.prefill_cuda_graph_runner = object()  # a captured prefill graph
    scheduler.inbox.append(switch_req("FSSSFSSS"))
    loop_once(scheduler)
    assert not scheduler.sent[-1].ok and "--disable-cuda-graph" in scheduler.sent[-1].message


def cancel_req(rid):
    from sglang_indexcache.patches.switch_messages import CancelSwitchMapReq

    return pickle.loads(pickle.dumps(CancelSwitchMapReq(rid=rid)))


def test_a_cancel_drops_the_pending_switch(served):
    scheduler = new_scheduler(served.model)
    scheduler.idle = False
    stuck = switch_req("FSSSFSSS", rid="stuck")
    scheduler.inbox.append(stuck)
    for _ in range(3):
        loop_once(scheduler)
    assert scheduler.sent == []
    scheduler.inbox.append(cancel_req("other"))  # a cancel for another switch changes nothing
    loop_once(scheduler)
    assert scheduler.sent == []
    scheduler.inbox.append(cancel_req("stuck"))
    loop_once(scheduler)
    (reply,) = scheduler.sent
    assert not reply.ok and "cancelled" in reply.message and reply.rid == "stuck"
    assert roles(served.model) == STARTUP and scheduler.flushes == 0
    scheduler.idle = True
    loop_once(scheduler)
    assert len(scheduler.sent) == 1  # the cancelled switch never happens later
    scheduler.inbox.append(commit_req(stuck))
    loop_once(scheduler)
    assert not scheduler.sent[-1].ok and roles(served.model) == STARTUP
    _, switched = switch_and_commit(scheduler, switch_req("FSSSFSSS"))  # a later switch is not blocked
    assert switched.ok and roles(served.model) == "FSSSFSSS"


def test_a_rank_that_was_ready_drops_the_switch_on_cancel(served):
    scheduler = new_scheduler(served.model)
    req = switch_req("FSSSFSSS")
    scheduler.inbox.append(req)
    loop_once(scheduler)
    assert scheduler.sent[-1].message == "ready"
    scheduler.inbox += [cancel_req(req.rid), commit_req(req)]
    loop_once(scheduler)
    assert len(scheduler.sent) == 2 and not scheduler.sent[-1].ok  # the cancel answers nothing; the commit fails
    assert roles(served.model) == STARTUP and scheduler.flushes == 0


def test_a_cancel_in_the_same_batch_wins_even_when_idle(served):
    """Every TP rank handles a loop iteration's messages alike: a switch and its cancel arriving together never
    switch, so no rank can switch while another drops it."""
    scheduler = new_scheduler(served.model)
    req = switch_req("FSSSFSSS", rid="late")
    scheduler.inbox += [req, cancel_req("late")]
    loop_once(scheduler)
    (reply,) = scheduler.sent
    assert not reply.ok and roles(served.model) == STARTUP and scheduler.flushes == 0


def test_prometheus_deltas_restart_with_the_counters(served):
    from prometheus_client import REGISTRY as PROM

    from sglang_indexcache.patches.worker.scheduler_status import Metrics

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


def switch_app(monkeypatch, tm, admin_api_key, middleware=True):
    """SGLang's app as launch_server builds it: with one tokenizer worker it adds its auth middleware, with
    ``--tokenizer-worker-num > 1`` (``middleware=False``) it adds none."""
    from fastapi import FastAPI
    from sglang.srt.entrypoints import http_server
    from sglang.srt.utils.auth import add_api_key_middleware

    map_switch_endpoint.apply_map_switch_endpoint(REGISTRY)
    (route,) = [r for r in http_server.app.router.routes if getattr(r, "path", None) == "/indexcache/map"]
    tm.server_args.api_key, tm.server_args.admin_api_key = "user-key", admin_api_key
    monkeypatch.setattr(http_server, "_global_state", SimpleNamespace(tokenizer_manager=tm))
    app = FastAPI()
    app.router.routes.append(route)
    if middleware:
        add_api_key_middleware(app, api_key="user-key", admin_api_key=admin_api_key)
    return app


async def post(app, body, key="secret", raw=None):
    """POST the switch (``raw``: these bytes as the body instead of ``body`` as JSON)."""
    import httpx

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if raw is not None:
            return await client.post("/indexcache/map", content=raw, headers=headers)
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


@pytest.mark.parametrize("middleware", [True, False], ids=["sglang-middleware", "no-middleware"])
@pytest.mark.parametrize("admin_key, key, code", [
    (None, "secret", 403),  # no --admin-api-key: closed
    (None, None, 403),
    ("secret", None, 401),
    ("secret", "user-key", 401),  # the ordinary API key is not enough
    ("secret", "wrong", 401),
])
def test_endpoint_needs_the_admin_key(served, monkeypatch, middleware, admin_key, key, code):
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, admin_key, middleware)
    response = run_with_schedulers(tm, post(app, {"index_topk_pattern": "FSSSFSSS"}, key=key))
    assert response.status_code == code
    assert roles(served.model) == STARTUP and scheduler.flushes == 0


DEEP = b"[" * 100_000 + b"]" * 100_000


@pytest.mark.parametrize("body, words", [
    ({"pattern": "FSSSFSSS"}, "unknown key"),
    ({"index_topk_pattern": "FSS"}, "index_topk_pattern"),
    ({"index_topk_pattern": "FFSSSSSS"}, "layers [1]"),
    ({"map": "no/such-map"}, "map: not a shipped map name"),
    ({"index_topk_freq": "4"}, "index_topk_freq: expected an integer, got a string"),
    ({"index_topk_freq": True}, "index_topk_freq: expected an integer, got a boolean"),
    ({"index_topk_freq": 4.0}, "index_topk_freq: expected an integer, got a number"),
    ({"index_topk_freq": [4]}, "index_topk_freq: expected an integer, got a list"),
    ({"index_topk_pattern": ["F", "S"]}, "index_topk_pattern: expected a string, got a list"),
    ({"map": 4}, "map: expected a string, got a number"),
    ({"indexer_types": "full"}, "indexer_types: expected a list, got a string"),
    ({"index_topk_freq": None}, "index_topk_freq: is null"),
    ({"index_skip_topk_offset": 3}, "index_skip_topk_offset: offset without freq"),
    ({"index_topk_pattern": "FSSSFSSS", "index_topk_freq": 4}, "several schedules given"),
    ({}, "no map given"),
    (["FSSSFSSS"], "not a JSON object but a list"),
    ("FSSSFSSS", "not a JSON object but a string"),
    (b"null", "not a JSON object but null"),
    (b"", "invalid JSON"),
    (b"{not json", "invalid JSON"),
    (b'{"index_topk_freq": 4, "index_topk_freq": 2}', "duplicate key 'index_topk_freq'"),
    (DEEP, "(json)"),
    (b'{"map": "' + b"x" * 70_000 + b'"}', "larger than 65536 bytes"),
    (b"\xff\xfe", "invalid JSON"),
])
def test_endpoint_rejects_bad_requests_with_one_line(served, monkeypatch, body, words):
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")
    raw = body if isinstance(body, bytes) else None
    response = run_with_schedulers(tm, post(app, body, raw=raw))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert words in error and "Fix:" in error and "\n" not in error
    assert scheduler.flushes == 0 and roles(served.model) == STARTUP


def test_map_files_only_from_the_operators_directory(served, monkeypatch, tmp_path):
    """A file inside SGLANG_INDEXCACHE_MAP_DIR switches; outside it, nothing is read and the answer is the same
    whether the path exists or not; the file's contents never appear in an error."""
    from sglang_indexcache.names import ENV_MAP_DIR

    maps, outside = tmp_path / "maps", tmp_path / "private"
    maps.mkdir()
    outside.mkdir()
    (maps / "quarter.yaml").write_text("model: {architectures: [DeepseekV3ForCausalLM], num_layers: 8}\n"
                                       "map: {pattern: FSSSFSSS}\nprovenance: {method: uniform}\n")
    (outside / "secret.yaml").write_text("api_token: hunter2\n")
    (maps / "link.yaml").symlink_to(outside / "secret.yaml")
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")

    def answer(ref):
        response = run_with_schedulers(tm, post(app, {"map": ref}))
        return response.status_code, response.json()["error"].replace(ref, "REF")

    without_dir = answer(str(maps / "quarter.yaml"))
    assert without_dir[0] == 400 and "started without SGLANG_INDEXCACHE_MAP_DIR" in without_dir[1]
    monkeypatch.setenv(ENV_MAP_DIR, str(maps))
    refusals = [answer(ref) for ref in (str(outside / "secret.yaml"), str(outside / "missing.yaml"),
                                        "../private/secret.yaml", "../private/missing.yaml", "link.yaml",
                                        "/dev/zero", "x" * 5000)]
    assert all(r == refusals[0] for r in refusals[:-1]) and refusals[0][0] == 400, refusals
    assert refusals[-1][0] == 400
    assert not any("hunter2" in r[1] or "api_token" in r[1] for r in refusals)
    assert scheduler.flushes == 0
    response = run_with_schedulers(tm, post(app, {"map": "quarter.yaml"}))
    assert response.status_code == 200, response.text
    assert roles(served.model) == "FSSSFSSS"


def test_map_file_is_read_off_the_event_loop_with_a_size_cap(served, monkeypatch, tmp_path):
    import threading

    from sglang_indexcache.names import ENV_MAP_DIR

    monkeypatch.setenv(ENV_MAP_DIR, str(tmp_path))
    (tmp_path / "huge.yaml").write_text("provenance: {notes: " + "x" * (2 << 20) + "}\n")
    threads = []
    validate = map_switch_endpoint.validate_switch
    monkeypatch.setattr(map_switch_endpoint, "validate_switch",
                        lambda *a: threads.append(threading.get_ident()) or validate(*a))
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")
    loop_thread = threading.get_ident()  # asyncio.run runs the event loop on this thread
    response = run_with_schedulers(tm, post(app, {"map": "huge.yaml"}))
    assert response.status_code == 400 and "larger than 1048576 bytes" in response.json()["error"]
    assert threads and threads[0] != loop_thread


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


def test_a_stuck_switch_times_out_releases_the_lock_and_keeps_the_old_map(served, monkeypatch):
    from sglang_indexcache.names import ENV_SWITCH_TIMEOUT

    monkeypatch.setenv(ENV_SWITCH_TIMEOUT, "0.3")
    scheduler = new_scheduler(served.model)
    scheduler.idle = False  # never becomes idle
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")

    async def scenario():
        response = await post(app, {"index_topk_pattern": "FSSSFSSS"})
        return response, await tm.model_update_lock.is_locked()

    response, locked = run_with_schedulers(tm, scenario())
    assert response.status_code == 503, response.text
    error = response.json()["error"]
    assert "within 0.3 s" in error and "cancelled" in error and "startup.yaml" in error
    assert not locked and roles(served.model) == STARTUP and scheduler.flushes == 0
    scheduler.idle = True
    for _ in range(3):  # the cancelled switch stays cancelled
        loop_once(scheduler)
    assert roles(served.model) == STARTUP
    response = run_with_schedulers(tm, post(app, {"index_topk_pattern": "FSSSFSSS"}))
    assert response.status_code == 200, response.text  # nothing of the stuck switch is left behind
    assert roles(served.model) == "FSSSFSSS"


def test_a_rank_that_times_out_keeps_every_rank_on_the_old_map(served, monkeypatch):
    from sglang_indexcache.names import ENV_SWITCH_TIMEOUT

    monkeypatch.setenv(ENV_SWITCH_TIMEOUT, "0.3")
    ranks = [new_scheduler(served.model), new_scheduler(served.model)]
    ranks[1].idle = False
    tm = StandInTokenizerManager(served.model_path, ranks)
    response = run_with_schedulers(tm, post(switch_app(monkeypatch, tm, "secret"), {"index_topk_pattern": "FSSSFSSS"}))
    assert response.status_code == 503 and "cancelled" in response.json()["error"]
    # The rank that was ready did not switch alone: no rank switches unless every rank is ready.
    assert [s.flushes for s in ranks] == [0, 0] and not response.json()["switched"]
    assert roles(served.model) == STARTUP
    assert all(getattr(s, map_switch.PENDING, None) is None for s in ranks)


def test_a_rank_that_refuses_keeps_every_rank_on_the_old_map(served, monkeypatch):
    ranks = [new_scheduler(served.model), new_scheduler(served.model)]
    setattr(ranks[1].tp_worker.model_runner, GRAPH_RUNNER, object())  # this rank refuses
    tm = StandInTokenizerManager(served.model_path, ranks)
    response = run_with_schedulers(tm, post(switch_app(monkeypatch, tm, "secret"), {"index_topk_pattern": "FSSSFSSS"}))
    assert response.status_code == 409 and "--disable-cuda-graph" in response.json()["error"]
    for scheduler in ranks:  # the cancel sent with the answer reaches the ranks in their next iteration
        loop_once(scheduler)
    assert [s.flushes for s in ranks] == [0, 0] and roles(served.model) == STARTUP
    assert all(getattr(s, map_switch.PENDING, None) is None for s in ranks)


def test_requests_that_never_finish_time_the_switch_out(served, monkeypatch):
    from sglang_indexcache.names import ENV_SWITCH_TIMEOUT

    monkeypatch.setenv(ENV_SWITCH_TIMEOUT, "0.2")
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")

    async def scenario():
        release = asyncio.Event()

        async def endless_request():
            async with tm.model_update_lock.reader_lock:
                await release.wait()

        request = asyncio.create_task(endless_request())
        await asyncio.sleep(0.01)
        response = await post(app, {"index_topk_pattern": "FSSSFSSS"})
        async with tm.model_update_lock.reader_lock:  # new requests get in again
            pass
        release.set()
        await request
        return response

    response = run_with_schedulers(tm, scenario())
    assert response.status_code == 503 and "requests in flight did not finish within 0.2 s" in response.json()["error"]
    assert scheduler.flushes == 0 and scheduler.inbox == [] and roles(served.model) == STARTUP


def test_a_second_switch_while_one_runs_is_refused(served, monkeypatch):
    from sglang_indexcache.names import ENV_SWITCH_TIMEOUT

    monkeypatch.setenv(ENV_SWITCH_TIMEOUT, "5")
    scheduler = new_scheduler(served.model)
    scheduler.idle = False
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    app = switch_app(monkeypatch, tm, "secret")

    sent = []
    deliver = tm.send_to_scheduler.send_pyobj
    tm.send_to_scheduler.send_pyobj = lambda obj: (sent.append(obj), deliver(obj))[1]

    async def scenario():
        first = asyncio.create_task(post(app, {"index_topk_pattern": "FSSSFSSS"}))
        while not sent:  # the first switch has been validated and reached the schedulers
            await asyncio.sleep(0.01)
        second = await post(app, {"index_topk_pattern": "FSFSFSSS"})
        scheduler.idle = True
        return await first, second

    first, second = run_with_schedulers(tm, scenario())
    assert second.status_code == 409 and "in progress" in second.json()["error"]
    assert first.status_code == 200 and roles(served.model) == "FSSSFSSS"


@pytest.mark.parametrize("value", ["0", "-1", "soon", "nan", "inf"])
def test_a_bad_switch_timeout_is_a_bad_request(served, monkeypatch, value):
    from sglang_indexcache.names import ENV_SWITCH_TIMEOUT

    monkeypatch.setenv(ENV_SWITCH_TIMEOUT, value)
    scheduler = new_scheduler(served.model)
    tm = StandInTokenizerManager(served.model_path, [scheduler])
    response = run_with_schedulers(tm, post(switch_app(monkeypatch, tm, "secret"), {"index_topk_freq": 4}))
    assert response.status_code == 400 and ENV_SWITCH_TIMEOUT in response.json()["error"]


def test_endpoint_is_reverted(served):
    from sglang.srt.entrypoints.http_server import app

    map_switch_endpoint.apply_map_switch_endpoint(REGISTRY)
    assert any(getattr(r, "path", None) == "/indexcache/map" for r in app.router.routes)
    REGISTRY.revert()
    assert not any(getattr(r, "path", None) == "/indexcache/map" for r in app.router.routes)
