"""Quality of a DSA model under a layer map: held-out loss per domain, a long-context retrieval probe
(passkey at several depths, a repeated segment a few thousand tokens back), and the indexers' selections
(recall of the dense attention's top-k, attention mass kept, adjacent-layer overlap).

A *variant* is what runs: ``dense`` (the base model), a pattern of ``F``/``S`` (one per layer), or
``random`` (every layer Full with a uniformly random causal selection), each at the model's ``index_topk``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from ..inprocess.protocol import LayerState
from ..inprocess.runner import check_pattern, run_layers
from .attention import allowed_keys, attend_block, blocks, selection_mask
from .indexer import indexer_topk, random_topk, select_topk
from .retrofit import RetrofitDSA

DENSE, RANDOM = "dense", "random"


@dataclass(frozen=True)
class Variant:
    name: str
    kind: str  # DENSE, RANDOM or an F/S pattern
    topk: int


@contextmanager
def configured(model: RetrofitDSA, variant: Variant, seed: int = 0) -> Iterator[str | None]:
    """Set ``model`` up for ``variant``; yields the pattern to run (``None``: dense)."""
    saved = model.index_topk, model.selector
    model.index_topk = variant.topk
    try:
        if variant.kind == DENSE:
            yield None
        elif variant.kind == RANDOM:
            generator = torch.Generator(device=model.device).manual_seed(seed)
            model.selector = lambda index, x, positions: random_topk(
                positions, model.index_topk, model.block, generator
            )
            yield "F" * model.num_layers
        else:
            check_pattern(model, variant.kind)
            yield variant.kind
    finally:
        model.index_topk, model.selector = saved


@torch.no_grad()
def final_state(model: RetrofitDSA, pattern: str | None, input_ids: torch.Tensor) -> LayerState:
    state = model.embed(input_ids)
    if pattern is None:
        for index in range(model.num_layers):
            state = model.dense_layer(index, state)
        return state
    return run_layers(model, pattern, state)


@torch.no_grad()
def variant_losses(model: RetrofitDSA, variant: Variant, input_ids: torch.Tensor) -> torch.Tensor:
    with configured(model, variant) as pattern:
        return model.token_losses(final_state(model, pattern, input_ids), input_ids)


@torch.no_grad()
def heldout_loss(model: RetrofitDSA, variant: Variant, windows: np.ndarray, batch: int) -> dict:
    total, count = 0.0, 0
    for s in range(0, len(windows), batch):
        ids = torch.from_numpy(windows[s : s + batch]).to(model.device)
        losses = variant_losses(model, variant, ids)
        total += losses.double().sum().item()
        count += losses.numel()
    mean = total / count
    return {"loss": mean, "ppl": math.exp(mean), "tokens": count}


# ---- retrieval probe ----------------------------------------------------------------------------------------


@dataclass
class ProbeBatch:
    input_ids: torch.Tensor  # [n, seq]
    targets: torch.Tensor  # [n, m] positions whose next-token prediction is scored (predicting position + 1)


def passkey_batch(tok, filler: np.ndarray, context: int, depth: float, keys: list[int]) -> ProbeBatch:
    """One sequence of exactly ``context`` tokens per key: instruction, filler with the needle at ``depth``
    of it, and the question whose answer (the key's digits) is scored."""

    def enc(text: str) -> list[int]:
        return tok(text, add_special_tokens=False).input_ids

    head = enc("There is a pass key hidden in the text below. Find it and remember it.\n\n")
    rows, targets = [], []
    for i, key in enumerate(keys):
        needle = enc(f"\n\nThe pass key is {key}. Remember it. {key} is the pass key.\n\n")
        question = enc("\n\nWhat is the pass key? The pass key is")
        answer = enc(f" {key}")
        room = context - len(head) - len(needle) - len(question) - len(answer)
        if room <= 0:
            raise ValueError(f"context {context} is too short for the passkey probe")
        start = (i * 7919) % max(1, filler.size - room)
        body = filler[start : start + room].tolist()
        cut = int(round(depth * len(body)))
        ids = head + body[:cut] + needle + body[cut:] + question + answer
        rows.append(ids)
        first = len(ids) - len(answer)
        targets.append(list(range(first - 1, len(ids) - 1)))
    width = max(len(t) for t in targets)
    targets = [t + [t[-1]] * (width - len(t)) for t in targets]
    return ProbeBatch(torch.tensor(rows), torch.tensor(targets))


def repeat_batch(segments: np.ndarray, filler: np.ndarray, gap: int) -> ProbeBatch:
    """``segment + filler[gap] + segment`` per row of ``segments [n, m]``; scores the second copy."""
    n, m = segments.shape
    rows, targets = [], []
    for i in range(n):
        start = (i * 104729) % max(1, filler.size - gap)
        ids = np.concatenate([segments[i], filler[start : start + gap], segments[i]])
        rows.append(ids)
        second = m + gap
        targets.append(list(range(second, second + m - 1)))
    return ProbeBatch(torch.from_numpy(np.stack(rows).astype(np.int64)), torch.tensor(targets))


@torch.no_grad()
def probe_scores(model: RetrofitDSA, variant: Variant, probe: ProbeBatch, *more: torch.Tensor) -> list[dict]:
    """Per target set (``probe.targets``, then ``more``): mean loss of the scored tokens and the share of rows
    whose scored tokens are all the argmax. One forward serves every target set."""
    ids = probe.input_ids.to(model.device)
    with configured(model, variant) as pattern:
        state = final_state(model, pattern, ids)
    out = []
    for targets in (probe.targets, *more):
        pos = targets.to(model.device)
        hidden = state.hidden.gather(1, pos[..., None].expand(-1, -1, state.hidden.shape[-1]))
        logits = model.lm.lm_head(model.lm.model.norm(hidden)).float()
        wanted = ids.gather(1, pos + 1)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), wanted, reduction="none")
        exact = (logits.argmax(-1) == wanted).all(dim=1).float()
        out.append({"loss": loss.mean().item(), "exact": exact.mean().item(), "rows": int(ids.shape[0])})
    return out


# ---- the indexers' selections ---------------------------------------------------------------------------------


@torch.no_grad()
def selection_stats(model: RetrofitDSA, input_ids: torch.Tensor) -> dict:
    """Per layer, on the dense model's hidden states: recall of the dense attention's top-k by the indexer's
    top-k, and the dense attention mass inside the indexer's top-k; then, under all-Full, the overlap
    ``|T_l & T_{l+1}| / k`` of adjacent layers' selections. Only query rows with more than ``k`` visible
    keys count (shorter rows select everything)."""
    k = model.index_topk
    seq = input_ids.shape[1]
    if seq <= k:
        raise ValueError(f"sequence {seq} must exceed index_topk {k} to measure a selection")
    state = model.embed(input_ids)
    recall, mass = [], []
    for index in range(model.num_layers):
        a = model.attention_inputs(index, state)
        indexer = model.indexers[index]
        chosen = indexer_topk(indexer.project(a.x.to(indexer.wq.weight.dtype), state.extra.ids), k, model.block)
        hits = kept = rows = 0.0
        outs = []
        for start, stop in blocks(seq, model.block):
            allowed = allowed_keys(None, start, stop, a.q.device)
            out, p = attend_block(a.q[:, :, start:stop], a.k[:, :, :stop], a.v[:, :, :stop], allowed, a.scale, True)
            outs.append(out)
            lo = max(start, k) - start  # first row of the block with more than k visible keys
            if lo >= stop - start:
                continue
            p = p[:, lo:]
            ours = selection_mask(chosen[:, start + lo : stop], stop)
            oracle = selection_mask(select_topk(p.masked_fill(~allowed[:, lo:], float("-inf")), k), stop)
            hits += (ours & oracle).sum().item() / k
            kept += (p * ours).sum().item()
            rows += p.shape[0] * p.shape[1]
        recall.append(hits / rows)
        mass.append(kept / rows)
        state = model.finish(index, state, torch.cat(outs, dim=2), None)
    overlap = adjacent_overlap(model, input_ids)
    random_expect = float(np.mean([k / (t + 1) for t in range(k, seq)]))
    return {"recall": recall, "mass": mass, "adjacent_overlap": overlap, "random_overlap_expected": random_expect}


@torch.no_grad()
def adjacent_overlap(model: RetrofitDSA, input_ids: torch.Tensor) -> list[float]:
    k, seq = model.index_topk, input_ids.shape[1]
    state, prev, out = model.embed(input_ids), None, []
    for index in range(model.num_layers):
        state = model.layer(index, state, True)
        if prev is not None:
            shared = 0.0
            for start, stop in blocks(seq, model.block):
                lo = max(start, k)
                if lo >= stop:
                    continue
                both = selection_mask(prev[:, lo:stop], stop) & selection_mask(state.topk[:, lo:stop], stop)
                shared += both.sum().item()
            out.append(shared / (k * input_ids.shape[0] * (seq - k)))
        prev = state.topk
    return out


# ---- the whole harness ----------------------------------------------------------------------------------------


@dataclass
class EvalConfig:
    seq: int = 8192
    heldout_windows: int = 16  # per domain
    batch: int = 4
    topks: tuple[int, ...] = (128, 256, 512)
    main_topk: int = 256
    probe_contexts: tuple[int, ...] = (2048, 8192)
    depths: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
    keys: int = 4
    repeat_segment: int = 256
    repeat_gaps: tuple[int, ...] = (3000, 7000)
    repeat_rows: int = 8
    stats_windows: int = 1  # per domain, for recall / mass / overlap
    seed: int = 0


def variants(num_layers: int, config: EvalConfig, patterns: dict[str, str] | None = None) -> list[Variant]:
    k = config.main_topk
    out = [Variant(DENSE, DENSE, k)]
    out += [Variant(f"all-F k={t}", "F" * num_layers, t) for t in config.topks]
    out += [
        Variant(f"F then all-S k={k}", "F" + "S" * (num_layers - 1), k),
        Variant(f"random k={k}", RANDOM, k),
    ]
    out += [Variant(f"{name} k={k}", p, k) for name, p in (patterns or {}).items()]
    return out


def run_eval(model, tok, splits: dict[str, np.ndarray], config: EvalConfig, patterns=None, save=None) -> dict:
    """``splits``: held-out tokens per domain. Returns the JSON-able results of every part; ``save(result)``,
    if given, is called after each part so that a run cut short keeps what it measured."""
    save = save or (lambda result: None)
    from tqdm import tqdm

    rng = np.random.default_rng(config.seed)
    result: dict = {"config": {k: v for k, v in config.__dict__.items()}, "heldout": {}, "passkey": {}, "repeat": {}}
    runs = variants(model.num_layers, config, patterns)
    result["variants"] = {v.name: {"kind": v.kind, "topk": v.topk} for v in runs}
    wins = {d: _windows(t, config.seq, config.heldout_windows) for d, t in splits.items()}
    for v in tqdm(runs, desc="held-out", mininterval=5):
        result["heldout"][v.name] = {d: heldout_loss(model, v, w, config.batch) for d, w in wins.items()}
    save(result)
    result["selection"] = selection_summary(model, wins, config)
    save(result)
    filler = splits.get("prose", next(iter(splits.values())))
    code = splits.get("code", filler)
    for context in config.probe_contexts:
        keys = [int(x) for x in rng.integers(10000, 99999, size=config.keys)]
        probes = {d: passkey_batch(tok, filler, context, d, keys) for d in config.depths}
        for v in tqdm(runs, desc=f"passkey {context}", mininterval=5):
            result["passkey"].setdefault(v.name, {})[str(context)] = {
                str(d): _batched(model, v, p, config.batch)[0] for d, p in probes.items()
            }
    save(result)
    starts = rng.integers(0, code.size - config.repeat_segment, size=config.repeat_rows)
    segments = np.stack([code[s : s + config.repeat_segment] for s in starts]).astype(np.int64)
    for gap in config.repeat_gaps:
        probe = repeat_batch(segments, filler, gap)
        first = probe.targets - gap - config.repeat_segment
        for v in tqdm(runs, desc=f"repeat gap {gap}", mininterval=5):
            second, first_copy = _batched(model, v, probe, config.batch, first)
            result["repeat"].setdefault(v.name, {})[str(gap)] = {"second": second, "first": first_copy}
    save(result)
    return result


def selection_summary(model: RetrofitDSA, wins: dict[str, np.ndarray], config: EvalConfig) -> dict:
    saved = model.index_topk
    model.index_topk = config.main_topk
    try:
        stats = [
            selection_stats(model, torch.from_numpy(w[: config.stats_windows]).to(model.device)) for w in wins.values()
        ]
    finally:
        model.index_topk = saved
    out = {key: np.mean([s[key] for s in stats], axis=0).tolist() for key in ("recall", "mass", "adjacent_overlap")}
    out["random_overlap_expected"] = float(np.mean([s["random_overlap_expected"] for s in stats]))
    out["topk"] = config.main_topk
    return out


def _windows(tokens: np.ndarray, seq: int, count: int) -> np.ndarray:
    from .corpus import windows

    return windows(tokens, seq, count)


def _batched(model, variant: Variant, probe: ProbeBatch, batch: int, *more: torch.Tensor) -> list[dict]:
    """:func:`probe_scores` over row batches of ``probe``, combined weighting rows equally."""
    parts = []
    for s in range(0, probe.input_ids.shape[0], batch):
        rows = slice(s, s + batch)
        parts.append(
            probe_scores(
                model, variant, ProbeBatch(probe.input_ids[rows], probe.targets[rows]), *(m[rows] for m in more)
            )
        )
    total = sum(p[0]["rows"] for p in parts)
    return [
        {key: sum(p[i][key] * p[i]["rows"] for p in parts) / total for key in ("loss", "exact")} | {"rows": total}
        for i in range(len(parts[0]))
    ]


def format_tables(result: dict) -> str:
    """The printed report: held-out loss (and gap to dense) per domain, the probes, the selection figures."""
    lines = []
    held = result["heldout"]
    domains = list(next(iter(held.values())))
    dense = held[DENSE]
    head = f"{'variant':22}" + "".join(f" {d + ' loss':>11} {'Δ vs dense':>10} {'ppl':>8}" for d in domains)
    lines += ["held-out next-token loss (nats)", head, "-" * len(head)]
    for name, per in held.items():
        row = f"{name:22}"
        for d in domains:
            row += f" {per[d]['loss']:11.4f} {per[d]['loss'] - dense[d]['loss']:+10.4f} {per[d]['ppl']:8.2f}"
        lines.append(row)
    lines.append("")
    for context in next(iter(result["passkey"].values())):
        depths = list(next(iter(result["passkey"].values()))[context])
        head = f"{'passkey @' + context:22}" + "".join(f" {'d=' + d:>13}" for d in depths) + f" {'mean exact':>11}"
        lines += [f"passkey retrieval, context {context}: answer-digit loss / exact-match share", head, "-" * len(head)]
        for name, per in result["passkey"].items():
            cells = per[context]
            row = f"{name:22}" + "".join(f" {cells[d]['loss']:6.3f}/{cells[d]['exact']:5.2f} " for d in depths)
            row += f" {np.mean([cells[d]['exact'] for d in depths]):11.2f}"
            lines.append(row)
        lines.append("")
    gaps = list(next(iter(result["repeat"].values())))
    head = f"{'repeated segment':22}" + "".join(f" {'gap ' + g + ' 2nd':>13} {'1st':>7}" for g in gaps)
    lines += ["repeated-segment probe: loss on the second copy (and the first)", head, "-" * len(head)]
    for name, per in result["repeat"].items():
        row = f"{name:22}" + "".join(f" {per[g]['second']['loss']:13.3f} {per[g]['first']['loss']:7.3f}" for g in gaps)
        lines.append(row)
    sel = result["selection"]
    lines += ["", f"indexer selections at k={sel['topk']} (rows with more than k visible keys)"]
    lines.append(f"{'layer':>5} {'recall':>7} {'mass':>6} {'overlap(l,l+1)':>15}")
    for i, (r, m) in enumerate(zip(sel["recall"], sel["mass"])):
        ov = f"{sel['adjacent_overlap'][i]:15.3f}" if i < len(sel["adjacent_overlap"]) else " " * 15
        lines.append(f"{i:5d} {r:7.3f} {m:6.3f} {ov}")
    lines.append(
        f" mean {np.mean(sel['recall']):7.3f} {np.mean(sel['mass']):6.3f} {np.mean(sel['adjacent_overlap']):15.3f}"
        f"   (two random selections would overlap {sel['random_overlap_expected']:.3f})"
    )
    return "\n".join(lines)
