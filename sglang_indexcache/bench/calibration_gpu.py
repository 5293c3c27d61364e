"""The greedy layer search end to end on one GPU, through both backends on the same checkpoint and data.
Prints a table, writes JSON.

1. A random-initialised ``GlmMoeDsaForCausalLM`` checkpoint (by default the 8-layer
   ``scripts/models/glm-dsa-8l-dense.json``, written by ``bench.random_checkpoint``), which SGLang serves and
   transformers loads alike (its indexer RoPE is interleaved in both: ``indexer_rope_interleave``).
2. One SGLang server with this package, all-F (every layer switchable), ``--disable-cuda-graph``: the server
   backend's search (``sglang-indexcache calibrate --backend server``), with its wall time and server
   evaluations against the plain search's and the paper's full-search counts. Then the all-F map scored
   again: the server's run-to-run noise on this loss.
3. The in-process backend (transformers on the GPU) on the same checkpoint and sequences: its search, and its
   losses for the server's maps, step by step.

Random weights say nothing about quality: this measures the mechanics, the cost, and how the two backends'
losses agree. ``scripts/calibrate_gpu.py`` is its command line.
"""

from __future__ import annotations

import json
import random
import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..calibrate.run import Options as CalibrateOptions
from ..calibrate.run import calibrate
from ..calibrate.search import pattern_after
from . import results
from .random_checkpoint import Options as CheckpointOptions
from .random_checkpoint import run as make_checkpoint
from .server import Server

WHAT = "calibrate_gpu: the greedy layer search through the server and in-process backends"


@dataclass
class Options:
    out: Path
    config: Path
    sequences: int = 8
    seq_len: int = 4096
    ratios: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])
    port: int = 30123
    server_args: str = ""


KEY = "indexcache-calibrate"


def write_data(path: Path, count: int, seq_len: int, vocab: int, seed: int = 0) -> None:
    """Random token blocks, each repeated through its sequence: text a model could copy from far back."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(count):
            block = [rng.randrange(100, vocab) for _ in range(seq_len // 8)]
            f.write(json.dumps({"input_ids": (block * 8)[:seq_len]}) + "\n")


def run(args: Options) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    model, data = args.out / "model", args.out / "calib.jsonl"
    started = time.time()
    make_checkpoint(CheckpointOptions(config=args.config, out=model, seed=0))
    config = json.loads((model / "config.json").read_text())
    write_data(data, args.sequences, args.seq_len, config["vocab_size"])
    common = dict(model=str(model), data=data, ratios=args.ratios, seq_len=args.seq_len,
                  max_tokens=args.sequences * args.seq_len, progress=False)
    report = {"config": str(args.config), "sequences": args.sequences, "seq_len": args.seq_len}

    flags = ["--disable-cuda-graph", "--admin-api-key", KEY, "--skip-tokenizer-init", "--mem-fraction-static",
             "0.45", "--json-model-override-args", json.dumps({"index_topk_freq": 1}),
             *shlex.split(args.server_args)]
    with Server("calibrate", str(model), args.port, flags, logdir=args.out) as server:
        report["server_start_s"] = round(time.time() - started, 1)
        t = time.time()
        remote = calibrate(CalibrateOptions(**common, out=args.out / "server", backend="server", url=server.url,
                                   admin_api_key=KEY, batch_size=args.sequences))
        report["server"] = {"wall_s": round(time.time() - t, 2), "order": remote.state.order,
                            "loss": remote.state.loss, "base_loss": remote.state.base_loss, **remote.summary["cost"]}
        from sglang_indexcache.calibrate.server_scorer import ServerScorer

        again = ServerScorer(server.url, KEY, [json.loads(l)["input_ids"] for l in data.read_text().splitlines()],
                             config["num_hidden_layers"], batch_size=args.sequences)
        report["server"]["base_loss_again"] = again.score("F" * config["num_hidden_layers"])

    from sglang_indexcache.inprocess.load import loader_for

    if loader_for(str(model), config) is None:  # e.g. a DeepseekV3ForCausalLM checkpoint: server backend only
        return finish(report, args, started)
    t = time.time()
    local = calibrate(CalibrateOptions(**common, out=args.out / "torch", backend="torch", device="cuda", batch_size=1,
                              cache_gb=32))
    report["torch"] = {"wall_s": round(time.time() - t, 2), "order": local.state.order, "loss": local.state.loss,
                       "base_loss": local.state.base_loss, **local.summary["cost"]}
    report["torch_on_server_maps"] = torch_losses(model, data, args, remote.state.order)
    return finish(report, args, started)


def finish(report: dict, args, started: float) -> int:
    report["wall_s"] = round(time.time() - started, 1)
    results.write(args.out / "calibrate_gpu.json", WHAT, args, report)
    for line in table(report):
        print(line)
    return 0


def torch_losses(model: Path, data: Path, args, order: list[int]) -> list[float]:
    """The in-process loss of the all-F map and of each map along the server's removal order."""
    import torch

    from sglang_indexcache.inprocess.glm_moe_dsa import GlmMoeDsaLayerwise
    from sglang_indexcache.inprocess.runner import mean_loss

    layerwise = GlmMoeDsaLayerwise.from_pretrained(model, device="cuda", dtype=torch.bfloat16)
    batches = [torch.tensor([json.loads(l)["input_ids"]]) for l in data.read_text().splitlines()]
    n = layerwise.num_layers
    return [mean_loss(layerwise, pattern_after(n, order[:k]), batches) for k in range(len(order) + 1)]


def table(r: dict) -> list[str]:
    s = r["server"]
    if "torch" not in r:
        return [f"server backend: order {s['order']}, all-F loss {s['base_loss']:.5f} (again "
                f"{s['base_loss_again']:.5f}), {s['wall_s']} s, {s['server_evaluations']} server evaluations "
                f"(plain search to this depth {1 + s['plain_search_evaluations']}, paper's full search "
                f"{s['paper_full_search_passes']})", f"losses: {s['loss']}"]
    t = r["torch"]
    lines = ["| | server backend | torch backend (transformers, cuda) |", "|---|---|---|",
             f"| removal order | {s['order']} | {t['order']} |",
             f"| all-F loss | {s['base_loss']:.5f} (again: {s['base_loss_again']:.5f}) | {t['base_loss']:.5f} |",
             f"| wall time | {s['wall_s']} s | {t['wall_s']} s |",
             f"| maps scored | {s['server_evaluations']} server evaluations (plain search to this depth: "
             f"{1 + s['plain_search_evaluations']}, paper's full search: {s['paper_full_search_passes']} passes) "
             f"| {t['evaluations'] + 1}, {t['layer_forwards']:.0f} layer forwards = "
             f"{100 * t['fraction_of_naive']:.1f}% of naive {t['naive_layer_forwards']} |",
             "", "| step | layer (server order) | server loss | torch loss, same map | difference |",
             "|---|---|---|---|---|"]
    server_losses = [s["base_loss"], *s["loss"]]
    for k, (a, b) in enumerate(zip(server_losses, r["torch_on_server_maps"])):
        layer = "" if k == 0 else s["order"][k - 1]
        lines.append(f"| {k} | {layer} | {a:.5f} | {b:.5f} | {a - b:+.5f} |")
    lines.append(f"server noise on the all-F loss: {s['base_loss_again'] - s['base_loss']:+.5f}")
    return lines
