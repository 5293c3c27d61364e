"""What the testbed scripts share: the device, bad input as one line and exit 2, the base model's identity."""

from __future__ import annotations

import functools
import hashlib
import sys
from pathlib import Path

import torch

from ..errors import MapError
from .load import resolve_base


def one_line_errors(main):
    """Run ``main``; a :class:`MapError` becomes its one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except MapError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapped


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MapError("--device", device, "no CUDA device here", "use --device cpu")
    return torch.device(device)


def base_identity(base: str) -> dict:
    """The base model as provenance: its name and, for a single file, the file's sha256."""
    where, gguf = resolve_base(base)
    record = {"base": base}
    if gguf:
        path = Path(where) / gguf
        record.update(file=gguf, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    return record


def parse_patterns(patterns: list[str], maps: list[str], num_layers: int) -> dict[str, str]:
    """``--pattern NAME=FS...`` and ``--map`` names or files, as ``{name: pattern}`` for ``num_layers`` layers."""
    out = {}
    for item in patterns:
        name, sep, pattern = item.partition("=")
        if not sep or set(pattern) - {"F", "S"} or len(pattern) != num_layers or pattern[:1] != "F":
            raise MapError("--pattern", item, f"not NAME= and {num_layers} F/S characters starting with F",
                           "e.g. --pattern half=" + ("FS" * num_layers)[:num_layers])
        out[name] = pattern
    for name in maps:
        from ..layer_map import LayerMap

        layer_map = LayerMap.load(name, num_layers=num_layers)
        out[Path(layer_map.label).stem] = layer_map.pattern
    return out
