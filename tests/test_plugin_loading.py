"""Loading through SGLang's own plugin loader (0.5.11+, ``sglang.srt.plugins``), in-process with the real loader:
it finds our entry point, honours ``SGLANG_PLUGINS``, and cannot swallow a refusal; the ``.pth`` route refuses
an allowlist that leaves us out while a map is to be served."""

import json
import os
import sys
from importlib.metadata import entry_points
from types import SimpleNamespace

import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_indexcache.errors import MapError  # noqa: E402
from sglang_indexcache.names import (  # noqa: E402
    ENV_DISABLE,
    ENV_EXTERNAL_PACKAGE,
    ENV_MAP,
    ENV_PATTERN,
    ENV_PLUGINS,
    PLUGIN_GROUP,
    PLUGIN_NAME,
)
from sglang_indexcache.patches import autoload, post_import, revert  # noqa: E402
from sglang_indexcache.patches.state import STATE  # noqa: E402

pytestmark = pytest.mark.sglang
HAS_LOADER = autoload.has_plugin_loader()
needs_loader = pytest.mark.skipif(not HAS_LOADER, reason="this SGLang has no plugin loader (0.5.10.post1)")


def test_entry_point_is_the_one_sglang_loads():
    (ep,) = [e for e in entry_points(group=PLUGIN_GROUP) if e.name == PLUGIN_NAME]
    assert ep.load() is autoload.load_plugin


def test_plugin_loader_is_detected_where_sglang_has_it():
    import importlib.util

    assert HAS_LOADER == (importlib.util.find_spec(PLUGIN_GROUP) is not None)


@pytest.fixture
def loader(monkeypatch):
    """SGLang's ``load_plugins`` as a fresh process runs it, with what arming registers recorded, not run."""
    plugins = pytest.importorskip(PLUGIN_GROUP)
    for name in (ENV_MAP, ENV_PATTERN, ENV_DISABLE, ENV_PLUGINS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(sys, "orig_argv", ["python"])
    monkeypatch.setattr(plugins, "_plugins_loaded", False)
    watched = []
    monkeypatch.setattr(post_import, "when_imported", lambda name, callback: watched.append(name))
    revert()
    yield SimpleNamespace(load=plugins.load_plugins, watched=watched)
    revert()


@needs_loader
@pytest.mark.parametrize("allowlist", [None, "other,indexcache"])
def test_loader_arms_for_a_request(loader, monkeypatch, allowlist):
    monkeypatch.setenv(ENV_MAP, "glm-5/searched-1of4")
    if allowlist:
        monkeypatch.setenv(ENV_PLUGINS, allowlist)
    loader.load()
    assert STATE.armed
    assert "sglang.srt.models.deepseek_v2" in loader.watched and "sglang.srt.server_args" in loader.watched
    before = list(loader.watched)
    autoload.on_sglang_import()  # the .pth route in the same process: already armed, nothing registered again
    assert loader.watched == before


@needs_loader
def test_loader_without_a_request_only_watches_server_args(loader):
    loader.load()
    assert not STATE.armed and loader.watched == ["sglang.srt.server_args"]


@needs_loader
def test_allowlist_leaving_us_out_is_skipped_by_the_loader_and_refused_by_the_pth_route(loader, monkeypatch, capsys):
    monkeypatch.setenv(ENV_MAP, "glm-5/searched-1of4")
    monkeypatch.setenv(ENV_PLUGINS, "other")
    loader.load()
    assert not STATE.armed and loader.watched == []  # SGLang skipped us: without the .pth nothing would run
    with pytest.raises(SystemExit) as e:
        autoload.on_sglang_import()  # what the .pth hook calls when the process imports sglang
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: SGLANG_PLUGINS: other: leaves out the 'indexcache' plugin while an IndexCache map "
                           "is requested") and "Fix: add indexcache to SGLANG_PLUGINS" in line


def test_allowlist_is_only_an_error_with_a_request(monkeypatch):
    monkeypatch.setenv(ENV_PLUGINS, "other")
    autoload.check_allowlist({ENV_PLUGINS: "indexcache, other"}, "a map is requested")
    autoload.check_allowlist({}, "a map is requested")
    if HAS_LOADER:
        with pytest.raises(MapError, match="leaves out the 'indexcache' plugin"):
            autoload.check_allowlist({ENV_PLUGINS: "other"}, "a map is requested")
    else:  # SGLang without a loader ignores the variable, and so do we
        autoload.check_allowlist({ENV_PLUGINS: "other"}, "a map is requested")


@needs_loader
def test_a_refusal_under_the_real_loader_stops_the_process_with_exit_2(loader, monkeypatch, capsys):
    """The loader catches ``Exception`` around every plugin; our refusal is a ``SystemExit`` and gets through."""
    from sglang.srt.models import deepseek_v2

    monkeypatch.setattr(post_import, "when_imported", post_import.PostImportFinder().watch)  # really apply
    monkeypatch.delattr(deepseek_v2, "DeepseekV2AttentionMLA")  # a core target this SGLang would lack
    monkeypatch.setenv(ENV_PATTERN, "FSSSFSSS")
    with pytest.raises(SystemExit) as e:
        loader.load()
    assert e.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: IndexCache cannot patch this SGLang: ") and "not found" in line


@needs_loader
def test_any_failure_under_the_real_loader_stops_the_process(loader, monkeypatch, capsys):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(autoload, "arm", broken)
    monkeypatch.setenv(ENV_PATTERN, "FSSSFSSS")
    with pytest.raises(SystemExit) as e:
        loader.load()
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == "error: IndexCache could not arm (RuntimeError: boom)"


def test_a_checkpoint_schedule_with_us_left_out_is_refused_where_the_loader_exists(tmp_path, monkeypatch):
    """No request, but the checkpoint states a schedule: the main process would serve it, so the allowlist
    matters as much as for a request."""
    from sglang_indexcache.patches.main.server_args import resolve_in_main_process

    ours = (ENV_MAP, ENV_PATTERN, ENV_DISABLE, ENV_EXTERNAL_PACKAGE)
    environ = {k: v for k, v in os.environ.items() if k not in ours}
    monkeypatch.setattr(os, "environ", {**environ, ENV_PLUGINS: "other"})  # what a served map exports stays here
    watched = []
    monkeypatch.setattr(post_import, "when_imported", lambda name, callback: watched.append(name))
    config = sglang_cpu.tiny_dsa_config(index_topk_freq=2, index_skip_topk_offset=1)
    (tmp_path / "config.json").write_text(json.dumps(config))
    server_args = SimpleNamespace(json_model_override_args="{}", model_path=str(tmp_path), trust_remote_code=False,
                                  revision=None, load_format="dummy")
    revert()
    try:
        if HAS_LOADER:
            with pytest.raises(MapError, match="while the checkpoint states a sharing schedule"):
                resolve_in_main_process(server_args)
        else:  # SGLang without a loader: served as the checkpoint states it
            resolve_in_main_process(server_args)
            assert os.environ[ENV_PATTERN] == "FSFSFSFS" and STATE.armed
    finally:
        revert()
