"""Capture and reduce: in-process over a :class:`LayerwiseDSA`, or through a live server in capture mode."""

from __future__ import annotations

import uuid
from pathlib import Path

import torch
from tqdm import tqdm

from ..admin import _call
from ..inprocess.runner import capture_topk
from ..names import CAPTURE_RID_PREFIX, ENV_CAPTURE_DIR, ENV_MAP
from .capture_files import read_capture
from .errors import InputError
from .overlap import OverlapAccumulator


def analyse_inprocess(model, sequences: list[list[int]], backend: str = "auto",
                      progress: bool = True) -> OverlapAccumulator:
    device = getattr(model, "device", torch.device("cpu"))
    acc = OverlapAccumulator(list(range(model.num_layers)), model.index_topk, max(map(len, sequences)) - 1, backend)
    for seq in tqdm(sequences, desc="capturing top-k", unit="seq", disable=not progress):
        topk = capture_topk(model, torch.tensor([seq], device=device))[:, 0]
        acc.add(topk, num_tokens=len(seq))
    return acc


def capture_from_server(url: str, records: list[dict], capture_dir: Path, api_key: str = "",
                        progress: bool = True) -> list[dict]:
    """Send each record as one flagged prefill (one new token) and read back what the server wrote."""
    capture_dir = Path(capture_dir)
    if not capture_dir.is_dir():
        raise InputError(capture_dir, "--capture-dir", "no such directory",
                         f"give the directory the server was started with as {ENV_CAPTURE_DIR}")
    captures = []
    for record in tqdm(records, desc="capturing from server", unit="req", disable=not progress):
        rid = f"{CAPTURE_RID_PREFIX}{uuid.uuid4().hex}"
        body = {**record, "rid": rid, "sampling_params": {"max_new_tokens": 1, "temperature": 0.0}}
        _call(url, api_key, "POST", "/generate", body)
        capture = read_capture(capture_dir, rid)
        if capture is None:
            raise InputError(capture_dir, "--capture-dir", f"the server wrote nothing for request {rid}",
                             f"start it with {ENV_CAPTURE_DIR}={capture_dir} and a map (e.g. "
                             f"{ENV_MAP} set to an all-Full map) on this machine's filesystem")
        captures.append(capture)
    return captures


def analyse_captures(captures: list[dict], index_topk: int | None = None, backend: str = "auto") -> OverlapAccumulator:
    layers = captures[0]["layers"]
    k = index_topk or captures[0]["topk"].shape[-1]
    max_position = max(int(c["positions"].max()) for c in captures if c["positions"].numel())
    acc = OverlapAccumulator(layers, k, max_position, backend)
    for capture in captures:
        if capture["layers"] != layers:
            raise ValueError(f"captures hold different layers: {capture['layers']} vs {layers}")
        acc.add(capture["topk"], capture["positions"], capture["num_tokens"])
    return acc
