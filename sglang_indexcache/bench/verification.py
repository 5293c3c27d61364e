"""Launch real SGLang servers with and without IndexCache and check they agree; prints a table, writes JSON.

Checks (one model, same seed, greedy decoding):
  1. all-F map through the plugin == stock SGLang (no plugin): output ids and prompt logprobs;
  2. maps with Shared layers == SGLang's native ``index_topk_pattern`` with the same pattern (output ids;
     logprob differences reported);
  3. indexer calls per forward == Full layers, Shared layers' index-key cache never written;
  4. CUDA graphs on and off, chunked prefill (prompts longer than --chunked-prefill-size), a radix-cache
     prefix hit, and 16 concurrent mixed-length requests vs their solo runs; with --gpus 2, TP and PP, and on a
     MoE model two-batch overlap under DP attention (SGLang's own schedule keys must be refused with it);
  5. sensitivity (all-F and 1/4 differ on long prompts) and a prefill-speed sanity check at 64K;
  6. with --schedule-model (a checkpoint whose config states its own schedule and that ships no indexer weights
     for its Shared layers, see make_random_checkpoint.py --index-topk-freq): served with no request == served
     with that schedule requested explicitly, and both differ from stock SGLang's reading of the same config.

Equality is judged by sglang_indexcache.bench.verdict: the mean |prompt-logprob difference| over every compared
position against a noise floor measured in the same run (two launches of the same server, and one server
answering the same cold prompt twice).

The model should be a random-initialised checkpoint at realistic scale (bench.random_checkpoint): SGLang's
dummy weights are so small that outputs barely depend on which tokens the indexer picks. Run through
``scripts/verify_gpu.py``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import contextlib
import json
import os
import shlex
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..names import ENV_DEBUG_FILE, ENV_DISABLE, ENV_MAP, SCHEDULE_KEYS
from . import results, verdict
from .client import flush_cache, greedy, random_prompt
from .patterns import native_patterns
from .server import Server, map_file
from .serverinfo import check_release, served_version

WHAT = "verify_gpu: IndexCache against stock and native SGLang"


@dataclass
class Options:
    model: str | None = None
    out: Path | None = None
    port: int = 31000
    prefill_len: int = 65536
    repeats: int = 3
    only: list[str] | None = None
    gpus: int = 1
    servers_per_gpu: int = 1
    mem_fraction_static: str = "0.5"
    server_args: str = ""
    quick: bool = False
    schedule_model: str | None = None
    report: Path | None = None
    sglang: str | None = None  # the SGLang release every server must report (e.g. 0.5.17 for the 0.5.17 kit)


SHORT = [97, 1500]
LONG = [9000, 17000, 30011]
NEW_TOKENS = [8, 24]
VOCAB = 120000  # prompt ids below the test checkpoint's vocabulary


@dataclass
class ServerSpec:
    name: str
    env: dict = field(default_factory=dict)
    overrides: dict | None = None
    args: list = field(default_factory=list)
    gpus: int = 1
    model: str | None = None  # another checkpoint than --model


def two_batch_overlap_specs(config: dict, quarter_map: str, all_f_map: str, quarter: str,
                            native: dict) -> list[ServerSpec]:
    """Two-GPU servers for two-batch overlap, which SGLang runs on MoE layers only (none for a dense model).

    SGLang 0.5.14+ allows it without an expert-parallel all-to-all backend only with DP attention, so each
    server runs ``--tp-size 2 --dp-size 2 --enable-dp-attention``; the same map without overlap is the
    reference. SGLang's own schedule keys with overlap must be refused by SGLang itself (0.5.14+)."""
    if not config.get("n_routed_experts") or config.get("first_k_dense_replace", 0) >= config["num_hidden_layers"]:
        return []
    dp = ["--tp-size", "2", "--dp-size", "2", "--enable-dp-attention"]
    tbo = [*dp, "--enable-two-batch-overlap"]
    ours = {"indexcache_map": quarter_map}
    return [
        ServerSpec("native-1of4-dp2-tbo", env=native, overrides={"index_topk_pattern": quarter}, args=tbo, gpus=2),
        ServerSpec("ours-1of4-dp2", overrides=ours, args=dp, gpus=2),
        ServerSpec("ours-1of4-dp2-tbo", overrides=ours, args=tbo, gpus=2),
        ServerSpec("ours-allF-dp2-tbo", env={ENV_MAP: all_f_map}, args=tbo, gpus=2),
    ]


def prompts(seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [random_prompt(rng, n, VOCAB) for n in SHORT + LONG]


def generate(port: int, ids: list[int], new_tokens: int, logprobs: bool = True) -> dict:
    return greedy(f"http://127.0.0.1:{port}", ids, new_tokens, logprobs)


def run_suite(port: int, ps: list[list[int]], quick: bool = False) -> dict:
    """Every prompt with each number of new tokens, then a prefix hit and a concurrent burst."""
    out = {"solo": {}}
    for i, p in enumerate(ps):
        for n in NEW_TOKENS:
            # Cold every time: a cached prefix changes chunk boundaries, hence float rounding.
            flush_cache(f"http://127.0.0.1:{port}")
            out["solo"][f"p{i}-len{len(p)}-new{n}"] = generate(port, p, n)
    # Every prompt again, cold: how reproducible this server is by itself (the same prompts, so the same mix of
    # lengths, as the comparisons it is a floor for).
    out["repeats"] = {}
    for i, p in enumerate(ps):
        flush_cache(f"http://127.0.0.1:{port}")
        out["repeats"][f"p{i}-len{len(p)}-new{NEW_TOKENS[-1]}"] = generate(port, p, NEW_TOKENS[-1])
    # Radix-cache prefix hit: the long prompt 3 is cached now; extend it and compare with the cold run below.
    ext = ps[3] + ps[0][:50]
    out["prefix_hit"] = generate(port, ext, 16)
    flush_cache(f"http://127.0.0.1:{port}")
    out["prefix_cold"] = generate(port, ext, 16)
    if quick:
        return out
    # 16 concurrent requests of mixed lengths (the burst's own solo runs come first, one at a time).
    rng = np.random.default_rng(1)
    burst = [random_prompt(rng, int(n), VOCAB) for n in rng.integers(50, 12000, size=16)]
    out["burst_solo"] = [generate(port, p, 16, logprobs=False)["ids"] for p in burst]
    flush_cache(f"http://127.0.0.1:{port}")
    with cf.ThreadPoolExecutor(16) as pool:
        out["burst_concurrent"] = [r["ids"] for r in pool.map(lambda p: generate(port, p, 16, False), burst)]
    return out


def time_prefill(port: int, length: int, repeats: int) -> list[float]:
    rng = np.random.default_rng(7)
    times = []
    for _ in range(repeats + 1):  # the first one warms up kernels for this length
        ids = random_prompt(rng, length, VOCAB)
        t = time.perf_counter()
        generate(port, ids, 1, logprobs=False)
        times.append(time.perf_counter() - t)
    return times[1:]


def run(args: Options) -> list[dict]:
    """Every server and check, then the table; with ``args.report`` only the table from an earlier raw.json."""
    if args.report:
        raw = results.read(args.report)
        raw.setdefault("patterns", {"quarter": ""})
        raw.setdefault("timings", {})
        raw.setdefault("prefill_len", args.prefill_len)
        rows = report(raw)
        print_table(rows)
        return rows
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    config = json.loads((Path(args.model) / "config.json").read_text())
    n_layers = config["num_hidden_layers"]
    quarter, half, irregular = native_patterns(n_layers)
    all_f_map, quarter_map = map_file(tmp, "allF", "F" * n_layers), map_file(tmp, "quarter", quarter)
    debug = str(tmp / "counters")
    kit = os.environ.get("GPUKIT_SGLANG_ARGS", "").split()
    common = [*kit, "--skip-tokenizer-init", "--mem-fraction-static", args.mem_fraction_static,
              "--chunked-prefill-size", "8192",
              "--cuda-graph-max-bs", "16", "--context-length", "80000", *shlex.split(args.server_args)]
    native = {ENV_DISABLE: "1"}
    servers = [
        ServerSpec("stock", env=native),
        ServerSpec("stock-again", env=native),  # the noise floor: SGLang's DSA path is not bitwise run-to-run stable
        ServerSpec("ours-allF", env={ENV_MAP: all_f_map}),
        ServerSpec("native-1of4", env=native, overrides={"index_topk_pattern": quarter}),
        ServerSpec("ours-1of4", overrides={"indexcache_map": quarter_map}),
        ServerSpec("ours-1of4-nograph", env={ENV_MAP: quarter_map,
                                         ENV_DEBUG_FILE: debug}, args=["--disable-cuda-graph"]),
        ServerSpec("native-1of2", env=native, overrides={"index_topk_pattern": half}),
        ServerSpec("ours-1of2", overrides={"index_topk_pattern": half}),  # the HF key, taken over by the plugin
        ServerSpec("native-irregular", env=native, overrides={"index_topk_pattern": irregular}),
        ServerSpec("ours-irregular", env={ENV_MAP: map_file(tmp, "irregular", irregular)}),
    ]
    # A pipeline split of 2 starts stage 2 at layer n/2; the plugin makes that layer Full on stage 2, so the
    # single-GPU reference for the PP run is the same map with that layer Full.
    stage2 = n_layers // 2
    pp_effective = quarter[:stage2] + "F" + quarter[stage2 + 1:]
    servers.append(ServerSpec("ours-pp-reference", env={ENV_MAP: map_file(tmp, "ppref", pp_effective)}))
    n_gpus = args.gpus
    if n_gpus >= 2:
        servers += [
            ServerSpec("ours-1of4-tp2", overrides={"indexcache_map": quarter_map},
                   args=["--tp-size", "2"], gpus=2),
            ServerSpec("ours-1of4-pp2", overrides={"indexcache_map": quarter_map},
                   args=["--pp-size", "2"], gpus=2),
        ]
        servers += two_batch_overlap_specs(config, quarter_map, all_f_map, quarter, native)
    if args.schedule_model:
        stated = json.loads((Path(args.schedule_model) / "config.json").read_text())
        explicit = {k: stated[k] for k in verdict_schedule_keys(stated)}
        servers += [
            ServerSpec("sched-auto", model=args.schedule_model),  # nothing requested: the checkpoint's schedule
            ServerSpec("sched-explicit", model=args.schedule_model, overrides=explicit),
            ServerSpec("sched-explicit-again", model=args.schedule_model, overrides=explicit),
            ServerSpec("sched-stock", model=args.schedule_model, env=native),  # SGLang's own reading: must differ
        ]
    if args.only:
        servers = [s for s in servers if s.name in args.only]
    ps = prompts()
    measured, timings, failures, served = {}, {}, {}, {}

    def serve_and_check(s: ServerSpec, gpu_ids: str, port: int) -> None:
        t0 = time.time()
        flags = [*common, *s.args]
        if s.overrides is not None:
            flags += ["--json-model-override-args", json.dumps(s.overrides)]
        try:
            with contextlib.ExitStack() as stack:
                # SGLang sizes its KV pool from the free memory it sees before and after loading its weights, so
                # servers sharing a GPU size their pools one at a time; the next may start once this one's pool
                # is allocated (CUDA-graph capture, the slow part, overlaps).
                server = Server(s.name, s.model or args.model, port, flags, logdir=args.out,
                                env={**s.env, "CUDA_VISIBLE_DEVICES": gpu_ids}, ready_timeout=600)
                with starting[gpu_ids]:
                    server.start()
                    stack.callback(server.__exit__, None, None, None)
                    server.wait_for_log(*POOL_ALLOCATED)
                server.wait_healthy()
                served[s.name] = served_version(server.url)  # recorded even when it is the wrong release
                check_release(served[s.name], args.sglang)
                measured[s.name] = run_suite(port, ps, args.quick)
                if s.name in ("stock", "ours-allF", "ours-1of4") and args.repeats > 0:
                    timings[s.name] = time_prefill(port, args.prefill_len, args.repeats)
        except Exception as e:  # noqa: BLE001 - record and go on with the other servers
            failures[s.name] = repr(e)
            print(f"[{s.name}] FAILED: {e}", flush=True)
            return
        print(f"[{s.name}] done in {time.time() - t0:.0f}s on GPU {gpu_ids}", flush=True)
        save_raw()  # a run cut short keeps what it measured: --report rebuilds the table from it

    patterns = {"quarter": quarter, "half": half, "irregular": irregular, "pp_reference": pp_effective}

    def save_raw() -> dict:
        counters = {f.name: json.loads(f.read_text()) for f in tmp.glob("counters.*")}
        raw = {"results": dict(measured), "timings": dict(timings), "failures": dict(failures),
               "counters": counters, "patterns": patterns, "prefill_len": args.prefill_len,
               "sglang_served": dict(served)}
        results.write(args.out / "raw.json", WHAT, args, raw, indent=None)
        return raw

    starting = collections.defaultdict(threading.Lock)
    single = [s for s in servers if s.gpus == 1]
    n_lanes = n_gpus * args.servers_per_gpu
    lanes = [single[i::n_lanes] for i in range(n_lanes)]

    def run_lane(i: int) -> None:
        for s in lanes[i]:
            serve_and_check(s, str(i % n_gpus), args.port + 10 * i)

    with cf.ThreadPoolExecutor(n_lanes) as pool:
        list(pool.map(run_lane, range(n_lanes)))
    for s in servers:
        if s.gpus > 1:
            serve_and_check(s, ",".join(str(i) for i in range(s.gpus)), args.port)

    raw = save_raw()
    rows = report(raw)
    results.write(args.out / "verify.json", WHAT, args,
                  {"rows": rows, "patterns": patterns, "prefill_s": timings, "failures": failures,
                   "sglang_served": served})
    for name, why in failures.items():
        print(f"FAILED {name}: {why}")
    print("\nstart-up lines:")
    for log in sorted(args.out.glob("server-*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if "IndexCache active" in line or "IndexCache requested" in line or "IndexCache serves" in line:
                print(f"  {log.stem}: {line.strip()[-220:]}")
    print_table(rows)
    return rows


# (check, a, b, the group whose floor judges it)
EQUALITY = [
    ("1 all-F plugin vs stock", "ours-allF", "stock", "dense"),
    ("2 1/4 vs native", "ours-1of4", "native-1of4", "dense"),
    ("2 1/2 (HF key) vs native", "ours-1of2", "native-1of2", "dense"),
    ("2 irregular vs native", "ours-irregular", "native-irregular", "dense"),
    ("4 1/4 graphs off vs native (graphs on)", "ours-1of4-nograph", "native-1of4", "dense"),
    ("4 1/4 graphs off vs on", "ours-1of4-nograph", "ours-1of4", "dense"),
    ("4 --tp 2 vs 1 GPU (1/4)", "ours-1of4-tp2", "ours-1of4", "dense"),
    ("4 --pp-size 2 (stage 2 starts on S) vs 1 GPU, same effective map", "ours-1of4-pp2", "ours-pp-reference", "dense"),
    ("4 two-batch overlap vs without (1/4, DP attention, 2 GPUs)", "ours-1of4-dp2-tbo", "ours-1of4-dp2", "dense"),
    ("4 DP attention, 2 GPUs vs 1 GPU (1/4)", "ours-1of4-dp2", "ours-1of4", "dense"),
    ("6 checkpoint schedule: no request vs requested explicitly", "sched-auto", "sched-explicit", "schedule"),
]
MUST_DIFFER = [
    ("5 sensitivity: all-F vs 1/4 must differ", "ours-allF", "ours-1of4", "dense"),
    ("5 sensitivity with two-batch overlap: all-F vs 1/4 must differ", "ours-allF-dp2-tbo", "ours-1of4-dp2-tbo",
     "dense"),
    ("6 checkpoint schedule vs stock SGLang's reading (must differ)", "sched-auto", "sched-stock", "schedule"),
]
# Two launches of the same server per group; every server of the group adds its same-prompt repeat.
POOL_ALLOCATED = ("Memory pool end", "KV Cache is allocated", "Capture cuda graph begin")
LAUNCH_PAIRS = {"dense": ("stock-again", "stock"), "schedule": ("sched-explicit-again", "sched-explicit")}
GROUP_OF = {"sched-": "schedule"}


def verdict_schedule_keys(config: dict) -> list[str]:
    return [k for k in SCHEDULE_KEYS if config.get(k) is not None]


def _group(name: str) -> str:
    return next((g for prefix, g in GROUP_OF.items() if name.startswith(prefix)), "dense")


def _repeat(r: dict) -> verdict.Comparison | None:
    """The server against itself over every prompt; runs from before ``repeats`` repeated one long prompt only,
    whose mean is not comparable with comparisons over all prompts, and give none."""
    if "repeats" not in r:
        return None
    return verdict.compare(r["repeats"], {k: r["solo"][k] for k in r["repeats"]})


def _row(check: str, a: str, b, c: verdict.Comparison | None, floor: float | None, judged: str, **extra) -> dict:
    row = {"check": check, "a": a, "b": b, "verdict": judged, **extra}
    if c is not None:
        row.update(c.as_dict(), ids_equal=f"{c.generations_equal}/{c.generations}",
                   all_ids_equal=c.generations_equal == c.generations, floor=floor, x_floor=verdict.multiple(c, floor))
    return row


def report(raw: dict) -> list[dict]:
    """Rows of the verification table, each pair judged against its group's noise floor (see bench.verdict)."""
    results, timings = raw["results"], raw["timings"]
    rows, floors = [], {}
    for group, (a, b) in LAUNCH_PAIRS.items():
        launches = verdict.compare(results[a]["solo"], results[b]["solo"]) if a in results and b in results else None
        repeats = {n: _repeat(r) for n, r in results.items() if _group(n) == group and _repeat(r) is not None}
        if launches is None and not repeats:
            continue
        floor = verdict.noise_floor([*repeats.values(), *([launches] if launches else [])])
        floors[group] = floor
        if launches:
            rows.append(_row(f"0 {group} floor: two launches of {b}", a, b, launches, floor, "reference"))
        for n, c in repeats.items():
            rows.append(_row(f"0 {group} floor: every prompt twice on one server", n, n, c, floor, "reference"))
    for check, a, b, group in EQUALITY:
        if a in results and b in results:
            c = verdict.compare(results[a]["solo"], results[b]["solo"])
            rows.append(_row(check, a, b, c, floors.get(group), verdict.judge_equal(c, floors.get(group))))
    for check, a, b, group in MUST_DIFFER:
        if a in results and b in results:
            c = verdict.compare(results[a]["solo"], results[b]["solo"])
            rows.append(_row(check, a, b, c, floors.get(group), verdict.judge_different(c, floors.get(group))))
    for name, r in results.items():
        floor = floors.get(_group(name))
        c = verdict.compare({"x": r["prefix_hit"]}, {"x": r["prefix_cold"]})
        rows.append(_row("4 radix prefix hit vs cold", name, name, c, floor, verdict.judge_equal(c, floor)))
        if "burst_solo" not in r:
            continue
        same = sum(x == y for x, y in zip(r["burst_solo"], r["burst_concurrent"]))
        rows.append(_row("4 16 concurrent vs solo (ids equal)", name, name, None, None, "compare with stock's row",
                         ids_equal=f"{same}/16", all_ids_equal=same == 16))
    quarter = raw["patterns"]["quarter"]
    for name, c in raw.get("counters", {}).items():
        full = [l for l, ch in enumerate(quarter) if ch == "F"]
        ok_calls = all(c["calls"].get(str(l), 0) == c["forwards"] for l in full) and \
            all(str(l) not in c["calls"] for l in range(len(quarter)) if l not in full)
        untouched = all(not c["index_k_written"][str(l)] for l in range(len(quarter)) if l not in full)
        rows.append(_row("3 indexer calls == F layers per forward; S index-K untouched", name,
                         f"forwards={c['forwards']}", None, None, "ok" if ok_calls and untouched else "WRONG",
                         all_ids_equal=ok_calls and untouched, calls=c["calls"], index_k_written=c["index_k_written"]))
    speed = {k: float(np.median(v)) for k, v in timings.items() if v}
    if "ours-allF" in speed and "ours-1of4" in speed:
        faster = speed["ours-1of4"] < speed["ours-allF"]
        rows.append(_row(f"5 prefill {raw['prefill_len']} tokens: all-F time / 1/4 time", "ours-allF", "ours-1of4",
                         None, None, "faster" if faster else "NOT FASTER", all_ids_equal=faster,
                         speedup=speed["ours-allF"] / speed["ours-1of4"], median_s=speed))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"\n{'check':64s} {'a':20s} {'b':20s} {'ids':6s} {'tokens':>6s} {'positions':>9s} {'mean lp diff':>12s} "
          f"{'x floor':>7s} {'max':>6s}  verdict")
    for r in rows:
        agree, mean, x, peak = r.get("token_agreement"), r.get("mean_lp_diff"), r.get("x_floor"), r.get("max_lp_diff")
        extra = f"  speedup {r['speedup']:.2f}x" if "speedup" in r else ""
        print(
            f"{r['check']:64s} {r['a']:20s} {str(r['b']):20s} {str(r.get('ids_equal', '')):6s} "
            f"{_fmt(agree, '.0%'):>6s} {str(r.get('positions', '')):>9s} {_fmt(mean, '.4f'):>12s} {_fmt(x, '.2f'):>7s} "
            f"{_fmt(peak, '.3f'):>6s}  {r.get('verdict', '')}{extra}"
        )


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)
