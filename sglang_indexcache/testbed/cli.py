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
