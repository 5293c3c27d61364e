"""``sglang-indexcache analyze``: capture, reduce, and write ``overlap.json``, ``heatmap.png`` and a summary."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ..layer_map import LayerMap
from .errors import InputError

FIX_SOURCE = "give exactly one of --model (in-process) and --url (a server in capture mode)"


def analyze(
    data: Annotated[Path, typer.Option(
        help="prompts: .txt, .npy token ids, or JSON lines of {\"input_ids\": [...]} or {\"text\": ...}")],
    out: Annotated[Path, typer.Option(help="directory for overlap.json and heatmap.png")],
    model: Annotated[str | None, typer.Option(
        help="in-process: 'testbed', 'testbed:INDEXERS.safetensors', a GlmMoeDsa checkpoint dir, "
             "'module:factory'")] = None,
    url: Annotated[str | None, typer.Option(help="a server started with SGLANG_INDEXCACHE_CAPTURE_DIR")] = None,
    capture_dir: Annotated[Path | None, typer.Option(help="with --url: the server's capture directory")] = None,
    api_key: Annotated[str, typer.Option(help="with --url: the server's --api-key", envvar="SGLANG_API_KEY")] = "",
    map_: Annotated[str | None, typer.Option("--map", help="mark this map's Full layers and Shared sources")] = None,
    seq_len: Annotated[int | None, typer.Option(min=2, help="cut the data into windows of this many tokens")] = None,
    max_sequences: Annotated[int | None, typer.Option(min=1, help="analyse at most this many sequences")] = None,
    device: Annotated[str, typer.Option(help="in-process: where the model runs (cpu, cuda)")] = "auto",
    backend: Annotated[str, typer.Option(help="overlap reduction: auto, triton, torch")] = "auto",
    block_threshold: Annotated[float, typer.Option(help="adjacent overlap that keeps layers in one block")] = 0.7,
    progress: Annotated[bool, typer.Option(help="show a progress bar")] = True,
) -> None:
    """Cross-layer top-k overlap of a DSA model on your data (the evidence for IndexCache), as JSON and a heatmap."""
    from .data import read_records
    from .models import resolve_model

    if (model is None) == (url is None):
        raise InputError("analyze", "--model/--url", "need exactly one", FIX_SOURCE)
    if url is not None and capture_dir is None:
        raise InputError("analyze", "--capture-dir", "is needed with --url",
                         "give the directory the server writes captures to (SGLANG_INDEXCACHE_CAPTURE_DIR)")
    if backend not in ("auto", "triton", "torch"):
        raise InputError("analyze", "--backend", f"unknown backend {backend!r}", "use auto, triton or torch")
    records = read_records(data)
    layer_map = LayerMap.load(map_) if map_ is not None else None
    out.mkdir(parents=True, exist_ok=True)
    if url is None:
        load = resolve_model(model)
        acc, source = _inprocess(load, records, data, seq_len, max_sequences, device, backend, progress,
                                 layer_map), {"kind": "in-process", "model": model}
    else:
        acc, source = _server(url, records, capture_dir, api_key, max_sequences, backend, progress), {
            "kind": "server", "url": url}
        check_map(layer_map, max(acc.layers) + 1)
    write_outputs(acc, out, layer_map, block_threshold, {**source, "data": str(data)})


def write_outputs(acc, out: Path, layer_map, block_threshold: float, source: dict) -> dict:
    from .heatmap import write_heatmap
    from .report import build_report, summary_lines

    report = build_report(acc, layer_map, block_threshold, source=source)
    (out / "overlap.json").write_text(json.dumps(report, indent=1) + "\n")
    write_heatmap(report, out / "heatmap.png", title=f"{source.get('model') or source.get('url')} on {source['data']}")
    for line in summary_lines(report):
        print(line)
    print(f"wrote {out / 'overlap.json'} and {out / 'heatmap.png'}")
    return report


def check_map(layer_map, num_layers: int) -> None:
    if layer_map is not None and layer_map.num_layers != num_layers:
        raise InputError(layer_map.label, "map", f"has {layer_map.num_layers} layers, the model {num_layers}",
                         "give a map for this model")


def _inprocess(load, records, data, seq_len, max_sequences, device, backend, progress, layer_map):
    import torch

    from .data import token_sequences
    from .runs import analyse_inprocess

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model, tokenizer = load(device)
    check_map(layer_map, model.num_layers)
    sequences = token_sequences(records, tokenizer, seq_len, max_sequences, data)
    return analyse_inprocess(model, sequences, backend, progress)


def _server(url, records, capture_dir, api_key, max_sequences, backend, progress):
    from .runs import analyse_captures, capture_from_server

    captures = capture_from_server(url, records[:max_sequences] if max_sequences else records, capture_dir,
                                   api_key, progress)
    truncated = sum(c["truncated"] for c in captures)
    if truncated:
        print(f"note: {truncated} captures were cut short by the server's size bound")
    return analyse_captures(captures, backend=backend)
