"""Switch a serving model between layer maps under load; compare with fresh servers. Prints a table, writes JSON.

1. One server starts with the first map (all-F by default, so every layer stays switchable), with
   ``--disable-cuda-graph`` and ``--admin-api-key``.
2. Concurrent long requests run the whole time; every few seconds ``POST /indexcache/map`` switches to the
   next map. After each switch the load pauses, fixed probe prompts run cold (greedy, prompt logprobs), and
   the load resumes. Every request of the load must succeed.
3. One fresh server per map, started with that map, runs the same probes, twice (its own run-to-run noise:
   SGLang's DSA path is not bitwise reproducible, see bench.verdict).
The switched server's probes must match the fresh server of the same map within that noise, and differ from
the fresh all-F server's beyond it (the check is sensitive). ``scripts/switch_under_load.py`` is its command
line.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..admin import AdminError, status, switch_map
from ..names import ENV_MAP
from . import results, verdict
from .client import flush_cache, generate_native, greedy, random_prompt
from .patterns import switching_maps
from .server import Server, map_file, num_layers

WHAT = "switch_under_load: switching maps under load against fresh servers"


@dataclass
class Options:
    model: str
    out: Path
    sequence: list[str] = field(default_factory=lambda: ["allF", "1of4", "irregular", "allF"])
    concurrency: int = 8
    load_lengths: list[int] = field(default_factory=lambda: [2000, 16000])
    load_seconds: float = 8
    port: int = 31400
    server_args: str = ""
    sglang: str | None = None  # the SGLang release every server must report (e.g. 0.5.17 for the 0.5.17 kit)


KEY = "indexcache-switch-test"
PROBES = [1500, 9000, 17000]
PROBE_NEW_TOKENS = 16


def probe(server: Server, prompts: list[list[int]]) -> list[dict]:
    """Each probe prompt cold (after a cache flush), greedy, with the prompt logprobs of its tail."""
    out = []
    for ids in prompts:
        flush_cache(server.url)
        out.append(greedy(server.url, ids, PROBE_NEW_TOKENS))
    return out


def compare(a: list[dict], b: list[dict]) -> dict:
    """Two runs of the same probes, by the largest prompt-logprob difference: a handful of probes is too few
    positions for the mean that verify_gpu judges by."""
    c = verdict.compare(dict(enumerate(a)), dict(enumerate(b)))
    return {"ids_equal": f"{c.generations_equal}/{c.generations}",
            "all_ids_equal": c.generations_equal == c.generations, "max_prompt_lp_diff": c.max_lp_diff}


class Load:
    """Closed-loop load: ``concurrency`` workers sending long random prompts until stopped; pausable."""

    def __init__(self, url: str, concurrency: int, lengths: tuple[int, int], new_tokens: int, seed: int = 0):
        self.url, self.concurrency, self.lengths, self.new_tokens = url, concurrency, lengths, new_tokens
        self.rng = np.random.default_rng(seed)
        self.ok, self.failed, self.errors = 0, 0, []
        self._run = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Semaphore(0)
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)

    async def _worker(self, session):
        while not self._stop.is_set():
            if not self._run.is_set():
                self._idle.release()
                while not self._run.is_set() and not self._stop.is_set():
                    await asyncio.sleep(0.05)
                continue
            n = int(self.rng.integers(*self.lengths))
            result = await generate_native(session, self.url, random_prompt(self.rng, n), self.new_tokens)
            if result.ok:
                self.ok += 1
            else:
                self.failed += 1
                self.errors.append(result.error)

    async def _main(self):
        import aiohttp

        async with aiohttp.ClientSession() as session:
            await asyncio.gather(*(self._worker(session) for _ in range(self.concurrency)))

    def start(self):
        self._run.set()
        self._thread.start()

    def pause(self):
        """Stop sending; returns once every worker's request in flight has finished."""
        self._run.clear()
        for _ in range(self.concurrency):
            self._idle.acquire()

    def resume(self):
        self._run.set()

    def stop(self):
        self._stop.set()
        self._run.set()
        self._thread.join(60)


def switch(url: str, pattern: str) -> dict:
    t = time.perf_counter()
    try:
        body, code = switch_map(url, KEY, index_topk_pattern=pattern), 200
    except AdminError as e:
        body, code = {"error": str(e)}, e.status
    return {"status": code, "seconds": time.perf_counter() - t, "body": body}


def served_pattern(url: str) -> str:
    return status(url, KEY)[0]["pattern"]


def run(args: Options) -> dict:
    args.out.mkdir(parents=True, exist_ok=True)
    maps = switching_maps(num_layers(args.model))
    tmp = Path(tempfile.mkdtemp())

    flags = [*args.server_args.split(), "--skip-tokenizer-init", "--disable-cuda-graph", "--admin-api-key", KEY,
             "--mem-fraction-static", "0.5", "--chunked-prefill-size", "8192", "--context-length", "40000"]
    rng = np.random.default_rng(0)
    prompts = [random_prompt(rng, n) for n in PROBES]
    report = {"sequence": args.sequence, "maps": {k: maps[k] for k in set(args.sequence)}, "switches": []}
    started = time.time()
    start = args.sequence[0]
    with Server("switching", args.model, args.port, flags,
                env={ENV_MAP: map_file(tmp, start, maps[start])}, logdir=args.out, sglang=args.sglang) as server:
        load = Load(server.url, args.concurrency, tuple(args.load_lengths), 32)
        load.start()
        for name in args.sequence[1:]:
            time.sleep(args.load_seconds)
            in_flight_at_switch = load.ok + load.failed
            result = switch(server.url, maps[name])
            load.pause()
            entry = {"to": name, **result, "load_requests_before": in_flight_at_switch,
                     "served_pattern": served_pattern(server.url), "probes": probe(server, prompts)}
            report["switches"].append(entry)
            print(f"[switch -> {name}] HTTP {result['status']} in {result['seconds']:.2f}s; serving "
                  f"{entry['served_pattern']}; load so far ok={load.ok} failed={load.failed}", flush=True)
            load.resume()
        time.sleep(args.load_seconds)
        load.pause()
        load.stop()
        report["load"] = {"ok": load.ok, "failed": load.failed, "errors": load.errors[:10]}
    # Kept before the fresh servers start, so a run cut short still has the switching half.
    results.write(args.out / "switching.json", WHAT, args, report)
    fresh = {}
    for name in dict.fromkeys(args.sequence[1:] + args.sequence[:1]):  # the maps switched to first
        with Server(f"fresh-{name}", args.model, args.port, flags,
                    env={ENV_MAP: map_file(tmp, name, maps[name])}, logdir=args.out, sglang=args.sglang) as server:
            fresh[name] = {"first": probe(server, prompts), "again": probe(server, prompts)}
        print(f"[fresh {name}] done at {time.time() - started:.0f}s", flush=True)
    report["fresh"] = fresh
    report["rows"] = rows(report)
    report["wall_s"] = time.time() - started
    results.write(args.out / "switch_under_load.json", WHAT, args, report)
    print_table(report)
    return report


def rows(report: dict) -> list[dict]:
    fresh = report["fresh"]
    noise = max(compare(f["first"], f["again"])["max_prompt_lp_diff"] for f in fresh.values())
    out = [{"check": "noise: each fresh server's probes twice (max)", "max_prompt_lp_diff": noise,
            "verdict": "reference"}]
    for i, entry in enumerate(report["switches"]):
        name = entry["to"]
        same = compare(entry["probes"], fresh[name]["first"])
        judged = "identical" if same["all_ids_equal"] and same["max_prompt_lp_diff"] == 0 else \
            "within noise" if verdict.within_noise(same["max_prompt_lp_diff"], noise) else "DIFFERS"
        row = {"check": f"switch {i + 1} -> {name}: HTTP {entry['status']}, serving {entry['served_pattern']}",
               **same, "seconds": entry["seconds"],
               "verdict": judged if entry["status"] == 200 and entry["served_pattern"] == report["maps"][name]
               else "SWITCH FAILED"}
        if name != "allF" and "allF" in fresh:
            other = compare(entry["probes"], fresh["allF"]["first"])
            row["vs_fresh_allF_lp_diff"] = other["max_prompt_lp_diff"]
            row["sensitive"] = verdict.beyond_noise(other["max_prompt_lp_diff"], noise)
        out.append(row)
    load = report["load"]
    out.append({"check": f"load during switches: {load['ok']} ok, {load['failed']} failed",
                "verdict": "ok" if load["failed"] == 0 and load["ok"] > 0 else "FAILED REQUESTS"})
    return out


def print_table(report: dict) -> None:
    def num(value, fmt):
        return "" if value is None else format(value, fmt)

    print(f"\n{'check':62s} {'ids':5s} {'lp diff':>8s} {'vs all-F':>9s} {'switch s':>9s}  verdict")
    for r in report["rows"]:
        sensitive = "" if "sensitive" not in r else "; sensitive" if r["sensitive"] else "; NOT sensitive"
        print(f"{r['check']:62s} {r.get('ids_equal', ''):5s} {num(r.get('max_prompt_lp_diff'), '.3g'):>8s} "
              f"{num(r.get('vs_fresh_allF_lp_diff'), '.3g'):>9s} {num(r.get('seconds'), '.2f'):>9s}  "
              f"{r['verdict']}{sensitive}")
