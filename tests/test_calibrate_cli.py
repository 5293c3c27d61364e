"""``sglang-indexcache calibrate`` end to end: maps with provenance, removal.json, the plot, resume, the server
backend, and one-line exit-2 errors for bad input before any model loads."""

import hashlib
import json
import random
import subprocess
import sys

import pytest
import torch
from fake_server import FakeServer
from test_calibrate_server import toy_logprobs
from tiny_glm import tiny_model
from toy_dsa import ToyDSA

from sglang_indexcache import LayerMap


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sglang_indexcache", "calibrate", *map(str, args)],
                          capture_output=True, text=True)


def write_ids(path, count, length, vocab=97, seed=0):
    rng = random.Random(seed)
    path.write_text("".join(json.dumps({"input_ids": [rng.randrange(vocab) for _ in range(length)]}) + "\n"
                            for _ in range(count)))
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiny-glm")
    tiny_model(6).save_pretrained(path)
    return path


def test_torch_backend_end_to_end_and_resume(checkpoint, tmp_path):
    data = write_ids(tmp_path / "calib.jsonl", 4, 24)
    out = tmp_path / "out"
    result = run_cli("--model", checkpoint, "--data", data, "--out", out, "--seq-len", 12, "--ratios", 0.5, 0.25,
                     "--quiet")
    assert result.returncode == 0, result.stderr
    removal = json.loads((out / "removal.json").read_text())
    assert len(removal["order"]) == len(removal["loss"]) == 4 and 0 not in removal["order"]
    assert isinstance(removal["base_loss"], float)
    assert removal["cost"]["layer_forwards"] <= 0.5 * removal["cost"]["naive_layer_forwards"]
    half, quarter = LayerMap.load(out / "greedy-1of2.yaml"), LayerMap.load(out / "greedy-1of4.yaml")
    assert len(half.full_layers) == 3 and len(quarter.full_layers) == 2
    assert set(quarter.full_layers) <= set(half.full_layers)  # nested
    assert quarter.pattern == removal["maps"]["greedy-1of4"]
    LayerMap.for_model(out / "greedy-1of4.yaml", json.loads((checkpoint / "config.json").read_text()), "config")
    p = quarter.provenance
    assert p.method == "greedy" and p.calibration.num_tokens == 8 * 12
    assert p.calibration.data_hash == "sha256:" + hashlib.sha256(data.read_bytes()).hexdigest()
    assert [s.layer for s in p.loss_trajectory[1:]] == removal["order"]
    assert p.loss_trajectory[0].loss == removal["base_loss"]
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert "greedy-1of4" in result.stdout and "layer forwards" in result.stdout

    deeper = run_cli("--model", checkpoint, "--data", data, "--out", out, "--seq-len", 12, "--ratios", 0.5,
                     0.25, 0.125, "--resume", "--quiet")
    assert deeper.returncode == 0, deeper.stderr
    resumed = json.loads((out / "removal.json").read_text())
    assert resumed["order"][:4] == removal["order"] and len(resumed["order"]) == 5
    assert resumed["loss"][:4] == removal["loss"]

    other = write_ids(tmp_path / "other.jsonl", 4, 24, seed=1)
    mismatch = run_cli("--model", checkpoint, "--data", other, "--out", out, "--seq-len", 12, "--resume", "--quiet")
    assert mismatch.returncode == 2 and "data_hash" in mismatch.stderr


def test_server_backend_end_to_end(tmp_path):
    toy = ToyDSA(8, seed=7)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"architectures": ["GlmMoeDsaForCausalLM"],
                                                   "num_hidden_layers": 8, "index_topk": 3}))
    data = write_ids(tmp_path / "calib.jsonl", 3, 32, vocab=toy.vocab)
    fake = FakeServer(num_layers=8, logprobs=toy_logprobs(toy))
    url = fake.start()
    try:
        result = run_cli("--model", model, "--data", data, "--out", tmp_path / "out", "--backend", "server",
                         "--url", url, "--seq-len", 16, "--ratios", 0.25, "--quiet")
    finally:
        fake.stop()
    assert result.returncode == 0, result.stderr
    removal = json.loads((tmp_path / "out" / "removal.json").read_text())
    assert len(removal["order"]) == 6
    assert removal["cost"]["server_evaluations"] == 1 + removal["cost"]["evaluations"] == len(fake.switches)
    assert fake.stale_hits == 0
    assert "server evaluations" in result.stdout
    sequences = torch.tensor([json.loads(line)["input_ids"] for line in data.read_text().splitlines()])
    local = __import__("sglang_indexcache.inprocess.runner", fromlist=["mean_loss"]).mean_loss(
        toy, "F" * 8, [sequences.reshape(-1, 16)])
    assert removal["base_loss"] == pytest.approx(local, abs=1e-6)


def one_line_exit_2(result, *needles):
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for needle in needles:
        assert needle in lines[0]


def test_bad_input_is_one_line_and_exit_2(checkpoint, tmp_path):
    good = write_ids(tmp_path / "ok.jsonl", 2, 24)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    short = write_ids(tmp_path / "short.jsonl", 1, 5)
    dense = tmp_path / "dense"
    dense.mkdir()
    (dense / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "num_hidden_layers": 4}))
    out = tmp_path / "out"
    one_line_exit_2(run_cli("--model", checkpoint, "--data", empty, "--out", out), "empty.txt", "empty")
    one_line_exit_2(run_cli("--model", checkpoint, "--data", short, "--out", out, "--seq-len", 12),
                    "5 tokens, fewer than one sequence of 12")
    one_line_exit_2(run_cli("--model", dense, "--data", good, "--out", out), "index_topk", "not a DeepSeek Sparse")
    one_line_exit_2(run_cli("--model", checkpoint, "--data", good, "--out", out, "--seq-len", 4),
                    "not more than the model's index_topk (4)")
    one_line_exit_2(run_cli("--model", checkpoint, "--data", good, "--out", out, "--backend", "server",
                            "--url", "http://127.0.0.1:9", "--seq-len", 12), "cannot be reached")
    one_line_exit_2(run_cli("--model", checkpoint, "--data", good, "--out", out, "--ratios", 0.5, 2),
                    "2.0 is not between 0 and 1")
    one_line_exit_2(run_cli("--model", checkpoint, "--data", good, "--out", tmp_path / "new", "--resume"),
                    "no checkpoint to resume")
    one_line_exit_2(run_cli("--model", checkpoint, "--data", tmp_path / "missing.txt", "--out", out),
                    "missing.txt", "no such file")


def test_testbed_by_name_with_its_indexer_file(tmp_path):
    from sglang_indexcache.testbed import tiny_model as tiny_testbed
    from sglang_indexcache.testbed.load import save_indexers

    model = tiny_testbed(num_layers=4, index_topk=4)
    base = tmp_path / "base"
    model.lm.save_pretrained(base)
    indexers = tmp_path / "indexers.safetensors"
    save_indexers(model, indexers, {"base": str(base)}, dtype=torch.float32)
    data = write_ids(tmp_path / "calib.jsonl", 2, 32, vocab=128)
    out = tmp_path / "out"
    result = run_cli("--model", f"testbed:{indexers}", "--data", data, "--out", out, "--seq-len", 16,
                     "--ratios", 0.5, "--quiet")
    assert result.returncode == 0, result.stderr
    removal = json.loads((out / "removal.json").read_text())
    assert len(removal["order"]) == 2 and removal["architectures"] == ["RetrofitDSA"]
    assert LayerMap.load(out / "greedy-1of2.yaml").provenance.model == f"testbed:{indexers}"
    missing = run_cli("--model", f"testbed:{tmp_path / 'none.safetensors'}", "--data", data, "--out", out)
    one_line_exit_2(missing, "no indexer file")
