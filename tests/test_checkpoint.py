"""Which layers' indexer weights a checkpoint ships, from its safetensors index or headers."""

import json

import pytest

from sglang_indexcache.checkpoint import check_indexer_weights, layers_with_indexer, tensor_names
from sglang_indexcache.errors import MapError
from sglang_indexcache.layer_map import LayerMap
from sglang_indexcache.request import checkpoint_schedule

torch = pytest.importorskip("torch")
save_file = pytest.importorskip("safetensors.torch").save_file


def shard(path, layers):
    tensors = {f"model.layers.{l}.self_attn.indexer.wk.weight": torch.zeros(2, 2) for l in layers}
    tensors["model.embed_tokens.weight"] = torch.zeros(2, 2)
    save_file(tensors, str(path))


def test_headers_of_every_shard(tmp_path):
    shard(tmp_path / "model-00001-of-00002.safetensors", [0, 1])
    shard(tmp_path / "model-00002-of-00002.safetensors", [6])
    assert layers_with_indexer(tensor_names(tmp_path)) == {0, 1, 6}


def test_index_file_is_enough(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"model.layers.2.self_attn.indexer.wq_b.weight": "absent.safetensors"}}))
    assert layers_with_indexer(tensor_names(tmp_path)) == {2}


def test_refusal_names_the_layers(tmp_path):
    shard(tmp_path / "model.safetensors", [0, 1, 2, 6])
    check_indexer_weights(LayerMap("FFFSSSFS"), tmp_path)  # the checkpoint's own schedule
    with pytest.raises(MapError, match=r"layers \[3, 4, 5, 7\] would run their indexer"):
        check_indexer_weights(LayerMap("F" * 8, source="allF.yaml"), tmp_path)


def test_nothing_to_judge(tmp_path):
    check_indexer_weights(LayerMap("F" * 8), tmp_path)  # no safetensors at all
    check_indexer_weights(LayerMap("F" * 8), tmp_path / "hub/model")  # not a local directory
    shard(tmp_path / "model.safetensors", [])
    check_indexer_weights(LayerMap("F" * 8), tmp_path)  # indexer weights under other names


def test_bad_header_is_one_line(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"\xff" * 16)
    with pytest.raises(MapError, match=r"model.safetensors: \(header\): not a readable safetensors file"):
        tensor_names(tmp_path)


def test_checkpoint_schedule_keys():
    base = {"index_topk": 2048, "num_hidden_layers": 8}
    assert checkpoint_schedule(base, "c") is None
    assert checkpoint_schedule({**base, "index_topk_freq": 4}, "c").pattern == "FFSSSFSS"
    both = {**base, "index_topk_freq": 4, "index_skip_topk_offset": 3, "indexer_types": ["full", "shared"] * 4}
    found = checkpoint_schedule(both, "c/config.json")
    assert found.pattern == "FSFSFSFS"  # indexer_types first, as in transformers
    assert found.label.startswith("checkpoint (c/config.json: indexer_types")
    assert checkpoint_schedule({"num_hidden_layers": 8, "index_topk_freq": 4}, "c") is None  # not DSA
