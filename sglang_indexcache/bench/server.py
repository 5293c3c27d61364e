"""Start and stop ``python -m sglang.launch_server`` for a benchmark, failing fast if it dies; write the map
file a server is started with."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from ..layer_map import LayerMap
from .serverinfo import check_release, served_version


def num_layers(model_dir: str | Path) -> int:
    return json.loads((Path(model_dir) / "config.json").read_text())["num_hidden_layers"]


def map_file(directory: Path, name: str, pattern: str, architectures: list[str] | None = None) -> str:
    """Write ``pattern`` as the map YAML ``directory/name.yaml`` for a model of ``architectures`` (default a
    DeepSeek-V3-architecture one); its path."""
    path = Path(directory) / f"{name}.yaml"
    path.write_text(LayerMap(pattern).to_yaml(architectures or ["DeepseekV3ForCausalLM"], method="uniform"))
    return str(path)


class Server:
    def __init__(self, name: str, model: str, port: int, args: list[str], env: dict | None = None,
                 logdir: Path = Path("."), ready_timeout: float = 900, sglang: str | None = None):
        self.name, self.port = name, port
        self.sglang = sglang  # the SGLang release the server must report once healthy (None: any)
        self.url = f"http://127.0.0.1:{port}"
        self.cmd = [sys.executable, "-m", "sglang.launch_server", "--model-path", model, "--port", str(port), *args]
        self.env = {**os.environ, **(env or {})}
        self.log_path = Path(logdir) / f"server-{name}.log"
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> Server:
        self.start()
        self.wait_healthy()
        try:
            self.check_release()
        except RuntimeError:
            self.__exit__(None, None, None)
            raise
        return self

    def check_release(self) -> None:
        check_release(served_version(self.url), self.sglang)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.deadline = time.time() + self.ready_timeout

    def wait_for_log(self, *needles: str) -> None:
        """Until the log holds one of ``needles`` (e.g. the line that says the KV pool is allocated)."""
        self.wait_until(lambda: any(n in self.log_path.read_text(errors="replace") for n in needles),
                        f"past {needles[0]!r}")

    def wait_until(self, ready, what: str) -> None:
        while time.time() < self.deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if ready():
                return
            time.sleep(1)
        self.__exit__(None, None, None)
        raise RuntimeError(f"server {self.name} not {what} after {self.ready_timeout:.0f}s; see {self.log_path}")

    def wait_healthy(self) -> None:
        """Until ``/health`` answers OK (the server process dying or the start-up deadline passing raise)."""
        self.wait_until(self._healthy, "healthy")

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/health", timeout=2).ok
        except requests.RequestException:
            return False

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
            self.proc = None
            time.sleep(3)  # let the GPU memory go back before the next launch
