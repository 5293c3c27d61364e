"""What the ``.pth`` start-up hook costs a Python process that never serves a map: modules and time.

Two site directories hold the same install, one with ``sglang_indexcache.pth`` and one without; fresh
interpreters add each as a site directory (running its ``.pth`` files) and report what they imported.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import results

WHAT = "startup_cost: what the .pth start-up hook costs a process that serves no map"

PTH = "sglang_indexcache.pth"
_MODULES = "import site, sys; site.addsitedir({site!r}); print('\\n'.join(sorted(sys.modules)))"


def site_pair(installed: Path, where: Path) -> tuple[Path, Path]:
    """``installed`` as is (with the hook) and a copy of it without the ``.pth``."""
    without = where / "without-hook"
    if not without.exists():
        shutil.copytree(installed, without, ignore=shutil.ignore_patterns(PTH))
    return installed, without


def modules_after_startup(site_dir: Path, env: dict | None = None) -> set[str]:
    out = subprocess.run([sys.executable, "-c", _MODULES.format(site=str(site_dir))], capture_output=True, text=True,
                         check=True, env=env)
    return set(out.stdout.split())


def startup_seconds(site_dir: Path, runs: int, env: dict | None = None) -> list[float]:
    code = f"import site; site.addsitedir({str(site_dir)!r})"
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append(time.perf_counter() - start)
    return times


def compare(with_hook: Path, without_hook: Path, runs: int, env: dict | None = None) -> dict:
    """Both site directories, alternating so that drift in the machine's load hits both alike."""
    times = {"with": [], "without": []}
    for _ in range(runs):
        times["with"] += startup_seconds(with_hook, 1, env)
        times["without"] += startup_seconds(without_hook, 1, env)
    extra = sorted(modules_after_startup(with_hook, env) - modules_after_startup(without_hook, env))
    median = {k: statistics.median(v) for k, v in times.items()}
    return {"runs": runs, "median_s": median, "overhead_s": median["with"] - median["without"],
            "extra_modules": extra, "times_s": times}


def run(out: Path, runs: int, source: Path) -> dict:
    """Install ``source`` into a fresh site directory, compare start-ups with and without its hook; prints a
    table and writes ``startup.json`` under ``out``."""
    work = Path(tempfile.mkdtemp())
    installed = work / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(installed), str(source)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SGLANG_INDEXCACHE")}
    result = compare(*site_pair(installed, work), runs, env)
    out.mkdir(parents=True, exist_ok=True)
    results.write(out / "startup.json", WHAT, {"out": out, "runs": runs}, {**result, "python": sys.version})
    print(f"\n| site dir | median start-up ({runs} runs) |\n|---|---|")
    print(f"| without the hook | {result['median_s']['without'] * 1e3:.1f} ms |")
    print(f"| with the hook | {result['median_s']['with'] * 1e3:.1f} ms |")
    print(f"| difference | {result['overhead_s'] * 1e3:+.1f} ms |")
    print(f"\nmodules imported beyond a plain start-up: {result['extra_modules'] or 'none'}")
    return result
