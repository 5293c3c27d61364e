"""The benchmark and load-test scripts against a stand-in server with known latencies, through real clients
(aiohttp, and the OpenAI client)."""

import importlib.util
import time
import json
from pathlib import Path

import pytest

from fake_server import FakeServer
from sglang_indexcache.bench.bound import amdahl_bound, indexer_share, kernel_times
from sglang_indexcache.bench.client import require_loopback

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def server():
    fake = FakeServer(prefill_s_per_token=2e-5, decode_s=0.004)
    url = fake.start()
    fake.url = url
    yield fake
    fake.stop()


def test_loadtest_closed_loop(server, tmp_path):
    loadtest = load_script("loadtest")
    report = loadtest.main(["--url", server.url, "--input-len", "500", "--output-len", "20", "--concurrency", "1", "4",
                            "--num-requests", "8", "--out", str(tmp_path)])
    assert [r["config"] for r in report["rows"]] == ["c=1", "c=4"]
    for row in report["rows"]:
        assert row["requests"] == 8 and row["errors"] == 0
        assert row["ttft_s_p50"] == pytest.approx(500 * 2e-5, abs=0.02)
        assert row["itl_s_p50"] == pytest.approx(0.004, abs=0.003)
        assert row["tpot_s_p50"] == pytest.approx(0.004, abs=0.003)
    # Four requests at a time finish sooner than one at a time.
    assert report["rows"][1]["output_tok_s"] > 2 * report["rows"][0]["output_tok_s"]
    assert json.loads((tmp_path / "loadtest.json").read_text())["rows"][0]["requests"] == 8
    assert set(server.prompt_lengths) == {500}


def test_loadtest_open_loop_and_errors(tmp_path):
    fake = FakeServer(decode_s=0.001, fail_every=3)
    url = fake.start()
    try:
        loadtest = load_script("loadtest")
        report = loadtest.main(["--url", url, "--input-len", "64", "--output-len", "4", "--concurrency",
                                "--request-rate", "50", "--num-requests", "9", "--out", str(tmp_path)])
    finally:
        fake.stop()
    (row,) = report["rows"]
    assert row["config"] == "rate=50.0" and row["requests"] == 9 and row["errors"] == 3
    assert "HTTP 500" in row["first_errors"][0]


def test_loadtest_full_kv_fills_the_pool(tmp_path):
    fake = FakeServer(decode_s=0.001, capacity=10_000)
    url = fake.start()
    try:
        report = load_script("loadtest").main(["--url", url, "--full-kv", "--input-len", "900", "--output-len", "100",
                                               "--out", str(tmp_path)])
    finally:
        fake.stop()
    assert report["rows"][0]["config"] == "full-kv" and report["rows"][0]["requests"] == 10


def test_loadtest_through_openai_client(server, tmp_path):
    report = load_script("loadtest").main(["--url", server.url, "--api", "openai", "--model", "m", "--input-len", "300",
                                           "--output-len", "10", "--concurrency", "2", "--num-requests", "4",
                                           "--out", str(tmp_path)])
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
    bench = load_script("bench_prefill_decode")
    report = bench.main(["--url", server.url, "--lengths", "1000", "3000", "--decode-lengths", "1000",
                         "--decode-tokens", "12", "--repeats", "2", "--out", str(tmp_path)])
    r = report["results"]["server"]
    assert r["prefill_s"]["3000"]["median"] == pytest.approx(3000 * 2e-5, abs=0.02)
    assert r["prefill_s"]["3000"]["median"] > r["prefill_s"]["1000"]["median"]
    assert r["decode_tok_s"]["1000"]["median"] == pytest.approx(1 / 0.004, rel=0.5)
    assert report["speedup_vs_baseline"]["server"]["prefill"]["1000"] == 1.0
    assert (tmp_path / "bench.png").stat().st_size > 1000
    # Fresh prompts every time: no two requests share a prefix the radix cache could serve.
    assert len(server.prompt_lengths) == 1 + 3 * (1 + 2)


def test_speedup_ratios():
    bench = load_script("bench_prefill_decode")
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


def test_indexer_share_from_a_trace(tmp_path):
    trace = {"traceEvents": [
        {"ph": "X", "cat": "kernel", "name": "deep_gemm::sm90_fp8_mqa_logits<...>", "dur": 30},
        {"ph": "X", "cat": "kernel", "name": "fast_topk_transform_fused_kernel", "dur": 10},
        {"ph": "X", "cat": "kernel", "name": "flash_fwd_mla_sparse_kernel", "dur": 40},
        {"ph": "X", "cat": "kernel", "name": "fused_moe_kernel", "dur": 20},
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "dur": 999},
    ]}
    path = tmp_path / "t.trace.json"
    path.write_text(json.dumps(trace))
    times = kernel_times(path)
    assert sum(times.values()) == 100
    assert indexer_share(times) == pytest.approx(0.4)


def test_readme_benchmark_model_dir(tmp_path):
    """The benchmark model is the V3.2-shaped slice config plus an offline tokenizer (dummy weights)."""
    transformers = pytest.importorskip("transformers")
    bench_readme = load_script("bench_readme")
    out = bench_readme.model_dir(bench_readme.ROOT / "scripts" / "models" / "v32-slice-8l.json", tmp_path / "m")
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["num_attention_heads"], cfg["q_lora_rank"], cfg["kv_lora_rank"]) == (7168, 128, 1536, 512)
    assert (cfg["index_n_heads"], cfg["index_head_dim"], cfg["index_topk"], cfg["num_experts_per_tok"]) == (64, 128, 2048, 8)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    ids = [5, 17, 129000]
    assert tok(tok.decode(ids), add_special_tokens=False)["input_ids"] == ids
    pattern_file = bench_readme.map_file(tmp_path, "q", "FSSSFSSS")
    from sglang_indexcache import LayerMap

    assert LayerMap.load(pattern_file).full_layers == (0, 4)


def test_memory_table_helpers(server):
    memory_table = load_script("memory_table")
    assert memory_table.maps_for(8) == {"stock": None, "allF": "FFFFFFFF", "1of2": "FSFSFSFS", "1of4": "FSSSFSSS"}
    assert memory_table.capacity(server.url)["max_total_num_tokens"] == server.capacity
    rows = memory_table.with_ratios([
        {"map": "stock", "kv_dtype": "bf16", "max_total_num_tokens": 1000},
        {"map": "1of4", "kv_dtype": "bf16", "max_total_num_tokens": 1082},
        {"map": "1of4", "kv_dtype": "fp8", "max_total_num_tokens": 5},
    ])
    assert [r["tokens_vs_stock"] for r in rows] == [1.0, 1.082, None]


def test_memory_table_swaps_the_decode_backend_for_fp8_only():
    memory_table = load_script("memory_table")
    kit = ["--attention-backend", "nsa", "--nsa-decode-backend", "flashmla_sparse", "--page-size", "64"]
    assert memory_table.backend_flags(kit, "bfloat16") == kit
    fp8 = memory_table.backend_flags(kit, "fp8_e4m3")
    assert fp8[fp8.index("--nsa-decode-backend") + 1] == "flashmla_kv" and fp8.count("--nsa-decode-backend") == 1
    assert memory_table.without(kit, "--page-size") == kit[:4]


def test_switch_under_load_load_pauses_and_counts(tmp_path):
    switch_under_load = load_script("switch_under_load")
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
    switch_under_load = load_script("switch_under_load")

    def probes(*lps):
        return [{"ids": [1, 2], "prompt_lp": [lp]} for lp in lps]

    report = {
        "maps": {"allF": "FFFF", "1of4": "FSSS"},
        "fresh": {"allF": {"first": probes(0.0, 0.0), "again": probes(0.05, 0.0)},
                  "1of4": {"first": probes(1.0, 1.0), "again": probes(1.0, 1.02)}},
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
