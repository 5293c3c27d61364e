"""Evaluate the retrofit DSA model under layer maps: held-out loss per domain, retrieval probes, selections.

    python scripts/testbed_eval.py [--indexers FILE] [--pattern NAME=FSFS...] [--map glm-5/uniform-1of2] --json out.json

Always runs the dense base model, all-F at every ``--topk``, F-then-all-S and a random selection; each
``--pattern``/``--map`` adds a variant at ``--main-topk``. Prints the tables and writes them with the JSON.
"""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from sglang_indexcache.bench import results
from sglang_indexcache.testbed.cli import one_line_errors, parse_patterns, pick_device
from sglang_indexcache.testbed.corpus import load_split
from sglang_indexcache.testbed.evaluate import EvalConfig, format_tables, run_eval
from sglang_indexcache.testbed.load import SHIPPED_INDEXERS, load_dsa, load_tokenizer, read_indexers

WHAT = "testbed_eval: the retrofit DSA model under layer maps"


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


@one_line_errors
def main(
    json_out: Path = typer.Option(Path("results/testbed_eval.json"), "--json"),
    indexers: Path = SHIPPED_INDEXERS,
    base: str = typer.Option(None, help="default: the base model the indexer file names"),
    splits: Path = Path("sglang_indexcache/testbed/splits"),
    pattern: list[str] = typer.Option([], help="NAME=FS... (one character per layer)"),
    map_: list[str] = typer.Option([], "--map", help="a shipped map name or a YAML map file"),
    seq: int = 8192,
    heldout_windows: int = 16,
    batch: int = 4,
    topk: str = "128,256,512",
    main_topk: int = 256,
    probe_contexts: str = "2048,8192",
    repeat_gaps: str = "3000,7000",
    keys: int = 4,
    block: int = 512,
    num_layers: int = typer.Option(None, help="the first N layers only (smoke tests)"),
    device: str = "auto",
) -> None:
    arguments = dict(locals())  # for the results file
    dev = pick_device(device)
    _, meta = read_indexers(indexers)
    layers = num_layers or meta["num_layers"]
    patterns = parse_patterns(pattern, map_, layers)
    held = {d: load_split(splits, d, "heldout") for d in ("prose", "code")}
    dtype = torch.bfloat16 if dev.type == "cuda" else torch.float32
    model = load_dsa(indexers, base=base, num_layers=num_layers, dtype=dtype, block=block).to(dev)
    tok = load_tokenizer(base or meta["base"])
    config = EvalConfig(
        seq=seq, heldout_windows=heldout_windows, batch=batch, topks=ints(topk), main_topk=main_topk,
        probe_contexts=ints(probe_contexts), repeat_gaps=ints(repeat_gaps), keys=keys,
    )
    json_out.parent.mkdir(parents=True, exist_ok=True)
    source = {"file": str(indexers), **{k: meta[k] for k in ("base", "stages") if k in meta}}

    def save(partial: dict) -> None:
        results.write(json_out, WHAT, arguments, {**partial, "indexers": source})

    result = run_eval(model, tok, held, config, patterns, save=save)
    table = format_tables(result)
    print(table)
    json_out.with_suffix(".txt").write_text(table + "\n")


if __name__ == "__main__":
    typer.run(main)
