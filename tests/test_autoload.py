"""The installed start-up hooks arm IndexCache in fresh interpreters, and only when asked (subprocess tests)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sglang_indexcache.names import WORKER_PACKAGE

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
CHECK_PATCHED = "from sglang.srt.layers.attention.nsa.nsa_indexer import Indexer; " \
                "print('PATCHED' if getattr(Indexer.forward, '__indexcache_patch__', None) else 'PLAIN')"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The package installed as pip installs it, with its .pth."""
    target = tmp_path_factory.mktemp("site")
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True)
    assert (target / "sglang_indexcache.pth").is_file()
    return target


@pytest.fixture(scope="module")
def site_dir(installed, tmp_path_factory):
    """A sitecustomize that installs the test stubs, then adds the install as a site dir (running its .pth)."""
    return _sitecustomize(tmp_path_factory.mktemp("custom"), f"site.addsitedir({str(installed)!r})")


@pytest.fixture(scope="module")
def path_only_dir(installed, tmp_path_factory):
    """The same install on sys.path only: its .pth does not run."""
    return _sitecustomize(tmp_path_factory.mktemp("plain"), f"sys.path.append({str(installed)!r})")


def _sitecustomize(custom, add_install):
    (custom / "sitecustomize.py").write_text(textwrap.dedent(f"""
        import sys, site
        sys.path.insert(0, {str(TESTS)!r})
        import sglang_cpu
        sglang_cpu.install_import_stubs()
        {add_install}
        import os
        if os.environ.get("INDEXCACHE_TEST_FAKE_HOPPER"):  # ServerArgs picks its DSA defaults for a Hopper GPU
            import torch
            torch.cuda.get_device_capability = lambda *a, **k: (9, 0)
    """))
    return custom


def run(site_dir, code_or_args, env=None, module=False):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_INDEXCACHE")}
    environ.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    environ.update(PYTHONPATH=str(site_dir), **(env or {}))
    args = code_or_args if module else ["-c", code_or_args]
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=environ, cwd=site_dir,
                          timeout=300)


def last_line(stderr: str) -> str:
    """The last line a launch wrote, SGLang's own log of its process clean-up on the way out (0.5.20+) aside."""
    return [line for line in stderr.strip().splitlines() if "kill_process_tree called" not in line][-1]


def test_nothing_armed_without_a_request(site_dir):
    out = run(site_dir, "import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED)
    assert out.stdout.strip().endswith("PLAIN"), out.stderr[-2000:]


def test_env_request_patches_on_import(site_dir):
    out = run(site_dir, "import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED,
              env={"SGLANG_INDEXCACHE_MAP": "glm-5/searched-1of4"})
    assert out.stdout.strip().endswith("PATCHED"), out.stderr[-2000:]


def test_disable_wins(site_dir):
    out = run(site_dir, "import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED,
              env={"SGLANG_INDEXCACHE_MAP": "glm-5/searched-1of4", "SGLANG_INDEXCACHE_DISABLE": "1"})
    assert out.stdout.strip().endswith("PLAIN"), out.stderr[-2000:]


def test_registry_route_patches_workers(site_dir):
    """SGLang's model registry imports our worker package, which patches even without the .pth hook."""
    out = run(site_dir, "import sglang.srt.models.registry; " + CHECK_PATCHED,
              env={"SGLANG_INDEXCACHE_DISABLE": "1", "SGLANG_EXTERNAL_MODEL_PACKAGE": WORKER_PACKAGE})
    assert out.stdout.strip().endswith("PATCHED"), out.stderr[-2000:]


@pytest.mark.parametrize("how", ["env", "override", "serve"])
def test_bad_map_stops_launch_server_before_weights(site_dir, tmp_path, how):
    import sglang_cpu

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(sglang_cpu.tiny_dsa_config()))
    base = ["--model-path", str(model), "--load-format", "dummy", "--skip-tokenizer-init", "--device", "cuda"]
    env = {}
    if how == "env":
        env["SGLANG_INDEXCACHE_MAP"] = "glm-5/searched-1of4"
        args = ["-m", "sglang.launch_server", *base]
    elif how == "override":
        args = ["-m", "sglang.launch_server", *base, "--json-model-override-args", '{"index_topk_pattern": "FFSX"}']
    else:
        args = ["-m", "sglang_indexcache", "serve", "--map", "glm-5/searched-1of4", *base]
    env["INDEXCACHE_TEST_FAKE_HOPPER"] = "1"
    out = run(site_dir, args, env=env, module=True)
    assert out.returncode == 2, out.stderr[-3000:]
    last = last_line(out.stderr)
    assert last.startswith("error: ") and "Fix: " in last and "Traceback" not in out.stderr
    assert ("model.architectures" if how != "override" else "index_topk_pattern") in last


def test_entry_point_for_newer_sglang(path_only_dir):
    """Newer SGLang loads plugins from the ``sglang.srt.plugins`` entry-point group in every process."""
    request = {"SGLANG_INDEXCACHE_MAP": "glm-5/searched-1of4"}
    no_plugin = run(path_only_dir, "import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED, env=request)
    assert no_plugin.stdout.strip().endswith("PLAIN")  # without the .pth nothing arms by itself
    code = ("from importlib.metadata import entry_points; "
            "(ep,) = [e for e in entry_points(group='sglang.srt.plugins') if e.name == 'indexcache']; "
            "load = ep.load(); load(); load(); import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED)
    assert run(path_only_dir, code).stdout.strip().endswith("PLAIN")  # loaded, but nothing requested
    out = run(path_only_dir, code, env=request)
    assert out.stdout.strip().endswith("PATCHED"), out.stderr[-2000:]


def test_allowlist_leaving_us_out_while_a_map_is_requested(site_dir):
    """SGLang's loader skips a plugin SGLANG_PLUGINS does not list (an INFO line): the .pth hook, which runs
    regardless, refuses instead of letting the model be served without the map. SGLang without a loader
    ignores the variable, and so do we."""
    from sglang_indexcache.patches.autoload import has_plugin_loader

    out = run(site_dir, "import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED,
              env={"SGLANG_INDEXCACHE_MAP": "glm-5/searched-1of4", "SGLANG_PLUGINS": "other"})
    if has_plugin_loader():
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
        last = out.stderr.strip().splitlines()[-1]
        assert last.startswith("error: SGLANG_PLUGINS: other: leaves out the 'indexcache' plugin") and "Fix: " in last
    else:
        assert out.returncode == 0 and out.stdout.strip().endswith("PATCHED"), out.stderr[-2000:]
