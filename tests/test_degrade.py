"""Degrade per feature, fail closed for the core: an optional feature whose SGLang target is missing is switched
off with one warning and its endpoint says why (501); a missing core target still refuses the launch."""

import dataclasses
import logging
from types import SimpleNamespace

import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_indexcache.names import ENV_CAPTURE_DIR, ENV_PATTERN, ENV_SOURCE, ROUTE_STATUS, ROUTE_SWITCH  # noqa: E402
from sglang_indexcache.patches import REGISTRY, apply, revert, table  # noqa: E402
from sglang_indexcache.patches.table import CAPTURE, MAIN, STATUS, SWITCHING, WORKER  # noqa: E402
from sglang_indexcache.patches.targets import IncompatibleSGLang, Target  # noqa: E402

pytestmark = pytest.mark.sglang
KEY = "secret"


def gone(monkeypatch, patch_name: str) -> str:
    """This SGLang as it would be had the first target of ``patch_name`` been renamed; returns its dotted name."""
    rows = list(table.PATCHES)
    (i,) = [i for i, p in enumerate(rows) if p.name == patch_name]
    first = rows[i].targets[0]
    missing = Target(first.module, first.qualname + "_renamed")
    rows[i] = dataclasses.replace(rows[i], targets=(missing, *rows[i].targets[1:]))
    monkeypatch.setattr(table, "PATCHES", tuple(rows))
    return missing.dotted


@pytest.fixture
def server(monkeypatch):
    """The HTTP server's process: a map requested, its main patches applied by the loop on demand."""
    from sglang.srt.entrypoints import http_server

    monkeypatch.setenv(ENV_PATTERN, "FSSSFSSS")
    monkeypatch.setenv(ENV_SOURCE, "t.yaml")
    monkeypatch.delenv(ENV_CAPTURE_DIR, raising=False)

    async def get_internal_state():
        return [{"indexcache": {"pattern": "FSSSFSSS"}}]

    tm = SimpleNamespace(get_internal_state=get_internal_state, server_args=SimpleNamespace(admin_api_key=KEY))
    monkeypatch.setattr(http_server, "_global_state", SimpleNamespace(tokenizer_manager=tm))
    revert()
    yield
    revert()


def client():
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from sglang.srt.entrypoints.http_server import app as sglang_app

    app = FastAPI()
    app.router.routes.extend(r for r in sglang_app.router.routes
                             if getattr(r, "path", None) in (ROUTE_STATUS, ROUTE_SWITCH))
    return TestClient(app, headers={"Authorization": f"Bearer {KEY}"})


def test_every_optional_patch_names_its_feature_and_no_core_patch_does():
    for patch in table.PATCHES:
        assert (patch.feature in table.FEATURES) if not patch.core else patch.feature is None, patch.name
    assert {p.feature for p in table.PATCHES if not p.core} == set(table.FEATURES)


def test_missing_switching_target_leaves_the_server_up_and_the_endpoint_says_why(server, monkeypatch):
    missing = gone(monkeypatch, "map_switch")  # the schedulers' half, a worker patch
    apply(MAIN)  # the HTTP server starts: no refusal
    applied = {name for _, name in REGISTRY.applied()}
    assert {"server_args", "admin_endpoint", "map_switch_endpoint"} <= applied
    response = client().post(ROUTE_SWITCH, json={"map": "glm-5/searched-1of4"})
    assert response.status_code == 501
    assert response.json()["error"].startswith(f"runtime switching is unavailable on this SGLang: {missing} not found")
    status = client().get(ROUTE_STATUS)
    assert status.status_code == 200 and status.json()["dp_ranks"] == [{"pattern": "FSSSFSSS"}]
    features = status.json()["features"]
    assert features[STATUS] == "active" and features[CAPTURE] == "off"
    assert features[SWITCHING].startswith(f"runtime switching is unavailable on this SGLang: {missing} not found")


def test_status_without_its_scheduler_target_answers_501(server, monkeypatch):
    missing = gone(monkeypatch, "scheduler_status")
    apply(MAIN)
    response = client().get(ROUTE_STATUS)
    assert response.status_code == 501
    assert response.json()["error"].startswith(f"status is unavailable on this SGLang: {missing} not found")
    assert response.json()["features"][SWITCHING] == "active"


def test_an_endpoint_whose_own_target_is_missing_is_not_added(server, monkeypatch):
    gone(monkeypatch, "map_switch_endpoint")
    apply(MAIN)
    assert "map_switch_endpoint" not in {name for _, name in REGISTRY.applied()}
    assert client().post(ROUTE_SWITCH, json={}).status_code == 404
    assert client().get(ROUTE_STATUS).json()["features"][SWITCHING].startswith("runtime switching is unavailable")


def test_one_warning_per_unavailable_feature_names_it_and_the_target(monkeypatch, caplog):
    revert()
    missing = gone(monkeypatch, "map_switch")
    monkeypatch.setenv(ENV_CAPTURE_DIR, "/nonexistent")
    capture_missing = gone(monkeypatch, "topk_capture")
    with caplog.at_level(logging.WARNING, logger="sglang_indexcache"):
        table.warn_unavailable()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith(f"IndexCache: runtime switching is unavailable on this SGLang: {missing} not found")
    assert lines[1].startswith(f"IndexCache: capture is unavailable on this SGLang: {capture_missing} not found")
    assert all(line.endswith("serving the map without it") for line in lines)
    revert()


def test_capture_is_off_without_its_variable_and_then_probes_nothing(monkeypatch):
    revert()
    monkeypatch.delenv(ENV_CAPTURE_DIR, raising=False)
    gone(monkeypatch, "topk_capture")
    assert table.features()[CAPTURE] == "off"
    revert()


@pytest.fixture
def worker(monkeypatch):
    sglang_cpu.sglang_dist_env()
    monkeypatch.setenv(ENV_PATTERN, "FSSSFSSS")
    monkeypatch.setenv(ENV_SOURCE, "t.yaml")
    monkeypatch.delenv(ENV_CAPTURE_DIR, raising=False)
    revert()
    yield
    revert()


def test_worker_serves_the_map_without_an_unavailable_feature(worker, monkeypatch):
    gone(monkeypatch, "scheduler_status")
    apply(WORKER)
    applied = {name for _, name in REGISTRY.applied()}
    # a row SGLang does natively here (index_k_memory from 0.5.20) is not applied, with or without the feature
    assert {p.name for p in table.PATCHES if p.core and p.process == WORKER and not p.is_native()} <= applied
    assert "scheduler_status" not in applied and "map_switch" in applied


def test_missing_core_target_still_refuses_before_anything_is_replaced(worker, monkeypatch):
    missing = gone(monkeypatch, "attention_roles")
    with pytest.raises(IncompatibleSGLang, match=f"{missing} not found"):
        apply(WORKER)
    assert REGISTRY.applied() == []
    with pytest.raises(IncompatibleSGLang, match=f"{missing} not found"):
        table.check_worker_targets()  # what the main process runs before any worker starts
