"""The benchmark and load-test logic behind scripts/ (sglang_indexcache.bench) against a stand-in server with known
latencies, through real clients (aiohttp, and the OpenAI client)."""

import gzip
import json
import time
from pathlib import Path

import pytest
from fake_server import FakeServer

from sglang_indexcache.bench import load as loadtest
from sglang_indexcache.bench import memory as memory_table
from sglang_indexcache.bench import prefill_decode as bench
from sglang_indexcache.bench import readme_table as bench_readme
from sglang_indexcache.bench import switching_check as switch_under_load
from sglang_indexcache.bench.bound import (
    amdahl_bound,
    indexer_share,
    kernel_times,
    load_trace,
    range_kernel_times,
)
from sglang_indexcache.bench.client import require_loopback
from sglang_indexcache.bench.patterns import ratio_maps
from sglang_indexcache.bench.serverinfo import capacity
from sglang_indexcache.names import PROFILER_RANGE

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"
SLICE = SCRIPTS / "models" / "v32-slice-8l.json"


@pytest.fixture
def server():
    fake = FakeServer(prefill_s_per_token=2e-5, decode_s=0.004)
    url = fake.start()
    fake.url = url
    yield fake
    fake.stop()


def test_loadtest_closed_loop(server, tmp_path):
    report = loadtest.run(loadtest.Options(url=server.url, input_len=500, output_len=20, concurrency=[1, 4],
                                           num_requests=8, out=tmp_path))
    assert [r["config"] for r in report["rows"]] == ["c=1", "c=4"]
    for row in report["rows"]:
        assert row["requests"] == 8 and row["errors"] == 0
        assert row["ttft_s_p50"] == pytest.approx(500 * 2e-5, abs=0.02)
        assert row["itl_s_p50"] == pytest.approx(0.004, abs=0.003)
        assert row["tpot_s_p50"] == pytest.approx(0.004, abs=0.003)
    # Four requests at a time finish sooner than one at a time.
    assert report["rows"][1]["output_tok_s"] > 2 * report["rows"][0]["output_tok_s"]
    assert json.loads((tmp_path / "loadtest.json").read_text())["results"]["rows"][0]["requests"] == 8
    assert set(server.prompt_lengths) == {500}


def test_loadtest_open_loop_and_errors(tmp_path):
    fake = FakeServer(decode_s=0.001, fail_every=3)
    url = fake.start()
    try:
        report = loadtest.run(loadtest.Options(url=url, input_len=64, output_len=4, concurrency=[], request_rate=[50.0],
                                               num_requests=9, out=tmp_path))
    finally:
        fake.stop()
    (row,) = report["rows"]
    assert row["config"] == "rate=50.0" and row["requests"] == 9 and row["errors"] == 3
    assert "HTTP 500" in row["first_errors"][0]


def test_loadtest_full_kv_fills_the_pool(tmp_path):
    fake = FakeServer(decode_s=0.001, capacity=10_000)
    url = fake.start()
    try:
        report = loadtest.run(loadtest.Options(url=url, full_kv=True, input_len=900, output_len=100, out=tmp_path))
    finally:
        fake.stop()
    assert report["rows"][0]["config"] == "full-kv" and report["rows"][0]["requests"] == 10


def test_loadtest_through_openai_client(server, tmp_path):
    report = loadtest.run(loadtest.Options(url=server.url, api="openai", model="m", input_len=300, output_len=10,
                                           concurrency=[2], num_requests=4, out=tmp_path))
    (row,) = report["rows"]
    assert row["errors"] == 0 and row["output_tok_s"] > 0
    assert 300 * 2e-5 <= row["ttft_s_p50"] < 0.5  # the client's own set-up cost comes on top of prefill


@pytest.mark.parametrize("url", ["http://10.0.0.1:30000", "http://8.8.8.8:80"])
def test_only_loopback_targets(url):
    with pytest.raises(SystemExit, match="not a loopback address"):
        require_loopback(url)
    assert require_loopback("http://127.0.0.1:30000/") == "http://127.0.0.1:30000"
    assert require_loopback("http://localhost:1") == "http://localhost:1"


def test_bench_prefill_decode_against_running_server(server, tmp_path):
    report = bench.run(bench.Options(url=server.url, lengths=[1000, 3000], decode_lengths=[1000], decode_tokens=12,
                                     repeats=2, out=tmp_path))
    r = report["results"]["server"]
    assert r["prefill_s"]["3000"]["median"] == pytest.approx(3000 * 2e-5, abs=0.02)
    assert r["prefill_s"]["3000"]["median"] > r["prefill_s"]["1000"]["median"]
    assert r["decode_tok_s"]["1000"]["median"] == pytest.approx(1 / 0.004, rel=0.5)
    assert report["speedup_vs_baseline"]["server"]["prefill"]["1000"] == 1.0
    assert (tmp_path / "bench.png").stat().st_size > 1000
    # Fresh prompts every time: no two requests share a prefix the radix cache could serve.
    assert len(server.prompt_lengths) == 1 + 3 * (1 + 2)


def test_speedup_ratios():
    results = {
        "base": {"prefill_s": {"8": {"median": 2.0}}, "decode_tok_s": {"8": {"median": 100.0}}},
        "ic": {"prefill_s": {"8": {"median": 1.0}}, "decode_tok_s": {"8": {"median": 150.0}}},
    }
    assert bench.ratios(results, "base")["ic"] == {"prefill": {"8": 2.0}, "decode": {"8": 1.5}}


def test_amdahl_bound():
    assert amdahl_bound(0.0, 1, 4) == 1.0
    assert amdahl_bound(1.0, 1, 4) == pytest.approx(4.0)
    assert amdahl_bound(0.81, 12, 47) == pytest.approx(1 / (1 - (35 / 47) * 0.81))
    with pytest.raises(ValueError):
        amdahl_bound(0.5, 0, 4)


def kineto(events):
    """A trace in the shape PyTorch's profiler writes: CPU ranges, launch calls and kernels tied by correlation."""
    return {"traceEvents": events}


def annotation(ts, dur, tid=1):
    return {"ph": "X", "cat": "user_annotation", "name": PROFILER_RANGE, "pid": 7, "tid": tid, "ts": ts, "dur": dur}


def launch(ts, corr, tid=1, cat="cuda_runtime"):
    return {"ph": "X", "cat": cat, "name": "cudaLaunchKernel", "pid": 7, "tid": tid, "ts": ts, "dur": 1,
            "args": {"correlation": corr}}


def kernel(name, dur, corr):
    return {"ph": "X", "cat": "kernel", "name": name, "pid": 0, "tid": 9, "ts": 0, "dur": dur,
            "args": {"correlation": corr}}


def test_indexer_share_by_profiler_range():
    events = kineto([
        annotation(100, 50), annotation(300, 50),
        launch(110, 1), launch(120, 2, cat="cuda_driver"), launch(200, 3), launch(310, 4), launch(360, 5),
        launch(130, 6, tid=2),  # another thread, inside the span's time but not inside the range
        kernel("nvjet_gemm", 10, 1), kernel("deep_gemm::sm90_fp8_mqa_logits<>", 30, 2),
        kernel("nvjet_gemm", 25, 3), kernel("topk_transform_prefill_kernel", 5, 4),
        kernel("fused_moe_kernel", 20, 5), kernel("rmsnorm", 10, 6),
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 7, "tid": 1, "ts": 105, "dur": 999},
    ])["traceEvents"]
    assert sum(kernel_times(events).values()) == 100
    assert range_kernel_times(events) == {"nvjet_gemm": 10, "deep_gemm::sm90_fp8_mqa_logits<>": 30,
                                          "topk_transform_prefill_kernel": 5}
    share = indexer_share(events)
    assert share["share"] == pytest.approx(0.45)
    assert share["share_by_name"] == pytest.approx(0.35)  # misses the indexer's GEMM
    assert ("nvjet_gemm", 35, 10) in share["top_kernels"]


def test_indexer_share_refuses_traces_it_cannot_attribute(tmp_path):
    no_range = [launch(110, 1), kernel("fast_topk", 10, 1)]
    with pytest.raises(ValueError, match="eager forward"):
        indexer_share(no_range)
    with pytest.raises(ValueError, match="no GPU kernels"):
        indexer_share([annotation(0, 10)])
    path = tmp_path / "t.trace.json.gz"
    with gzip.open(path, "wt") as f:
        json.dump(kineto(no_range), f)
    assert load_trace(path) == no_range


@pytest.mark.gpu
def test_range_attribution_on_a_real_cuda_trace(tmp_path):
    """The attribution against a trace PyTorch's profiler really wrote, with kernels inside and outside."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    a = torch.randn(2048, 2048, device="cuda")
    acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        for _ in range(3):
            b = a @ a
            with torch.profiler.record_function(PROFILER_RANGE):
                c = torch.topk(a.sum(0), 16)
            b = torch.relu(b)
        torch.cuda.synchronize()
    del b, c
    path = tmp_path / "t.trace.json"
    prof.export_chrome_trace(str(path))
    events = load_trace(path)
    ours = range_kernel_times(events)
    assert ours and not any("gemm" in k.lower() or "relu" in k.lower() or "elementwise" in k.lower() for k in ours)
    assert any("topk" in k.lower() or "sort" in k.lower() or "reduce" in k.lower() for k in ours)
    assert 0 < indexer_share(events)["share"] < 0.5


def test_readme_benchmark_model_dir(tmp_path):
    """The benchmark model is the V3.2-shaped slice config plus an offline tokenizer (dummy weights)."""
    transformers = pytest.importorskip("transformers")
    out = bench_readme.model_dir(SLICE, tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    dims = (cfg["hidden_size"], cfg["num_attention_heads"], cfg["q_lora_rank"], cfg["kv_lora_rank"])
    assert dims == (7168, 128, 1536, 512)
    assert (cfg["index_n_heads"], cfg["index_head_dim"], cfg["index_topk"], cfg["num_experts_per_tok"]) == (
        64,
        128,
        2048,
        8,
    )
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = [5, 17, 129000]
    assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
    pattern_file = bench_readme.map_file(tmp_path, "q", "FSSSFSSS")
    from sglang_indexcache import LayerMap

    assert LayerMap.load(pattern_file).full_layers == (0, 4)


def test_memory_table_helpers(server):
    assert ratio_maps(8) == {"stock": None, "allF": "FFFFFFFF", "1of2": "FSFSFSFS", "1of4": "FSSSFSSS"}
    assert capacity(server.url)["max_total_num_tokens"] == server.capacity
    rows = memory_table.with_ratios(
        [
            {"map": "stock", "kv_dtype": "bf16", "max_total_num_tokens": 1000},
            {"map": "1of4", "kv_dtype": "bf16", "max_total_num_tokens": 1082},
            {"map": "1of4", "kv_dtype": "fp8", "max_total_num_tokens": 5},
        ]
    )
    assert [r["tokens_vs_stock"] for r in rows] == [1.0, 1.082, None]


def test_memory_table_swaps_the_decode_backend_for_fp8_only():
    kit = ["--attention-backend", "nsa", "--nsa-decode-backend", "flashmla_sparse", "--page-size", "64"]
    assert memory_table.backend_flags(kit, "bfloat16") == kit
    fp8 = memory_table.backend_flags(kit, "fp8_e4m3")
    assert fp8[fp8.index("--nsa-decode-backend") + 1] == "flashmla_kv" and fp8.count("--nsa-decode-backend") == 1
    assert memory_table.without(kit, "--page-size") == kit[:4]


def test_memory_table_swaps_the_decode_backend_under_its_0_5_14_name():
    kit = ["--attention-backend", "dsa", "--dsa-decode-backend", "flashmla_sparse", "--page-size", "64"]
    assert memory_table.backend_flags(kit, "bfloat16") == kit
    fp8 = memory_table.backend_flags(kit, "fp8_e4m3")
    assert fp8[fp8.index("--dsa-decode-backend") + 1] == "flashmla_kv" and fp8.count("--dsa-decode-backend") == 1
    assert "--nsa-decode-backend" not in fp8


def test_prefill_bench_serves_a_native_pattern_without_indexcache():
    native = "native:FSSSFSSS"
    assert bench.server_env(native) == {"SGLANG_INDEXCACHE_DISABLE": "1"} == bench.server_env("")
    flags = bench.server_flags(native)
    assert flags[0] == "--json-model-override-args" and json.loads(flags[1]) == {"index_topk_pattern": "FSSSFSSS"}
    assert bench.server_flags("deepseek-v3.2/uniform-1of4") == [] == bench.server_flags("")
    assert bench.server_env("deepseek-v3.2/uniform-1of4") == {"SGLANG_INDEXCACHE_MAP": "deepseek-v3.2/uniform-1of4"}


def test_verification_stops_a_server_of_another_release(server):
    from sglang_indexcache.bench.server import Server
    from sglang_indexcache.bench.serverinfo import check_release, served_version

    assert served_version(server.url) == "0.5.17"
    port = int(server.url.rsplit(":", 1)[1])
    Server("kit", "m", port, [], sglang="0.5.17").check_release()  # what every bench server does once healthy
    Server("any", "m", port, []).check_release()
    with pytest.raises(RuntimeError, match=r"runs SGLang 0\.5\.17, not 0\.5\.23"):
        Server("other", "m", port, [], sglang="0.5.23").check_release()

    check_release("0.5.17+kit", "0.5.17")
    check_release("0.5.10.post1", None)
    for served in ("0.5.10.post1", "0.5.170", None):
        with pytest.raises(RuntimeError, match=r"not 0\.5\.17 \(--sglang\)"):
            check_release(served, "0.5.17")


def test_switch_under_load_load_pauses_and_counts(tmp_path):
    fake = FakeServer(decode_s=0.001, fail_every=5)
    url = fake.start()
    try:
        load = switch_under_load.Load(url, concurrency=3, lengths=(50, 100), new_tokens=4)
        load.start()
        time.sleep(0.3)
        load.pause()
        sent = fake.requests
        time.sleep(0.2)
        assert fake.requests == sent  # paused: nothing in flight, nothing new
        load.resume()
        time.sleep(0.2)
        load.pause()
        load.stop()
    finally:
        fake.stop()
    assert fake.requests > sent and load.ok + load.failed == fake.requests
    assert load.failed == fake.requests // 5 and "HTTP 500" in load.errors[0]


def test_switch_under_load_verdicts():
    def probes(*lps):
        return [{"ids": [1, 2], "prompt_lp": [lp]} for lp in lps]

    report = {
        "maps": {"allF": "FFFF", "1of4": "FSSS"},
        "fresh": {
            "allF": {"first": probes(0.0, 0.0), "again": probes(0.05, 0.0)},
            "1of4": {"first": probes(1.0, 1.0), "again": probes(1.0, 1.02)},
        },
        "switches": [
            {"to": "1of4", "status": 200, "seconds": 1.0, "served_pattern": "FSSS", "probes": probes(1.03, 1.0)},
            {"to": "allF", "status": 200, "seconds": 1.0, "served_pattern": "FFFF", "probes": probes(0.5, 0.0)},
            {"to": "1of4", "status": 409, "seconds": 1.0, "served_pattern": "FFFF", "probes": probes(0.0, 0.0)},
        ],
        "load": {"ok": 10, "failed": 1},
    }
    rows = switch_under_load.rows(report)
    assert rows[0]["max_prompt_lp_diff"] == pytest.approx(0.05)
    assert rows[1]["verdict"] == "within noise" and rows[1]["sensitive"]
    assert rows[2]["verdict"] == "DIFFERS"
    assert rows[3]["verdict"] == "SWITCH FAILED"
    assert rows[4]["verdict"] == "FAILED REQUESTS"
    switch_under_load.print_table({**report, "rows": rows})


def test_readme_rows_use_the_share_at_each_context():
    maps = {"stock": None, "allF": "FFFF", "1of4": "FSSS"}
    speedups = {
        "allF": {"prefill": {"8": 0.99}, "decode": {}},
        "1of4": {"prefill": {"8": 1.2, "16": 1.5}, "decode": {"16": 1.1}},
    }
    shares = {"prefill": {"8": {"share": 0.2}, "16": {"share": 0.4}}, "decode": {}, "full-kv": {"16": {"share": 0.1}}}
    rows = bench_readme.rows_against_bound(maps, speedups, shares, 1.05, 16, n_layers=4)
    by = {(r["map"], r["stage"], r["context"]): r for r in rows}
    assert by[("allF", "prefill", 8)]["bound"] == 1.0
    assert by[("1of4", "prefill", 8)]["bound"] == pytest.approx(1 / (1 - 0.75 * 0.2))
    assert by[("1of4", "prefill", 16)]["of_bound"] == pytest.approx(1.5 * (1 - 0.75 * 0.4))
    assert by[("1of4", "decode", 16)]["bound"] is None  # no profile at that context: no bound, not a guess
    assert by[("1of4", "full-kv", 16)]["of_bound"] == pytest.approx(1.05 * (1 - 0.75 * 0.1))
    assert ("allF", "full-kv", 16) not in by


def test_readme_benchmark_end_to_end_against_stand_in_servers(tmp_path, monkeypatch):
    """bench_readme.main: timings per map, the share from an eager all-F twin's profiles, then --reuse keeping
    the timings and measuring only the share again. Servers are stand-ins; the launches are recorded."""
    fake = FakeServer(prefill_s_per_token=1e-6, decode_s=0.0005, capacity=60_000, indexer_share=0.3)
    url = fake.start()
    launched = []

    class StandIn:
        def __init__(self, name, model, port, args, env=None, logdir=None):
            launched.append((name, list(args), dict(env or {})))
            self.url = url

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(bench_readme, "Server", StandIn)
    monkeypatch.setattr(bench_readme, "model_dir", lambda config, out: out)
    monkeypatch.setattr(bench_readme, "TRACE_POLL_S", 0.05)
    common = dict(
        config=SLICE, maps=["stock", "allF"], lengths=[2000], decode_lengths=[3000], full_kv_len=5000, repeats=1
    )
    try:
        report = bench_readme.run(bench_readme.Options(**common, out=tmp_path / "a"))
        assert [name for name, _, _ in launched] == ["stock", "allF", "allF-eager"]
        assert "--disable-cuda-graph" in launched[2][1] and "--disable-cuda-graph" not in launched[1][1]
        assert launched[0][2] == {"SGLANG_INDEXCACHE_DISABLE": "1"} and launched[2][2] == launched[1][2]
        shares = report["indexer_share"]
        assert {stage: list(v) for stage, v in shares.items()} == {
            "prefill": ["2000"],
            "decode": ["3000"],
            "full-kv": ["5000"],
        }
        assert all(v["share"] == pytest.approx(0.3) for by_len in shares.values() for v in by_len.values())
        # The full-KV profile ran as many long requests as the pool holds, each traced after it decoded.
        assert fake.profiles[-1]["num_steps"] == 16 and fake.prompt_lengths.count(5000) >= 60_000 // (5000 + 4096)
        assert {(r["stage"], r["context"]) for r in report["rows"]} == {("prefill", 2000), ("decode", 3000)}
        assert "stock" in report["full_kv"]

        launched.clear()
        again = bench_readme.run(
            bench_readme.Options(**common, reuse=tmp_path / "a" / "partial.json", out=tmp_path / "b")
        )
        assert [name for name, _, _ in launched] == ["allF-eager"]
        assert again["results"] == report["results"] and again["reused"].endswith("partial.json")
    finally:
        fake.stop()
