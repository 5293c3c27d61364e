"""Switch a serving model between layer maps under load; compare with fresh servers. Prints a table, writes JSON.

1. One server starts with the first map (all-F by default, so every layer stays switchable), with
   ``--disable-cuda-graph`` and ``--admin-api-key``.
2. Concurrent long requests run the whole time; every few seconds ``POST /indexcache/map`` switches to the
   next map. After each switch the load pauses, fixed probe prompts run cold (greedy, prompt logprobs), and
   the load resumes. Every request of the load must succeed.
3. One fresh server per map, started with that map, runs the same probes, twice (its own run-to-run noise:
   SGLang's DSA path is not bitwise reproducible, see verify_gpu.py).
The switched server's probes must match the fresh server of the same map within that noise, and differ from
the fresh all-F server's beyond it (the check is sensitive).

    python scripts/switch_under_load.py --model DIR --out results/switch --server-args "$GPUKIT_SGLANG_ARGS"
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from sglang_indexcache.admin import AdminError, status, switch_map  # noqa: E402
from sglang_indexcache.bench.client import generate_native, random_prompt  # noqa: E402
from sglang_indexcache.bench.server import Server, map_file, num_layers  # noqa: E402
from verify_gpu import generate, check_patterns  # noqa: E402  (the same greedy request with the prompt logprobs of the tail)

KEY = "indexcache-switch-test"
PROBES = [1500, 9000, 17000]
PROBE_NEW_TOKENS = 16


def default_maps(n_layers: int) -> dict[str, str]:
    quarter, _, irregular = check_patterns(n_layers)
    return {"allF": "F" * n_layers, "1of4": quarter, "irregular": irregular}


def probe(server: Server, prompts: list[list[int]]) -> list[dict]:
    """Each probe prompt cold (after a cache flush), greedy, with the prompt logprobs of its tail."""
    out = []
    for ids in prompts:
        server.flush_cache()
        out.append(generate(server.port, ids, PROBE_NEW_TOKENS))
    return out


def compare(a: list[dict], b: list[dict]) -> dict:
    ids = sum(x["ids"] == y["ids"] for x, y in zip(a, b))
    lp = max(abs(u - v) for x, y in zip(a, b) for u, v in zip(x["prompt_lp"], y["prompt_lp"]))
    return {"ids_equal": f"{ids}/{len(a)}", "all_ids_equal": ids == len(a), "max_prompt_lp_diff": lp}


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


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="a random-initialised checkpoint (make_random_checkpoint.py)")
    ap.add_argument("--sequence", nargs="+", default=["allF", "1of4", "irregular", "allF"],
                    help="maps in switching order; the first is the start-up map")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--load-lengths", type=int, nargs=2, default=[2000, 16000])
    ap.add_argument("--load-seconds", type=float, default=8, help="load before each switch")
    ap.add_argument("--port", type=int, default=31400)
    ap.add_argument("--server-args", default="")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    maps = default_maps(num_layers(args.model))
    tmp = Path(tempfile.mkdtemp())

    flags = [*args.server_args.split(), "--skip-tokenizer-init", "--disable-cuda-graph", "--admin-api-key", KEY,
             "--mem-fraction-static", "0.5", "--chunked-prefill-size", "8192", "--context-length", "40000"]
    rng = np.random.default_rng(0)
    prompts = [random_prompt(rng, n) for n in PROBES]
    report = {"sequence": args.sequence, "maps": {k: maps[k] for k in set(args.sequence)}, "switches": []}
    started = time.time()
    start = args.sequence[0]
    with Server("switching", args.model, args.port, flags,
                env={"SGLANG_INDEXCACHE_MAP": map_file(tmp, start, maps[start])}, logdir=args.out) as server:
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
    (args.out / "switching.json").write_text(json.dumps(report, indent=1))
    fresh = {}
    for name in dict.fromkeys(args.sequence[1:] + args.sequence[:1]):  # the maps switched to first
        with Server(f"fresh-{name}", args.model, args.port, flags,
                    env={"SGLANG_INDEXCACHE_MAP": map_file(tmp, name, maps[name])}, logdir=args.out) as server:
            fresh[name] = {"first": probe(server, prompts), "again": probe(server, prompts)}
        print(f"[fresh {name}] done at {time.time() - started:.0f}s", flush=True)
    report["fresh"] = fresh
    report["rows"] = rows(report)
    report["wall_s"] = time.time() - started
    (args.out / "switch_under_load.json").write_text(json.dumps(report, indent=1))
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
        verdict = "identical" if same["all_ids_equal"] and same["max_prompt_lp_diff"] == 0 else \
            "within noise" if same["max_prompt_lp_diff"] <= 1.5 * noise else "DIFFERS"
        row = {"check": f"switch {i + 1} -> {name}: HTTP {entry['status']}, serving {entry['served_pattern']}",
               **same, "seconds": entry["seconds"],
               "verdict": verdict if entry["status"] == 200 and entry["served_pattern"] == report["maps"][name]
               else "SWITCH FAILED"}
        if name != "allF" and "allF" in fresh:
            other = compare(entry["probes"], fresh["allF"]["first"])
            row["vs_fresh_allF_lp_diff"] = other["max_prompt_lp_diff"]
            row["sensitive"] = other["max_prompt_lp_diff"] > 2 * noise
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


if __name__ == "__main__":
    main()
