"""The installed start-up hook imports nothing when no map is requested, and still arms from any working directory."""

import subprocess
import sys
from pathlib import Path

import pytest
from test_autoload import CHECK_PATCHED, installed, run, site_dir  # noqa: F401 - fixtures

from sglang_indexcache.bench.startup import compare, modules_after_startup, site_pair

ROOT = Path(__file__).resolve().parents[1]


def test_hook_imports_nothing_beyond_a_plain_start_up(installed, tmp_path):  # noqa: F811
    with_hook, without_hook = site_pair(installed, tmp_path)
    assert (with_hook / "sglang_indexcache.pth").is_file() and not (without_hook / "sglang_indexcache.pth").exists()
    env = {"PATH": "/usr/bin:/bin"}
    assert modules_after_startup(with_hook, env) == modules_after_startup(without_hook, env)
    # ... while it is in place, waiting for sglang
    code = f"import site, sys; site.addsitedir({str(with_hook)!r}); print([type(f).__name__ for f in sys.meta_path])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert "IndexCacheStartupHook" in out.stdout


def test_startup_cost_report(installed, tmp_path):  # noqa: F811
    result = compare(*site_pair(installed, tmp_path), runs=2, env={"PATH": "/usr/bin:/bin"})
    assert result["extra_modules"] == [] and len(result["times_s"]["with"]) == 2


@pytest.mark.sglang
def test_arms_from_a_source_checkout_as_working_directory(site_dir):  # noqa: F811
    """``python -m`` puts the working directory first on sys.path; a source tree there has no patches subpackage
    under sglang_indexcache/, so the hook must import the installed package."""
    pytest.importorskip("sglang")
    out = subprocess.run(
        [sys.executable, "-c", "import sglang.srt.models.deepseek_v2; " + CHECK_PATCHED],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**_clean_env(), "PYTHONPATH": str(site_dir), "SGLANG_INDEXCACHE_MAP": "glm-5/searched-1of4"},
    )
    assert out.stdout.strip().endswith("PATCHED"), out.stderr[-2000:]


def _clean_env():
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_INDEXCACHE")}
    env.pop("SGLANG_EXTERNAL_MODEL_PACKAGE", None)
    return env
