#!/usr/bin/env python3
"""The greedy layer search end to end on one GPU, through both backends on the same checkpoint and data.
Prints a table, writes JSON.

1. A random-initialised 8-layer ``GlmMoeDsaForCausalLM`` checkpoint (``scripts/models/glm-dsa-8l-dense.json``,
   ``make_random_checkpoint.py``), which SGLang serves and transformers loads alike (its indexer RoPE is
   interleaved in both: ``indexer_rope_interleave``).
2. One SGLang server with this package, all-F (every layer switchable), ``--disable-cuda-graph``: the server
   backend's search (``sglang-indexcache calibrate --backend server``), with its wall time and server
   evaluations against the plain search's and the paper's full-search counts. Then the all-F map scored
   again: the server's run-to-run noise on this loss.
3. The in-process backend (transformers on the GPU) on the same checkpoint and sequences: its search, and its
   losses for the server's maps, step by step.

Random weights say nothing about quality: this measures the mechanics, the cost, and how the two backends'
losses agree.

    python scripts/calibrate_gpu.py --out results/calibrate --server-args "$GPUKIT_SGLANG_ARGS"
"""

from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sglang_indexcache.bench.server import Server  # noqa: E402
from sglang_indexcache.calibrate.run import Options, calibrate  # noqa: E402
from sglang_indexcache.calibrate.search import pattern_after  # noqa: E402

KEY = "indexcache-calibrate"


def write_data(path: Path, count: int, seq_len: int, vocab: int, seed: int = 0) -> None:
    """Random token blocks, each repeated through its sequence: text a model could copy from far back."""
    rng = random.Random(seed)
    with path.open("w") as f:
        for _ in range(count):
            block = [rng.randrange(100, vocab) for _ in range(seq_len // 8)]
            f.write(json.dumps({"input_ids": (block * 8)[:seq_len]}) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--config", type=Path, default=ROOT / "scripts/models/glm-dsa-8l-dense.json")
    p.add_argument("--sequences", type=int, default=8)
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--ratios", type=float, nargs="+", default=[0.5, 0.25, 0.125])
    p.add_argument("--port", type=int, default=30123)
    p.add_argument("--server-args", default="")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model, data = args.out / "model", args.out / "calib.jsonl"
    started = time.time()
    subprocess.run([sys.executable, str(ROOT / "scripts/make_random_checkpoint.py"), "--config", str(args.config),
                    "--out", str(model), "--seed", "0"], check=True)
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
        remote = calibrate(Options(**common, out=args.out / "server", backend="server", url=server.url,
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
    local = calibrate(Options(**common, out=args.out / "torch", backend="torch", device="cuda", batch_size=1,
                              cache_gb=32))
    report["torch"] = {"wall_s": round(time.time() - t, 2), "order": local.state.order, "loss": local.state.loss,
                       "base_loss": local.state.base_loss, **local.summary["cost"]}
    report["torch_on_server_maps"] = torch_losses(model, data, args, remote.state.order)
    return finish(report, args, started)


def finish(report: dict, args, started: float) -> int:
    report["wall_s"] = round(time.time() - started, 1)
    (args.out / "calibrate_gpu.json").write_text(json.dumps(report, indent=1) + "\n")
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


if __name__ == "__main__":
    raise SystemExit(main())
