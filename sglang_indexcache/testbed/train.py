"""Train the indexers of a :class:`RetrofitDSA` as DSA does: a dense warm-up, then a sparse stage.

The base model stays frozen in both stages (only the indexers learn). Warm-up: every layer attends densely
and its indexer is fitted by KL to the layer's head-averaged attention over all visible keys. Sparse stage:
every layer attends through its own indexer's top-k, and the KL is taken over that selected set, so the
indexers adapt to the hidden states of the sparse model they now drive. A stage ends at its step count or
its time budget, whichever comes first; a run resumes from its last checkpoint.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .distill import layer_kl
from .retrofit import RetrofitDSA

STAGES = ("dense", "sparse")


@dataclass
class TrainConfig:
    seq: int = 2048
    batch: int = 8
    dense_steps: int = 400
    sparse_steps: int = 400
    dense_seconds: float = float("inf")
    sparse_seconds: float = float("inf")
    dense_lr: float = 1e-3
    sparse_lr: float = 2e-4
    checkpoint_every: int = 50
    seed: int = 0
    grad_clip: float = 1.0


@dataclass
class History:
    step: list[int] = field(default_factory=list)
    stage: list[str] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)  # mean over layers of the per-layer KL
    layer_loss: list[list[float]] = field(default_factory=list)
    done: dict[str, int] = field(default_factory=dict)  # stage -> steps taken, once finished
    seconds: dict[str, float] = field(default_factory=dict)


def sample_batch(domains: dict[str, np.ndarray], seq: int, batch: int, seed: int, step: int) -> torch.Tensor:
    """``[batch, seq]`` random windows, domains taking turns row by row; a function of ``(seed, step)`` alone,
    so a resumed run sees the batches the uninterrupted one would have."""
    rng = np.random.default_rng([seed, step])
    names = sorted(domains)
    rows = []
    for r in range(batch):
        tokens = domains[names[r % len(names)]]
        start = int(rng.integers(0, tokens.size - seq))
        rows.append(tokens[start : start + seq].astype(np.int64))
    return torch.from_numpy(np.stack(rows))


def train_step(model: RetrofitDSA, input_ids: torch.Tensor, sparse: bool, autocast: bool | None = None) -> list[float]:
    """One forward through every layer, backward layer by layer (each indexer's loss is its own)."""
    autocast = input_ids.is_cuda if autocast is None else autocast
    state = model.embed(input_ids)
    losses = []
    for index in range(model.num_layers):
        with torch.autocast(input_ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            loss, state = layer_kl(model, index, state, sparse)
        loss.backward()
        losses.append(loss.detach())
    return torch.stack(losses).float().cpu().tolist()


def save_checkpoint(path: Path, model: RetrofitDSA, opt: torch.optim.Optimizer, history: History) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save({"indexers": model.indexers.state_dict(), "opt": opt.state_dict(), "history": asdict(history)}, tmp)
    tmp.replace(path)


def train(
    model: RetrofitDSA, domains: dict[str, np.ndarray], config: TrainConfig, run_dir: Path, log=print
) -> History:
    """Train ``model.indexers`` in place; checkpoints and ``history.json`` go to ``run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    device = model.device
    model.indexers.float().train()
    opt = torch.optim.AdamW(model.indexers.parameters(), lr=config.dense_lr, weight_decay=0.0)
    history = History()
    ckpt = run_dir / "checkpoint.pt"
    if ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=False)
        model.indexers.load_state_dict(state["indexers"])
        opt.load_state_dict(state["opt"])
        history = History(**state["history"])
        log(f"resumed from {ckpt} at step {len(history.step)}")
    for stage in STAGES:
        if stage in history.done:
            continue
        steps = getattr(config, f"{stage}_steps")
        budget = getattr(config, f"{stage}_seconds")
        for group in opt.param_groups:
            group["lr"] = getattr(config, f"{stage}_lr")
        taken = sum(1 for s in history.stage if s == stage)
        started = time.monotonic() - history.seconds.get(stage, 0.0)
        bar = tqdm(
            total=steps if budget == float("inf") else None,
            initial=taken,
            desc=f"{stage} stage",
            dynamic_ncols=True,
            mininterval=5,
        )
        while taken < steps and time.monotonic() - started < budget:
            step = len(history.step)
            ids = sample_batch(domains, config.seq, config.batch, config.seed, step).to(device)
            layer_losses = train_step(model, ids, sparse=stage == "sparse")
            torch.nn.utils.clip_grad_norm_(model.indexers.parameters(), config.grad_clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            taken += 1
            history.step.append(step)
            history.stage.append(stage)
            history.loss.append(float(np.mean(layer_losses)))
            history.layer_loss.append(layer_losses)
            history.seconds[stage] = time.monotonic() - started
            bar.update(1)
            bar.set_postfix(kl=f"{history.loss[-1]:.4f}")
            if taken % config.checkpoint_every == 0:
                save_checkpoint(ckpt, model, opt, history)
        bar.close()
        history.done[stage] = taken
        save_checkpoint(ckpt, model, opt, history)
        log(f"{stage} stage: {taken} steps in {history.seconds.get(stage, 0.0):.0f} s, last KL {history.loss[-1]:.4f}")
    (run_dir / "history.json").write_text(json.dumps(asdict(history)) + "\n")
    model.indexers.eval()
    return history


def plot_history(history: History, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for stage, colour in zip(STAGES, ("tab:blue", "tab:orange")):
        xs = [s for s, st in zip(history.step, history.stage) if st == stage]
        ys = [v for v, st in zip(history.loss, history.stage) if st == stage]
        if xs:
            ax.plot(xs, ys, color=colour, label=f"{stage} ({'all visible keys' if stage == 'dense' else 'top-k set'})")
    ax.set_xlabel("step")
    ax.set_ylabel("indexer KL (mean over layers, nats)")
    ax.set_yscale("log")
    ax.set_title("Lightning-indexer distillation")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
