"""Check a live server's Prometheus metrics against its own counters. Prints a table, writes JSON.

One server starts with a map, ``--enable-metrics`` and ``--admin-api-key`` (CUDA graphs as you pass them), serves
a few prompts of mixed lengths, then ``GET /metrics`` (SGLang's Prometheus endpoint) is compared layer by layer
with ``GET /indexcache``: the same call and skip counts, Full layers only calling, Shared layers only skipping,
and the Full-layer gauge equal to the map's count. Counters count forwards that run Python, so with CUDA graphs
on they cover prefills, not graph-replayed decode steps. ``scripts/metrics_check.py`` is its command line.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests
from prometheus_client.parser import text_string_to_metric_families

from ..admin import status
from ..names import ENV_MAP
from ..schedule import pattern_from_freq
from . import results
from .client import greedy, random_prompt
from .server import Server, map_file, num_layers

WHAT = "metrics_check: Prometheus metrics against the server's own counters"


@dataclass
class Options:
    model: str
    out: Path
    pattern: str | None = None
    lengths: list[int] = field(default_factory=lambda: [900, 5000, 20000])
    port: int = 31600
    server_args: str = ""
    sglang: str | None = None  # the SGLang release every server must report (e.g. 0.5.17 for the 0.5.17 kit)


KEY = "indexcache-metrics-check"
CALLS, SKIPS, FULL = ("sglang:indexcache_indexer_calls_total", "sglang:indexcache_indexer_skips_total",
                      "sglang:indexcache_full_layers")


def indexcache_samples(exposition: str) -> dict:
    """``{"calls": {(rank, layer): n}, "skips": {...}, "full_layers": {rank: n}}`` from Prometheus text."""
    out = {"calls": {}, "skips": {}, "full_layers": {}}
    for family in text_string_to_metric_families(exposition):
        for s in family.samples:
            if s.name in (CALLS, SKIPS):
                out["calls" if s.name == CALLS else "skips"][(s.labels["rank"], int(s.labels["layer"]))] = s.value
            elif s.name == FULL:
                out["full_layers"][s.labels["rank"]] = s.value
    return out


def check(pattern: str, state: dict, prom: dict) -> tuple[list[dict], bool]:
    """One row per layer, and whether every layer and the gauge agree."""
    rank = str(state["rank"])
    counters = state["counters"]
    rows, ok = [], True
    for layer, role in enumerate(pattern):
        calls = int(counters["calls"].get(str(layer), counters["calls"].get(layer, 0)))
        skips = int(counters["skips"].get(str(layer), counters["skips"].get(layer, 0)))
        p_calls = int(prom["calls"].get((rank, layer), 0))
        p_skips = int(prom["skips"].get((rank, layer), 0))
        good = (calls, skips) == (p_calls, p_skips) and ((calls > 0 and skips == 0) if role == "F"
                                                         else (calls == 0 and skips > 0))
        ok &= good
        rows.append({"layer": layer, "role": role, "calls": calls, "prom_calls": p_calls, "skips": skips,
                     "prom_skips": p_skips, "ok": good})
    gauge = prom["full_layers"].get(rank)
    ok &= gauge == pattern.count("F")
    rows.append({"layer": "gauge", "role": "", "calls": pattern.count("F"), "prom_calls": gauge, "skips": "",
                 "prom_skips": "", "ok": gauge == pattern.count("F")})
    return rows, ok


def run(args: Options) -> int:
    args.out.mkdir(parents=True, exist_ok=True)
    pattern = args.pattern or pattern_from_freq(num_layers(args.model), 4, offset=1)
    flags = [*args.server_args.split(), "--skip-tokenizer-init", "--enable-metrics", "--admin-api-key", KEY]
    env = {ENV_MAP: map_file(Path(tempfile.mkdtemp()), "metrics", pattern)}
    rng = np.random.default_rng(0)
    with Server("metrics", args.model, args.port, flags, env=env, logdir=args.out, sglang=args.sglang) as server:
        for n in args.lengths:
            greedy(server.url, random_prompt(rng, n), 8, logprobs=False)
        # The workers publish their counters once a second; after two seconds idle everything counted is out.
        time.sleep(2.5)
        state = status(server.url, KEY)[0]
        exposition = requests.get(f"{server.url}/metrics", timeout=30).text
    prom = indexcache_samples(exposition)
    rows, ok = check(pattern, state, prom)
    print(f"map {pattern}, forwards counted {state['counters']['forwards']}")
    print(f"{'layer':>6s} {'role':>4s} {'calls':>8s} {'prom':>8s} {'skips':>8s} {'prom':>8s}  ok")
    for r in rows:
        print(f"{r['layer']!s:>6s} {r['role']:>4s} {r['calls']!s:>8s} {r['prom_calls']!s:>8s} {r['skips']!s:>8s} "
              f"{r['prom_skips']!s:>8s}  {'yes' if r['ok'] else 'NO'}")
    print("metrics match the counters" if ok else "MISMATCH")
    lines = [line for line in exposition.splitlines() if "indexcache" in line]
    results.write(args.out / "metrics_check.json", WHAT, args,
                  {"pattern": pattern, "rows": rows, "ok": ok, "status": state, "exposition": lines})
    return 0 if ok else 1
