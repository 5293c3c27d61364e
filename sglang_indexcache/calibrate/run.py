"""One calibration run, as ``sglang-indexcache calibrate`` does it: check the input, load the data, search
(checkpointing every step), write the maps, the removal order and the plot."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..model_config import load_model_config, require_dsa
from .data import Calibration, InputError, load_calibration, read_documents
from .report import chosen_maps, summary_lines, write_outputs
from .search import SearchState, full_count, greedy_search, stage_blocks

CHECKPOINT = "checkpoint.json"
BACKENDS = ("torch", "server")


@dataclass
class Options:
    model: str
    data: Path
    out: Path
    backend: str = "torch"
    url: str = "http://127.0.0.1:30000"
    admin_api_key: str = ""
    ratios: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])
    resume: bool = False
    device: str = "cpu"
    seq_len: int | None = None
    max_tokens: int = 65536
    batch_size: int = 4
    stages: int = 1
    cache_gb: float = 4.0
    progress: bool = True


@dataclass
class Outcome:
    state: SearchState
    maps: list
    summary: dict
    lines: list[str]


def calibrate(opts: Options) -> Outcome:
    config, source = _check(opts)
    num_layers, topk = config["num_hidden_layers"], config["index_topk"]
    seq_len = opts.seq_len or 2 * topk
    if seq_len <= topk:
        raise InputError("--seq-len", "--seq-len", f"{seq_len} tokens is not more than the model's index_topk "
                         f"({topk}): every layer would select every token and all maps would score the same",
                         f"use --seq-len above {topk}")
    data = load_calibration(opts.data, None, seq_len, opts.max_tokens,
                            load_tokenizer=lambda: _tokenizer(opts.model, source))
    blocks = stage_blocks(num_layers, opts.stages) if opts.stages > 1 else None
    fixed = sorted({0, *(start for start, _ in blocks or ())})
    min_full = min(max(full_count(r, num_layers), len(fixed)) for r in opts.ratios)
    fingerprint = {"model": str(opts.model), "backend": opts.backend, "data_hash": data.data_hash,
                   "tokens_hash": data.tokens_hash, "seq_len": data.seq_len, "num_sequences": len(data.sequences),
                   "fixed": fixed, "stages": opts.stages}
    state = _resume(opts.out, fingerprint) if opts.resume else None

    scorer = _scorer(opts, data, num_layers)
    started = time.perf_counter()
    progress = _progress(opts.progress, evaluations_needed(num_layers, fixed, blocks, min_full, state))

    def on_step(current: SearchState) -> None:
        _write_checkpoint(opts.out, fingerprint, current)

    def on_candidate(layer: int, loss: float) -> None:
        progress.update(1)

    try:
        state = greedy_search(scorer, min_full, fixed=fixed, blocks=blocks, state=state, on_step=on_step,
                              on_candidate=on_candidate)
    finally:
        progress.close()
    summary = {"model": str(opts.model), "backend": opts.backend, "architectures": config.get("architectures"),
               "data": {"source": data.source, "data_hash": data.data_hash, "tokens_hash": data.tokens_hash,
                        "num_tokens": data.num_tokens, "seq_len": data.seq_len,
                        "num_sequences": len(data.sequences)},
               "stages": opts.stages, "wall_s": round(time.perf_counter() - started, 2),
               "cost": _cost(scorer, state, num_layers, fixed, min_full)}
    provenance = {"source": f"sglang-indexcache calibrate --backend {opts.backend}", "model": str(opts.model),
                  "backend": opts.backend, "stages": opts.stages, "fixed": fixed,
                  "calibration": {"dataset": data.source, "data_hash": data.data_hash,
                                  "num_tokens": data.num_tokens, "tokens_hash": data.tokens_hash,
                                  "seq_len": data.seq_len, "num_sequences": len(data.sequences)}}
    maps = chosen_maps(state, opts.ratios, provenance)
    write_outputs(opts.out, state, maps, config.get("architectures") or [], summary)
    return Outcome(state, maps, summary, summary_lines(state, maps, _cost_line(summary["cost"])))


# -- input checks (before any model loads) -------------------------------------------------------------------


def _check(opts: Options) -> tuple[dict[str, Any], str]:
    if opts.backend not in BACKENDS:
        raise InputError("--backend", "--backend", f"{opts.backend!r} is not a backend", "use torch or server")
    for ratio in opts.ratios:
        if not 0 < ratio < 1:
            raise InputError("--ratios", "--ratios", f"{ratio} is not between 0 and 1", "give ratios like 0.5 0.25")
    config, source = _model_config(opts.model)
    require_dsa(config, source)
    if opts.stages < 1 or opts.stages > config["num_hidden_layers"]:
        raise InputError("--stages", "--stages", f"{opts.stages} stages for {config['num_hidden_layers']} layers",
                         "use 1 (no pipeline) up to the layer count")
    read_documents(Path(opts.data))  # empty or unreadable data fails here, before anything loads
    if opts.backend == "torch":
        from ..inprocess.load import loader_for

        if loader_for(opts.model, config) is None:
            arch = ", ".join(config.get("architectures") or ["(none)"])
            raise InputError(source, "architectures", f"{arch} has no in-process implementation here",
                             "use --backend server with a running SGLang server, or a GlmMoeDsaForCausalLM checkpoint")
    if opts.resume and not (opts.out / CHECKPOINT).is_file():
        raise InputError(str(opts.out / CHECKPOINT), "(file)", "no checkpoint to resume",
                         "run without --resume first (or give the --out of the interrupted run)")
    return config, source


def _model_config(model: str) -> tuple[dict[str, Any], str]:
    from ..inprocess.load import TESTBED, is_named

    if is_named(model):
        return TESTBED.config(model), model
    return load_model_config(model)


def _tokenizer(model: str, source: str):
    from ..inprocess.load import TESTBED, is_named

    if is_named(model):
        return TESTBED.tokenizer(model)
    directory = Path(source).parent
    if not any((directory / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json",
                                                           "tokenizer.model")):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(directory)


# -- scorers, checkpoints, cost ------------------------------------------------------------------------------


def _scorer(opts: Options, data: Calibration, num_layers: int):
    if opts.backend == "server":
        from .server_scorer import ServerScorer

        scorer = ServerScorer(opts.url, opts.admin_api_key, data.sequences, num_layers, batch_size=opts.batch_size)
        scorer.check()
        return scorer
    from ..inprocess.load import loader_for
    from .torch_scorer import TorchScorer

    config, _ = _model_config(opts.model)
    model = loader_for(opts.model, config)(opts.model, opts.device)
    if model.num_layers != num_layers:
        raise InputError(opts.model, "num_hidden_layers", f"the model has {model.num_layers} layers, its config "
                         f"{num_layers}", "fix the checkpoint's config.json")
    return TorchScorer(model, data.batches(opts.batch_size), cache_bytes=int(opts.cache_gb * (1 << 30)))


def _resume(out: Path, fingerprint: dict) -> SearchState:
    path = out / CHECKPOINT
    saved = json.loads(path.read_text())
    for key, value in fingerprint.items():
        if saved["fingerprint"].get(key) != value:
            raise InputError(str(path), key, f"the checkpoint has {saved['fingerprint'].get(key)!r}, this run "
                             f"{value!r}", "resume with the same model, data and options, or start afresh")
    return SearchState.from_json(saved["state"])


def _write_checkpoint(out: Path, fingerprint: dict, state: SearchState) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f".{CHECKPOINT}.tmp"
    tmp.write_text(json.dumps({"fingerprint": fingerprint, "state": state.to_json()}, indent=1) + "\n")
    os.replace(tmp, out / CHECKPOINT)  # a crash mid-write leaves the previous step's checkpoint


def evaluations_needed(num_layers: int, fixed: list[int], blocks, min_full: int, state: SearchState | None) -> int:
    """Candidate maps still to score: the same for every run, since every step flips a known number."""
    removed = set(state.order) if state else set()
    spans = blocks or [(0, num_layers)]
    left = [sum(1 for l in range(a, b) if l not in fixed and l not in removed) for a, b in spans]
    full, total = num_layers - len(removed), 0
    while full > min_full and sum(left):
        total += sum(left)
        # A step that would overshoot commits fewer flips, but it is the last one.
        full -= min(sum(1 for c in left if c), full - min_full)
        left = [max(c - 1, 0) for c in left]
    return total


def _cost(scorer, state: SearchState, num_layers: int, fixed: list[int], min_full: int) -> dict:
    plain = evaluations_needed(num_layers, fixed, None, min_full, None)
    cost = {"evaluations": state.evaluations, "plain_search_evaluations": plain,
            "paper_full_search_passes": num_layers * (num_layers - 1) // 2}
    if hasattr(scorer, "layer_forwards"):
        naive = num_layers * (1 + state.evaluations)
        cost.update(layer_forwards=scorer.layer_forwards, naive_layer_forwards=naive,
                    fraction_of_naive=round(scorer.layer_forwards / naive, 4), skipped_by_equal_topk=scorer.skipped)
    if hasattr(scorer, "restarts"):
        cost.update(server_evaluations=scorer.evaluations, server_restarts=scorer.restarts)
    return cost


def _cost_line(cost: dict) -> str:
    if "layer_forwards" in cost:
        return (f"cost: {cost['layer_forwards']:.0f} layer forwards over the calibration set, "
                f"{100 * cost['fraction_of_naive']:.1f}% of the {cost['naive_layer_forwards']} a full forward per "
                f"candidate takes ({cost['evaluations']} candidates, {cost['skipped_by_equal_topk']} decided by "
                "equal top-k)")
    return (
        f"cost: {cost['server_evaluations']} server evaluations ({cost['evaluations']} candidates; a plain search "
        f"to this depth scores {cost['plain_search_evaluations']}, the paper's full search "
        f"{cost['paper_full_search_passes']}); server restarts survived: {cost['server_restarts']}"
    )


def _progress(enabled: bool, total: int):
    from tqdm import tqdm

    return tqdm(total=total, desc="calibrate", unit="map", disable=not enabled, file=sys.stderr, dynamic_ncols=True)
