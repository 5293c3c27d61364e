"""One envelope for every JSON file a benchmark or check writes: what ran, with which arguments, on which
software and GPU, and when; the script's own numbers sit under ``results``. Files written before the envelope
existed are read as they are."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, is_dataclass
from importlib import metadata
from pathlib import Path

PACKAGES = {"sglang": "sglang", "torch": "torch", "transformers": "transformers", "triton": "triton",
            "package": "sglang-indexcache"}
ENVELOPE_KEYS = ("what", "config", "versions", "gpu", "timestamp", "results")


def versions() -> dict[str, str | None]:
    """The installed version of each package a result depends on (None where it is not installed)."""
    out = {}
    for key, dist in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def gpu_name() -> str | None:
    """The first CUDA device's name; None without torch or a GPU. Only asks torch when a script imported it: a
    client-side script has no business starting CUDA."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    try:
        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except RuntimeError:
        return None


def _config(config) -> dict:
    if is_dataclass(config):
        return asdict(config)
    return dict(vars(config)) if not isinstance(config, dict) else dict(config)


def envelope(what: str, config, results) -> dict:
    return {"what": what, "config": _config(config), "versions": versions(), "gpu": gpu_name(),
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results}


def write(path: str | Path, what: str, config, results, indent: int | None = 1) -> dict:
    """Write ``results`` in the envelope to ``path``; returns the envelope."""
    doc = envelope(what, config, results)
    Path(path).write_text(json.dumps(doc, indent=indent, default=str) + "\n")
    return doc


def payload(doc):
    """A results file's own numbers, whether it was written in the envelope or before it."""
    if isinstance(doc, dict) and set(ENVELOPE_KEYS) <= set(doc):
        return doc["results"]
    return doc


def read(path: str | Path):
    return payload(json.loads(Path(path).read_text()))
