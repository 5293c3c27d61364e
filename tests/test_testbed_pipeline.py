"""The testbed's data splits, training loop and evaluation harness, at tiny size on CPU."""

import json

import numpy as np
import pytest
import torch

from sglang_indexcache.errors import MapError
from sglang_indexcache.testbed import corpus, tiny_model
from sglang_indexcache.testbed.evaluate import (
    EvalConfig,
    format_tables,
    passkey_batch,
    repeat_batch,
    run_eval,
    selection_stats,
)
from sglang_indexcache.testbed.load import read_indexers, save_indexers
from sglang_indexcache.testbed.train import TrainConfig, plot_history, sample_batch, train

torch.set_num_threads(2)


class CharTokenizer:
    """Bytes mod 128: enough of a tokenizer for the probes and the corpus builder."""

    eos_token_id = 0
    name_or_path = "chars"

    def __len__(self):
        return 128

    def __call__(self, text, add_special_tokens=False):
        return type("Enc", (), {"input_ids": [1 + (b % 127) for b in text.encode()]})()


def test_splits_are_deterministic_disjoint_and_hashed(tmp_path, monkeypatch):
    docs = [(corpus.sha256_bytes(f"doc {i}".encode()), f"doc {i} " * 40) for i in range(400)]
    monkeypatch.setattr(corpus, "DOMAINS", {"prose": (), "code": ()})
    monkeypatch.setattr(corpus, "documents", lambda sources, cache: (docs, [{"package": "fake"}]))
    budgets = {"train": 20_000, "calibration": 3_000, "heldout": 3_000}
    a = corpus.build(tmp_path / "a", tmp_path, CharTokenizer(), budgets)
    b = corpus.build(tmp_path / "b", tmp_path, CharTokenizer(), budgets)
    assert a == b  # deterministic, to the sha256
    splits = a["domains"]["prose"]["splits"]
    assert {s: splits[s]["tokens"] for s in splits} == {"train": 20_000, "calibration": 3_000, "heldout": 3_000}
    assert sum(splits[s]["documents"] for s in splits) == 400
    held = {h for h, _ in docs if corpus.split_of(h) == "heldout"}
    rest = {h for h, _ in docs if corpus.split_of(h) != "heldout"}
    assert held and not held & rest
    assert 0.02 < len(held) / 400 < 0.10
    tokens = corpus.load_split(tmp_path / "a", "prose", "heldout")
    assert tokens.size == 3_000 and tokens.dtype == np.uint16
    (tmp_path / "a" / "prose-heldout.npy").write_bytes(np.save.__doc__.encode()[:64])
    with pytest.raises(MapError, match="sha256"):
        corpus.load_split(tmp_path / "a", "prose", "heldout")
    with pytest.raises(MapError, match="manifest.json"):
        corpus.load_split(tmp_path / "nowhere", "prose", "heldout")


def test_training_lowers_the_kl_resumes_and_saves(tmp_path):
    data = {"prose": np.random.default_rng(0).integers(0, 128, 5000), "code": np.arange(5000) % 97}
    assert torch.equal(sample_batch(data, 32, 4, 0, 7), sample_batch(data, 32, 4, 0, 7))
    config = TrainConfig(seq=48, batch=4, dense_steps=30, sparse_steps=6, dense_lr=3e-2, sparse_lr=1e-3,
                         checkpoint_every=5)
    model = tiny_model(num_layers=2, index_topk=8, block=16)
    history = train(model, data, config, tmp_path / "run", log=lambda *a: None)
    dense = [v for v, s in zip(history.loss, history.stage) if s == "dense"]
    assert len(dense) == 30 and np.mean(dense[-5:]) < 0.7 * np.mean(dense[:5])
    assert history.done == {"dense": 30, "sparse": 6}
    assert all(p.grad is None for p in model.lm.parameters())
    # resuming a finished run takes no further steps; a longer sparse stage continues where it stopped
    again = train(tiny_model(num_layers=2, index_topk=8, block=16), data, config, tmp_path / "run", log=lambda *a: None)
    assert again.step == history.step
    longer = TrainConfig(**{**config.__dict__, "sparse_steps": 6})
    assert len(train(model, data, longer, tmp_path / "run", log=lambda *a: None).step) == 36
    plot_history(history, tmp_path / "loss.png")
    assert (tmp_path / "loss.png").stat().st_size > 1000
    save_indexers(model, tmp_path / "idx.safetensors", {"base": "tiny", "steps": 36})
    modules, meta = read_indexers(tmp_path / "idx.safetensors")
    assert meta["base"] == "tiny" and meta["index_topk"] == 8
    assert json.loads((tmp_path / "idx.json").read_text())["steps"] == 36
    for mine, theirs in zip(model.indexers.parameters(), modules.parameters()):
        torch.testing.assert_close(theirs, mine.detach().to(torch.bfloat16).float())


def test_probes_place_the_needle_and_score_the_answer():
    tok = CharTokenizer()
    filler = np.arange(1, 2000) % 120 + 1
    probe = passkey_batch(tok, filler, 300, 0.5, [12345, 67890])
    assert probe.input_ids.shape == (2, 300)
    row = probe.input_ids[0].tolist()
    answer = tok(" 12345").input_ids
    assert [row[p + 1] for p in probe.targets[0].tolist()] == answer
    rep = repeat_batch(np.tile(np.arange(1, 33), (3, 1)), filler, 100)
    assert rep.input_ids.shape == (3, 32 + 100 + 32)
    assert rep.input_ids[0, 132:].tolist() == list(range(1, 33))


def test_harness_runs_every_variant_and_random_selection_differs():
    model = tiny_model(num_layers=3, index_topk=8, block=16)
    rng = np.random.default_rng(1)
    splits = {"prose": rng.integers(1, 128, 3000), "code": rng.integers(1, 128, 3000)}
    config = EvalConfig(seq=64, heldout_windows=2, batch=2, topks=(8, 64), main_topk=8, probe_contexts=(400,),
                        depths=(0.2, 0.8), keys=2, repeat_segment=16, repeat_gaps=(40,), repeat_rows=2)
    saved = []
    result = run_eval(model, CharTokenizer(), splits, config, {"half": "FSF"}, save=saved.append)
    assert len(saved) == 4  # held-out, selections, one passkey context, repeat
    held = result["heldout"]
    assert set(held) == {"dense", "all-F k=8", "all-F k=64", "F then all-S k=8", "random k=8", "half k=8"}
    # k at least the window: all-F is the dense model exactly
    assert held["all-F k=64"]["prose"]["loss"] == pytest.approx(held["dense"]["prose"]["loss"], abs=1e-5)
    assert held["random k=8"]["prose"]["loss"] != pytest.approx(held["all-F k=8"]["prose"]["loss"], abs=1e-6)
    assert len(result["selection"]["recall"]) == 3 and len(result["selection"]["adjacent_overlap"]) == 2
    table = format_tables(result)
    assert "passkey retrieval, context 400" in table and "half k=8" in table


def test_selection_stats_match_a_direct_computation_on_layer_0():
    from sglang_indexcache.testbed import naive
    from sglang_indexcache.testbed.indexer import indexer_topk

    model = tiny_model(num_layers=2, index_topk=4, block=8)
    ids = torch.randint(0, 128, (1, 24))
    stats = selection_stats(model, ids)
    state = model.embed(ids)
    a = model.attention_inputs(0, state)
    chosen = indexer_topk(model.indexers[0].project(a.x, state.extra.ids), 4, 8)[0]
    _, p = naive.attention(a.q, a.k, a.v, None, a.scale)
    recall, mass = [], []
    for t in range(4, 24):
        ours = set(chosen[t].tolist())
        oracle = set(p[0, t, : t + 1].topk(4).indices.tolist())
        recall.append(len(ours & oracle) / 4)
        mass.append(p[0, t, sorted(ours)].sum().item())
    assert stats["recall"][0] == pytest.approx(np.mean(recall))
    assert stats["mass"][0] == pytest.approx(np.mean(mass), abs=1e-5)
    assert 0 < stats["adjacent_overlap"][0] <= 1
