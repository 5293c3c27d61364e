"""Train lightning indexers into a dense Llama-family LM (DSA's dense warm-up, then the sparse stage).

    python scripts/testbed_train.py --run-dir build/testbed-run --out sglang_indexcache/testbed/indexers/x.safetensors

Resumes from ``<run-dir>/checkpoint.pt``; writes the indexer file (with ``.json`` provenance), the loss curve
``<run-dir>/loss.png`` and ``<run-dir>/history.json``.
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

import numpy as np
import torch
import typer

from sglang_indexcache.errors import MapError
from sglang_indexcache.testbed.cli import base_identity, one_line_errors, pick_device
from sglang_indexcache.testbed.corpus import load_split
from sglang_indexcache.testbed.indexer import IndexerConfig
from sglang_indexcache.testbed.load import DEFAULT_BASE, load_base, save_indexers
from sglang_indexcache.testbed.retrofit import RetrofitDSA
from sglang_indexcache.testbed.train import TrainConfig, plot_history, train

SPLITS = Path("sglang_indexcache/testbed/splits")


@one_line_errors
def main(
    out: Path = typer.Option(..., help="the indexer .safetensors to write"),
    run_dir: Path = Path("build/testbed-run"),
    base: str = DEFAULT_BASE,
    base_name: str = typer.Option(
        None, help="the name later loads use (default: --base), e.g. smollm2 for a copy of its GGUF"
    ),
    splits: Path = SPLITS,
    index_topk: int = 256,
    seq: int = 2048,
    batch: int = 8,
    dense_steps: int = 400,
    sparse_steps: int = 400,
    dense_seconds: float = float("inf"),
    sparse_seconds: float = float("inf"),
    dense_lr: float = 1e-3,
    sparse_lr: float = 2e-4,
    index_heads: int = 4,
    index_head_dim: int = 64,
    rope_dim: int = 32,
    block: int = 512,
    num_layers: int = typer.Option(None, help="train only the first N layers (smoke tests)"),
    checkpoint_every: int = 50,
    device: str = "auto",
    seed: int = 0,
) -> None:
    dev = pick_device(device)
    domains = {d: load_split(splits, d, "train") for d in ("prose", "code")}
    if seq >= min(t.size for t in domains.values()):
        raise MapError(str(splits), "--seq", f"{seq} is not shorter than a train split", "use a shorter --seq")
    manifest = json.loads((splits / "manifest.json").read_text())
    identity = {**base_identity(base), "base": base_name or base}
    torch.manual_seed(seed)
    lm = load_base(base, num_layers=num_layers, dtype=torch.bfloat16 if dev.type == "cuda" else torch.float32)
    icfg = IndexerConfig(lm.config.hidden_size, index_heads, index_head_dim, rope_dim)
    model = RetrofitDSA(lm, index_topk=index_topk, indexer_config=icfg, block=block).to(dev)
    config = TrainConfig(
        seq=seq,
        batch=batch,
        dense_steps=dense_steps,
        sparse_steps=sparse_steps,
        dense_seconds=dense_seconds,
        sparse_seconds=sparse_seconds,
        dense_lr=dense_lr,
        sparse_lr=sparse_lr,
        checkpoint_every=checkpoint_every,
        seed=seed,
    )
    history = train(model, domains, config, run_dir)
    plot_history(history, run_dir / "loss.png")
    stages = {}
    for stage in ("dense", "sparse"):
        losses = [v for v, s in zip(history.loss, history.stage) if s == stage]
        stages[stage] = {
            "steps": history.done.get(stage, 0),
            "seconds": round(history.seconds.get(stage, 0.0), 1),
            "tokens": history.done.get(stage, 0) * seq * batch,
            "first_kl": losses[0] if losses else None,
            "last_kl": float(np.mean(losses[-10:])) if losses else None,
        }
    provenance = {
        **identity,
        "num_layers": model.num_layers,
        "data": {
            d: {s: e["splits"][s]["sha256"] for s in ("train", "calibration", "heldout")}
            for d, e in manifest["domains"].items()
        },
        "trained_on": "train splits only",
        "recipe": "DSA: dense warm-up (KL to head-averaged attention, all visible keys), then sparse stage "
        "(KL on the indexer's own top-k set, indexer input detached); base LM frozen throughout",
        "train_config": {k: v for k, v in config.__dict__.items() if v != float("inf")},
        "stages": stages,
        "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
    }
    save_indexers(model, out, provenance)
    print(f"{'stage':8} {'steps':>6} {'seconds':>8} {'tokens':>10} {'first KL':>9} {'last KL':>8}")
    for stage, s in stages.items():
        first = f"{s['first_kl']:9.4f}" if s["first_kl"] is not None else f"{'-':>9}"
        last = f"{s['last_kl']:8.4f}" if s["last_kl"] is not None else f"{'-':>8}"
        print(f"{stage:8} {s['steps']:6d} {s['seconds']:8.1f} {s['tokens']:10d} {first} {last}")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {out.with_suffix('.json')}")


if __name__ == "__main__":
    typer.run(main)
