"""``sglang-indexcache analyze``: in-process and server captures, the report, the figure and the errors."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from drifting_dsa import DriftingDSA
from typer.testing import CliRunner

from sglang_indexcache.analysis.capture_files import read_capture, relabel, write_chunk
from sglang_indexcache.analysis.overlap import OverlapAccumulator, depth_edges
from sglang_indexcache.analysis.report import build_report, summary_lines
from sglang_indexcache.cli import app
from sglang_indexcache.inprocess.runner import capture_topk
from sglang_indexcache.kernels.naive import topk_overlap_naive
from sglang_indexcache.layer_map import LayerMap
from sglang_indexcache.names import CAPTURE_RID_PREFIX as RID_PREFIX

runner = CliRunner()
SEQS = [list(range(3, 23)), list(range(30, 42)) * 2]


@pytest.fixture
def data(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in SEQS))
    return path


def expected_matrix(model, sequences, positions_from):
    """The headline matrix straight from the reference over positions >= k of every sequence."""
    parts = [capture_topk(model, torch.tensor([s]))[:, 0, positions_from:] for s in sequences]
    parts = [topk_overlap_naive(p, max(map(len, sequences))) for p in parts]
    sums, counts = sum(p.ratio_sum[0] for p in parts), sum(p.pair_count[0] for p in parts)
    return (sums / counts).tolist()


def test_inprocess_cli_writes_json_figure_and_summary(tmp_path, data):
    out = tmp_path / "out"
    result = runner.invoke(app, ["analyze", "--model", "drifting_dsa:make", "--data", str(data), "--out", str(out),
                                 "--map", str(_map(tmp_path, "FSFSSF")), "--no-progress"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "overlap.json").read_text())
    model = DriftingDSA()
    want = expected_matrix(model, SEQS, model.index_topk)
    torch.testing.assert_close(torch.tensor(report["matrix"]), torch.tensor(want), atol=1e-4, rtol=0)
    assert report["positions"] == {"sequences": 2, "total": 44, "in_matrix": 44 - 8, "trivial_only": False}
    assert [b["positions"] for b in report["by_depth"]] == [[0, 4], [4, 8], [8, 16], [16, 32]]
    assert report["map"]["shared"][0] == {"layer": 1, "source": 0, "overlap": pytest.approx(want[1][0], abs=1e-4)}
    assert "mean adjacent overlap" in result.output and "map " in result.output
    assert (out / "heatmap.png").stat().st_size > 10_000


class CapturingServer(BaseHTTPRequestHandler):
    """A stand-in for SGLang in capture mode: runs the toy model and writes what the patch would, with indices
    in another label space (KV-cache slots) and the prompt split over two prefill chunks."""

    model, root = DriftingDSA(), None

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        ids = body["input_ids"]
        topk = capture_topk(self.model, torch.tensor([ids]))[:, 0]
        slots = torch.randperm(1000)[:len(ids)] + 5000
        as_slots = torch.where(topk >= 0, slots[topk.clamp(min=0)], -1)
        half = len(ids) // 2
        positions = torch.arange(len(ids))
        write_chunk(self.root, body["rid"], list(range(4)), as_slots[:4, half:], positions[half:], False)
        write_chunk(self.root, body["rid"], list(range(4)), as_slots[:4, :half], positions[:half], False)
        write_chunk(self.root, body["rid"], [4, 5], as_slots[4:], positions, False)  # a second pipeline stage
        reply = json.dumps({"output_ids": [1]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_server_capture_equals_inprocess(tmp_path, data):
    CapturingServer.root = tmp_path / "captures"
    CapturingServer.root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), CapturingServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = runner.invoke(app, ["analyze", "--url", f"http://127.0.0.1:{server.server_port}", "--capture-dir",
                                     str(CapturingServer.root), "--data", str(data), "--out", str(tmp_path / "s"),
                                     "--no-progress"])
    finally:
        server.shutdown()
    assert result.exit_code == 0, result.output
    inproc = runner.invoke(app, ["analyze", "--model", "drifting_dsa:make", "--data", str(data), "--out",
                                 str(tmp_path / "i"), "--no-progress"])
    assert inproc.exit_code == 0, inproc.output
    server_report = json.loads((tmp_path / "s" / "overlap.json").read_text())
    inproc_report = json.loads((tmp_path / "i" / "overlap.json").read_text())
    assert server_report["matrix"] == inproc_report["matrix"]
    assert server_report["by_depth"] == inproc_report["by_depth"]
    assert len(list(CapturingServer.root.iterdir())) == 2
    assert all(p.name.startswith(RID_PREFIX) for p in CapturingServer.root.iterdir())


def test_report_blocks_and_least_like_predecessor():
    base = torch.arange(8, dtype=torch.int32)
    rows = [base, base, base + 8, base + 8, torch.cat([base[:4], base[:4] + 8])]  # 0=1, 2=3 disjoint from 1
    topk = torch.stack(rows)[:, None, :].expand(-1, 20, -1).contiguous()
    acc = OverlapAccumulator(list(range(5)), 8, 30, backend="torch")
    acc.add(topk, positions=torch.arange(10, 30))
    report = build_report(acc, block_threshold=0.7)
    s = report["summary"]
    assert s["blocks"] == [[0, 1], [2, 3], [4, 4]]
    assert s["least_like_predecessor"][0] == {"layer": 2, "overlap": 0.0}
    assert s["mean_adjacent"] == pytest.approx((1 + 0 + 1 + 0.5) / 4)
    assert any("2-3" in line for line in summary_lines(report))


def test_short_sequences_fall_back_to_all_positions():
    model = DriftingDSA(index_topk=64)
    acc = OverlapAccumulator(list(range(model.num_layers)), 64, 9, backend="torch")
    acc.add(capture_topk(model, torch.tensor([list(range(10))]))[:, 0])
    report = build_report(acc)
    assert report["positions"]["trivial_only"] and report["summary"]["mean_adjacent"] == 1.0


def test_depth_edges():
    assert depth_edges(2048, 200_000) == [0, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144]
    assert depth_edges(4, 3) == [0, 4] and depth_edges(4, 4) == [0, 4, 8]


def test_relabel_keeps_overlaps():
    topk = torch.tensor([[[900, 17, -1]], [[17, 5, 900]]], dtype=torch.int32)
    labels, n = relabel(topk)
    assert n == 3 and labels.tolist() == [[[2, 1, -1]], [[1, 0, 2]]]
    torch.testing.assert_close(topk_overlap_naive(labels).ratio_sum, topk_overlap_naive(topk).ratio_sum)


def test_capture_with_mismatched_stages_is_refused(tmp_path):
    rid = RID_PREFIX + "x"
    write_chunk(tmp_path, rid, [0], torch.zeros(1, 3, 2, dtype=torch.int32), torch.arange(3), False)
    write_chunk(tmp_path, rid, [1], torch.zeros(1, 2, 2, dtype=torch.int32), torch.arange(2), False)
    with pytest.raises(ValueError, match="layer 1 covers other positions"):
        read_capture(tmp_path, rid)
    assert read_capture(tmp_path, RID_PREFIX + "none") is None


@pytest.mark.parametrize("args,message", [
    (["--model", "drifting_dsa:make", "--url", "http://x"], "--model/--url: need exactly one"),
    (["--url", "http://127.0.0.1:9"], "--capture-dir: is needed with --url"),
    (["--model", "drifting_dsa:nothing"], "drifting_dsa has no function nothing"),
    (["--model", "no.such.module:f"], "cannot import no.such.module"),
    (["--model", "testbed:/nonexistent/indexers.safetensors"], "--model: no such indexer file"),
    (["--model", "drifting_dsa:make", "--map", "FSSSX"], "map.pattern: character 'X'"),
    (["--model", "drifting_dsa:make", "--map", "FSFS"], "map: has 4 layers, the model 6"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, data, args, message):
    if "--map" in args and "X" in args[-1]:
        (tmp_path / "m.yaml").write_text(f"model:\n  architectures: [Toy]\nmap:\n  pattern: {args[-1]}\n")
        args = [*args[:-1], str(tmp_path / "m.yaml")]
    elif "--map" in args:
        args = [*args[:-1], str(_map(tmp_path, args[-1]))]
    result = runner.invoke(app, ["analyze", "--data", str(data), "--out", str(tmp_path / "o"), "--no-progress",
                                 *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and message in lines[0]


def test_bad_data_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_ids": [1, 2]}\n{"input_ids": "x"}\n')
    result = runner.invoke(app, ["analyze", "--model", "drifting_dsa:make", "--data", str(bad), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "bad.jsonl: line 2: input_ids: is not a list of token ids" in result.output
    result = runner.invoke(app, ["analyze", "--model", "drifting_dsa:make", "--data", str(tmp_path / "missing.txt"),
                                 "--out", str(tmp_path)])
    assert result.exit_code == 2 and "missing.txt: --data: no such file" in result.output


def test_capture_dir_without_server_files(tmp_path, data):
    server = ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = runner.invoke(app, ["analyze", "--url", f"http://127.0.0.1:{server.server_port}", "--capture-dir",
                                     str(tmp_path), "--data", str(data), "--out", str(tmp_path / "o"),
                                     "--no-progress"])
    finally:
        server.shutdown()
    assert result.exit_code == 2 and "the server wrote nothing for request" in result.output


class Silent(CapturingServer):
    def do_POST(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")


def _map(tmp_path, pattern):
    path = tmp_path / "map.yaml"
    path.write_text(LayerMap(pattern).to_yaml(["Toy"], method="uniform"))
    return path


def test_testbed_model_in_process(tmp_path):
    """The retrofit testbed's tiny model through the same command (a real LayerwiseDSA, random weights)."""
    from sglang_indexcache.testbed import tiny_model

    seqs = [list(range(1, 41)), list(range(50, 90))]
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in seqs))
    result = runner.invoke(app, ["analyze", "--model", "sglang_indexcache.testbed:tiny_model", "--data", str(data),
                                 "--out", str(tmp_path / "o"), "--no-progress", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "overlap.json").read_text())
    model = tiny_model()
    want = expected_matrix(model, seqs, model.index_topk)
    torch.testing.assert_close(torch.tensor(report["matrix"]), torch.tensor(want, dtype=torch.float32), atol=1e-4,
                               rtol=0)
    assert report["index_topk"] == model.index_topk and report["layers"] == list(range(model.num_layers))


def test_token_array_data_is_cut_into_windows(tmp_path):
    import numpy as np

    np.save(tmp_path / "code-heldout.npy", np.arange(3, 53, dtype=np.uint16))
    result = runner.invoke(app, ["analyze", "--model", "drifting_dsa:make", "--data",
                                 str(tmp_path / "code-heldout.npy"), "--seq-len", "16", "--out", str(tmp_path / "o"),
                                 "--no-progress"])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "o" / "overlap.json").read_text())["positions"]["total"] == 3 * 16
    np.save(tmp_path / "bad.npy", np.zeros((2, 2), dtype=np.float32))
    result = runner.invoke(
        app,
        ["analyze", "--model", "drifting_dsa:make", "--data", str(tmp_path / "bad.npy"), "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 2 and "not token ids" in result.output


def test_glm_checkpoint_directory(tmp_path):
    """A GlmMoeDsaForCausalLM checkpoint directory, loaded all-Full whatever its schedule, as --model."""
    from tiny_glm import tiny_model as tiny_glm

    from sglang_indexcache.inprocess.glm_moe_dsa import GlmMoeDsaLayerwise

    tiny_glm(num_layers=4).save_pretrained(tmp_path / "glm")
    seqs = [list(range(1, 25))]
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"input_ids": seqs[0]}) + "\n")
    result = runner.invoke(
        app,
        [
            "analyze",
            "--model",
            str(tmp_path / "glm"),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
            "--device",
            "cpu",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "o" / "overlap.json").read_text())
    model = GlmMoeDsaLayerwise.from_pretrained(tmp_path / "glm")
    want = expected_matrix(model, seqs, model.index_topk)
    torch.testing.assert_close(
        torch.tensor(report["matrix"]), torch.tensor(want, dtype=torch.float32), atol=1e-4, rtol=0
    )


def test_unreachable_server_is_one_line(tmp_path, data):
    result = runner.invoke(
        app,
        [
            "analyze",
            "--url",
            "http://127.0.0.1:9",
            "--capture-dir",
            str(tmp_path),
            "--data",
            str(data),
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 1 and result.output.count("error:") == 1 and "cannot reach the server" in result.output


def test_adjacent_overlap_agrees_with_the_testbed_evaluation():
    """Two implementations of the same definition: the testbed's evaluation harness and this analysis."""
    from sglang_indexcache.testbed import tiny_model
    from sglang_indexcache.testbed.evaluate import adjacent_overlap

    model = tiny_model()
    ids = torch.arange(1, 49)[None]
    acc = OverlapAccumulator(list(range(model.num_layers)), model.index_topk, 47, backend="torch")
    acc.add(capture_topk(model, ids)[:, 0])
    report = build_report(acc)
    want = adjacent_overlap(model, ids)
    assert [report["adjacent"][str(layer)] for layer in range(1, model.num_layers)] == pytest.approx(want, abs=1e-4)
