"""Which maps a running server may switch to (engine-free rules behind POST /indexcache/map)."""

from types import SimpleNamespace

import pytest
from sglang_cpu import tiny_dsa_config

from sglang_indexcache import LayerMap
from sglang_indexcache.errors import MapError
from sglang_indexcache.switching import (
    allowed_map_file,
    check_map_dir,
    check_switchable,
    switch_refusal,
    switch_request,
    switch_timeout,
)

CONFIG = tiny_dsa_config(num_layers=8)


def test_request_by_pattern_freq_or_map_name(write_map):
    assert switch_request({"index_topk_pattern": "FSSSFSSS"}, CONFIG, "c.json").pattern == "FSSSFSSS"
    # HF semantics: default offset 2
    assert switch_request({"index_topk_freq": 2}, CONFIG, "c.json").pattern == "FFSFSFSF"
    path = write_map("""
        model:
          architectures: [DeepseekV3ForCausalLM]
          num_layers: 8
        map:
          pattern: FSFSFSFS
        provenance:
          method: uniform
    """)
    assert switch_request({"map": path.name}, CONFIG, "c.json", map_dir=str(path.parent)).pattern == "FSFSFSFS"
    assert switch_request({"map": str(path)}, CONFIG, "c.json", map_dir=str(path.parent)).pattern == "FSFSFSFS"


@pytest.mark.parametrize("body, key, words", [
    (["FSSS"], "(body)", "not a JSON object"),
    (None, "(body)", "not a JSON object"),
    ({}, "(body)", "no map given"),
    ({"pattern": "FSSSFSSS"}, "pattern", "unknown key"),
    ({"map": "x.yaml", "index_topk_freq": 2}, "map", "given together"),
    ({"map": "x.yaml", "index_skip_topk_offset": 2}, "map", "given together"),
    ({"map": ""}, "map", "at least 1 character"),
    ({"index_topk_freq": "4"}, "index_topk_freq", "expected an integer, got a string"),
    ({"index_topk_freq": False}, "index_topk_freq", "expected an integer, got a boolean"),
    ({"index_skip_topk_offset": 3}, "index_skip_topk_offset", "offset without freq"),
    ({"index_topk_pattern": None}, "index_topk_pattern", "is null"),
    ({"indexer_types": ["full", 1]}, "indexer_types.1", "expected a string, got a number"),
    ({"index_topk_pattern": "FSS"}, "index_topk_pattern", "8"),
    ({"index_topk_pattern": "SFFFFFFF"}, "index_topk_pattern", "layer 0 is S"),
])
def test_bad_requests_name_the_key(body, key, words):
    with pytest.raises(MapError) as err:
        switch_request(body, CONFIG, "c.json")
    assert err.value.key == key and words in str(err.value) and "Fix:" in str(err.value)
    assert err.value.source == "POST /indexcache/map"
    assert "\n" not in str(err.value)


def test_only_layers_the_server_started_with_can_be_full():
    startup = LayerMap("FSFSFSFS")
    check_switchable(LayerMap("FSSSFSSS"), startup)  # a subset
    check_switchable(LayerMap("FSFSFSFS"), startup)  # the same
    with pytest.raises(MapError) as err:
        check_switchable(LayerMap("FFSSSSSS"), startup)
    assert "layers [1]" in str(err.value) and "restart" in err.value.fix
    with pytest.raises(MapError, match="layers"):
        check_switchable(LayerMap("FSSS"), startup)
    # All-F at start-up keeps every map reachable.
    for pattern in ("FSSSFSSS", "FFSFFSSF", "FFFFFFFF"):
        check_switchable(LayerMap(pattern), LayerMap("FFFFFFFF"))


def test_settings_that_cannot_switch():
    ok = SimpleNamespace(disable_cuda_graph=True, pp_size=1, enable_two_batch_overlap=False, tokenizer_worker_num=1)
    assert switch_refusal(ok) is None
    for change, flag in [({"disable_cuda_graph": False}, "--disable-cuda-graph"), ({"pp_size": 2}, "--pp-size"),
                         ({"enable_two_batch_overlap": True}, "--enable-two-batch-overlap"),
                         ({"tokenizer_worker_num": 2}, "--tokenizer-worker-num")]:
        assert flag in switch_refusal(SimpleNamespace(**{**vars(ok), **change}))


def test_map_files_only_from_the_map_dir(tmp_path, write_map):
    inside = write_map(
        "model: {architectures: [DeepseekV3ForCausalLM]}\nmap: {freq: 2}\nprovenance: {method: uniform}\n"
    )
    maps = inside.parent
    assert allowed_map_file("glm-5/searched-1of4", None) == "glm-5/searched-1of4"  # shipped names always
    assert allowed_map_file("glm-5/searched-1of4.yaml", str(maps)) == "glm-5/searched-1of4"
    assert allowed_map_file("map.yaml", str(maps)) == str(inside.resolve())
    (maps / "sub").mkdir()
    assert allowed_map_file("sub/../map.yaml", str(maps)) == str(inside.resolve())
    outside = tmp_path.parent / f"{tmp_path.name}-outside.yaml"
    outside.write_text("secret: 1\n")
    (maps / "link.yaml").symlink_to(outside)
    messages = set()
    for ref in (str(outside), str(outside) + ".missing", f"../{outside.name}", "link.yaml", "/", ".", "", "a\0b"):
        with pytest.raises(MapError) as err:
            allowed_map_file(ref, str(maps))
        messages.add(str(err.value))
    assert len(messages) == 1  # one answer, whatever is at the path
    with pytest.raises(MapError, match="started without SGLANG_INDEXCACHE_MAP_DIR"):
        allowed_map_file(str(inside), None)


def test_switch_timeout_and_map_dir_settings(tmp_path):
    assert switch_timeout({}) == 120 and switch_timeout({"SGLANG_INDEXCACHE_SWITCH_TIMEOUT": "2.5"}) == 2.5
    for bad in ("0", "-3", "nan", "inf", "ten"):
        with pytest.raises(MapError, match="SGLANG_INDEXCACHE_SWITCH_TIMEOUT"):
            switch_timeout({"SGLANG_INDEXCACHE_SWITCH_TIMEOUT": bad})
    check_map_dir({"SGLANG_INDEXCACHE_MAP_DIR": str(tmp_path)})
    check_map_dir({})
    with pytest.raises(MapError, match="not a directory"):
        check_map_dir({"SGLANG_INDEXCACHE_MAP_DIR": str(tmp_path / "missing")})


def test_a_shipped_name_never_reads_a_file_of_that_name(tmp_path, monkeypatch):
    (tmp_path / "glm-5").mkdir()
    (tmp_path / "glm-5" / "searched-1of4").write_text("not: [a map\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(MapError) as err:  # the shipped GLM-5 map, refused for this DeepSeek config
        switch_request({"map": "glm-5/searched-1of4"}, CONFIG, "c.json", map_dir=str(tmp_path))
    assert err.value.key == "model.architectures" and err.value.source == "glm-5/searched-1of4.yaml"
