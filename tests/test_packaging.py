"""The wheel installs patches/, kernels/ and configs/ inside the sglang_indexcache namespace."""

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    # From a copy without build/: setuptools reuses a stale build/lib, which hides packages missing from the list.
    src = tmp_path_factory.mktemp("src") / "tree"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", ".git", ".venv*", ".gpu*",
                                                             "results", "__pycache__"))
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(src)],
        check=True, capture_output=True,
    )
    (wheel,) = out.glob("sglang_indexcache-*.whl")
    return zipfile.ZipFile(wheel)


@pytest.fixture(scope="module")
def wheel_names(wheel):
    return wheel.namelist()


def test_only_one_top_level_package(wheel, wheel_names):
    top = {n.split("/")[0] for n in wheel_names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"sglang_indexcache", "sglang_indexcache.pth"}
    # The start-up hook imports only what start-up already did; it arms when the process imports sglang.
    hook = wheel.read("sglang_indexcache.pth").decode()
    assert hook.startswith("import os, sys; exec(") and "IndexCacheStartupHook" in hook and hook.count("\n") == 1


def test_subpackages_and_data_are_inside(wheel_names):
    for name in [
        "sglang_indexcache/patches/__init__.py",
        "sglang_indexcache/kernels/__init__.py",
        "sglang_indexcache/configs/glm-5/searched-1of4.yaml",
        "sglang_indexcache/configs/deepseek-v3.2/uniform-1of4.yaml",
        "sglang_indexcache/configs/models/glm-5/config.json",
    ]:
        assert name in wheel_names


def test_console_script(wheel, wheel_names):
    (entry_points,) = [n for n in wheel_names if n.endswith(".dist-info/entry_points.txt")]
    text = wheel.read(entry_points).decode()
    assert "sglang-indexcache = sglang_indexcache.cli:main" in text
    assert "[sglang.srt.plugins]" in text and "sglang_indexcache.patches.autoload:load_plugin" in text


def test_every_source_module_is_in_the_wheel(wheel_names):
    """A subpackage missing from pyproject's list is silently left out of the wheel."""
    roots = {"sglang_indexcache": "sglang_indexcache", "patches": "sglang_indexcache/patches",
             "kernels": "sglang_indexcache/kernels"}
    expected = {
        f"{installed}/{path.relative_to(ROOT / src).as_posix()}"
        for src, installed in roots.items()
        for path in (ROOT / src).rglob("*.py")
    }
    missing = sorted(expected - set(wheel_names))
    assert not missing, f"not packaged: {missing}"
