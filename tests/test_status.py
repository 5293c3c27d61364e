"""Operators see the active map and the counters: SGLang's internal state, GET /indexcache (admin), Prometheus."""

import time
from types import SimpleNamespace

import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_indexcache import LayerMap  # noqa: E402
from sglang_indexcache.patches import REGISTRY, revert  # noqa: E402
from sglang_indexcache.patches.main.admin_endpoint import apply_admin_endpoint  # noqa: E402
from sglang_indexcache.patches.process_map import plan  # noqa: E402
from sglang_indexcache.patches.state import COUNTERS, reset, set_active  # noqa: E402
from sglang_indexcache.patches.worker.scheduler_status import Metrics, apply_scheduler_status, status  # noqa: E402

pytestmark = pytest.mark.sglang


@pytest.fixture
def active():
    reset()
    set_active(plan(LayerMap("FSSSFSSS", source="q.yaml"), 8, stage=(0, 8), tbo_start=None), rank=0)
    yield
    revert()


def test_scheduler_state_carries_the_map_and_counters(active, monkeypatch):
    from sglang.srt.managers.io_struct import GetInternalStateReqOutput
    from sglang.srt.managers.scheduler import Scheduler

    def stand_in(self, recv_req):  # SGLang's reads the whole scheduler; the patch only adds to its output
        return GetInternalStateReqOutput(internal_state={})

    monkeypatch.setattr(Scheduler, "get_internal_state", stand_in)
    apply_scheduler_status(REGISTRY)
    COUNTERS.record(0, ran=True)
    COUNTERS.record(1, ran=False)
    state = Scheduler.get_internal_state(None, None).internal_state["indexcache"]
    assert state["pattern"] == "FSSSFSSS" and state["full_layers"] == 2 and state["map"] == "q.yaml"
    assert state["counters"]["calls"] == {0: 1} and state["counters"]["skips"] == {1: 1}
    set_active(None, rank=0)
    assert "indexcache" not in Scheduler.get_internal_state(None, None).internal_state


def endpoint_app(admin_api_key, middleware=True):
    """A fresh FastAPI app with our route and, with ``middleware``, SGLang's own auth middleware configured as
    launch_server does with one tokenizer worker (with several it installs none)."""
    from fastapi import FastAPI
    from sglang.srt.utils.auth import add_api_key_middleware

    apply_admin_endpoint(REGISTRY)
    from sglang.srt.entrypoints.http_server import app as sglang_app

    (route,) = [r for r in sglang_app.router.routes if getattr(r, "path", None) == "/indexcache"]
    app = FastAPI()
    app.router.routes.append(route)
    if middleware:
        add_api_key_middleware(app, api_key=None, admin_api_key=admin_api_key)
    return app


def serve_state(monkeypatch, admin_key):
    from sglang.srt.entrypoints import http_server

    async def get_internal_state():
        return [{"indexcache": status()}, {"other": 1}]

    tm = SimpleNamespace(get_internal_state=get_internal_state, server_args=SimpleNamespace(admin_api_key=admin_key))
    monkeypatch.setattr(http_server, "_global_state", SimpleNamespace(tokenizer_manager=tm))


# With --tokenizer-worker-num > 1 SGLang installs no auth middleware: the endpoint must refuse by itself.
@pytest.mark.parametrize("middleware", [True, False], ids=["sglang-middleware", "no-middleware"])
@pytest.mark.parametrize("admin_key, header, code", [
    (None, None, 403),  # no --admin-api-key: the endpoint is closed
    (None, "Bearer anything", 403),
    ("secret", None, 401),
    ("secret", "Bearer wrong", 401),
    ("secret", "secret", 401),  # not a bearer token
    ("secret", "Bearer secret", 200),
])
def test_admin_endpoint(monkeypatch, active, middleware, admin_key, header, code):
    from fastapi.testclient import TestClient

    serve_state(monkeypatch, admin_key)
    client = TestClient(endpoint_app(admin_key, middleware))
    response = client.get("/indexcache", headers={"Authorization": header} if header else {})
    assert response.status_code == code
    if code == 200:
        ranks = response.json()["dp_ranks"]
        assert ranks[0]["pattern"] == "FSSSFSSS" and ranks[1] is None
    else:
        assert "dp_ranks" not in response.json()


def test_admin_endpoint_is_reverted(active):
    from sglang.srt.entrypoints.http_server import app

    apply_admin_endpoint(REGISTRY)
    assert any(getattr(r, "path", None) == "/indexcache" for r in app.router.routes)
    REGISTRY.revert()
    assert not any(getattr(r, "path", None) == "/indexcache" for r in app.router.routes)


def test_prometheus_counters_follow_the_counters(active):
    from prometheus_client import REGISTRY as PROM

    metrics = Metrics(rank=3, interval_s=10)
    try:
        COUNTERS.record(0, ran=True)
        COUNTERS.record(2, ran=False)
        assert metrics.maybe_flush(now=100.0)
        sample = lambda name, layer: PROM.get_sample_value(name, {"rank": "3", "layer": layer})  # noqa: E731
        assert sample("sglang:indexcache_indexer_calls_total", "0") == 1
        assert sample("sglang:indexcache_indexer_skips_total", "2") == 1
        assert PROM.get_sample_value("sglang:indexcache_full_layers", {"rank": "3"}) == 2
        COUNTERS.record(0, ran=True)
        assert not metrics.maybe_flush(now=105.0)  # at most once per interval
        assert sample("sglang:indexcache_indexer_calls_total", "0") == 1
        assert metrics.maybe_flush(now=111.0)
        assert sample("sglang:indexcache_indexer_calls_total", "0") == 2
    finally:
        for metric in (metrics.calls, metrics.skips, metrics.full):
            PROM.unregister(metric)


def test_metrics_are_published_with_no_forward_running(active):
    """Counts recorded before the server goes idle reach Prometheus although no later forward runs Python
    (CUDA-graph replays run none): the publishing thread does it."""
    from prometheus_client import REGISTRY as PROM

    metrics = Metrics(rank=5, interval_s=0.05)
    try:
        COUNTERS.record(4, ran=True)
        metrics.start()
        deadline = time.monotonic() + 5
        sample = lambda: PROM.get_sample_value("sglang:indexcache_indexer_calls_total",  # noqa: E731
                                               {"rank": "5", "layer": "4"})
        while sample() != 1 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sample() == 1
        COUNTERS.record(4, ran=True)
        while sample() != 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert sample() == 2
    finally:
        metrics.stop()
        for metric in (metrics.calls, metrics.skips, metrics.full):
            PROM.unregister(metric)


def test_metrics_check_reads_what_prometheus_exposes(active):
    """bench.metrics_check (scripts/metrics_check.py) parses the exposition prometheus_client writes and finds a
    missed flush."""
    import json

    from prometheus_client import REGISTRY as PROM
    from prometheus_client import generate_latest

    from sglang_indexcache.bench import metrics_check
    metrics = Metrics(rank=0, interval_s=10)
    try:
        for _ in range(3):
            for layer, role in enumerate("FSSSFSSS"):
                COUNTERS.record(layer, ran=role == "F")
        metrics.maybe_flush(now=100.0)
        state = json.loads(json.dumps(status()))  # as GET /indexcache delivers it: layer keys become strings
        prom = metrics_check.indexcache_samples(generate_latest(PROM).decode())
        rows, ok = metrics_check.check("FSSSFSSS", state, prom)
        assert ok and [r["prom_calls"] for r in rows[:8]] == [3, 0, 0, 0, 3, 0, 0, 0]
        COUNTERS.record(4, ran=True)  # counted, not yet published
        rows, ok = metrics_check.check("FSSSFSSS", json.loads(json.dumps(status())), prom)
        assert not ok and [r["layer"] for r in rows if not r["ok"]] == [4]
        assert not metrics_check.check("FFSSFSSS", state, prom)[1]  # a map other than the one that ran is caught
    finally:
        for metric in (metrics.calls, metrics.skips, metrics.full):
            PROM.unregister(metric)
