"""Searched vs uniform maps on the retrofit testbed: calibrate on prose and on code, evaluate every map on the
held-out prose and code. Prints a table, writes JSON.

1. ``sglang-indexcache calibrate`` on each domain's calibration split (the testbed's bundled token files).
2. The mean next-token loss on each domain's held-out split of: all-F, uniform maps (``freq`` 2, 4, 8: layer 0
   and every freq-th layer Full, the same Full count as the searched map of that ratio), and the maps searched
   on prose and on code. ``scripts/calibrate_testbed.py`` is its command line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..calibrate.run import Options as CalibrateOptions
from ..calibrate.run import calibrate
from ..schedule import pattern_from_freq
from . import results

WHAT = "calibrate_testbed: searched vs uniform maps on the retrofit testbed"
SPLITS = Path(__file__).resolve().parents[1] / "testbed" / "splits"


@dataclass
class Options:
    out: Path
    model: str = "testbed"
    splits: Path = SPLITS
    calibration_tokens: int = 512
    seq_len: int | None = None
    heldout_windows: int = 8
    ratios: list[float] = field(default_factory=lambda: [0.5, 0.25, 0.125])
    device: str = "cpu"


DOMAINS = ("prose", "code")


def run(args: Options) -> int:
    started = time.time()
    report: dict = {"model": args.model, "calibration_tokens": args.calibration_tokens, "searches": {}}
    searched: dict[str, str] = {}
    for domain in DOMAINS:
        outcome = calibrate(CalibrateOptions(model=args.model, data=args.splits / f"{domain}-calibration.npy",
                                    out=args.out / domain, ratios=args.ratios, seq_len=args.seq_len,
                                    max_tokens=args.calibration_tokens, device=args.device, progress=False))
        state = outcome.state
        report["searches"][domain] = {"order": state.order, "loss": state.loss, "base_loss": state.base_loss,
                                      "maps": {m.name: m.layer_map.pattern for m in outcome.maps},
                                      **outcome.summary["cost"], "wall_s": outcome.summary["wall_s"],
                                      "seq_len": outcome.summary["data"]["seq_len"]}
        for chosen in outcome.maps:
            if chosen.ratio is not None:
                searched[f"{chosen.name} ({domain})"] = chosen.layer_map.pattern
        print(f"[calibrated on {domain}] {time.time() - started:.0f}s", flush=True)
    seq_len = report["searches"]["prose"]["seq_len"]
    report["heldout"] = heldout(args, seq_len, searched)
    report["wall_s"] = round(time.time() - started, 1)
    results.write(args.out / "calibrate_testbed.json", WHAT, args, report)
    for line in table(report):
        print(line)
    return 0


def heldout(args, seq_len: int, searched: dict[str, str]) -> dict:
    import numpy as np
    import torch

    from sglang_indexcache.inprocess.load import TESTBED
    from sglang_indexcache.inprocess.runner import mean_loss

    model = TESTBED(args.model, args.device)
    n = model.num_layers
    maps = {"all-F": "F" * n}
    for ratio in args.ratios:
        freq = round(1 / ratio)
        maps[f"uniform 1/{freq}"] = pattern_from_freq(n, freq, offset=1)
    maps.update(searched)
    out = {}
    for domain in DOMAINS:
        tokens = np.load(args.splits / f"{domain}-heldout.npy")
        count = min(args.heldout_windows, tokens.size // seq_len)
        windows = torch.from_numpy(tokens[: count * seq_len].reshape(count, seq_len).astype(np.int64))
        batches = list(windows.split(2))
        for name, pattern in maps.items():
            out.setdefault(name, {"pattern": pattern})[domain] = mean_loss(model, pattern, batches)
        out["_tokens"] = {**out.get("_tokens", {}), domain: count * seq_len}
    return out


def table(report: dict) -> list[str]:
    lines = ["| map | Full | held-out prose | held-out code | pattern |", "|---|---|---|---|---|"]
    rows = {k: v for k, v in report["heldout"].items() if not k.startswith("_")}
    for name, row in rows.items():
        lines.append(f"| {name} | {row['pattern'].count('F')} | {row['prose']:.4f} | {row['code']:.4f} | "
                     f"`{row['pattern']}` |")
    lines.append(f"held-out tokens: {report['heldout']['_tokens']}")
    for domain, s in report["searches"].items():
        lines.append(f"calibrated on {domain}: order {s['order']}, {s['layer_forwards']:.0f} layer forwards "
                     f"({100 * s['fraction_of_naive']:.1f}% of naive), {s['wall_s']} s")
    return lines
