"""What the ``.pth`` start-up hook costs a Python process that never serves a map: modules and time.

Two site directories hold the same install, one with ``sglang_indexcache.pth`` and one without; fresh
interpreters add each as a site directory (running its ``.pth`` files) and report what they imported.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

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
