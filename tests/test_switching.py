"""Which maps a running server may switch to (engine-free rules behind POST /indexcache/map)."""

from types import SimpleNamespace

import pytest

from sglang_indexcache import LayerMap
from sglang_indexcache.errors import MapError
from sglang_indexcache.switching import check_switchable, switch_refusal, switch_request
from sglang_cpu import tiny_dsa_config

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
    assert switch_request({"map": str(path)}, CONFIG, "c.json").pattern == "FSFSFSFS"


@pytest.mark.parametrize("body, key, words", [
    (["FSSS"], "(body)", "not a JSON object"),
    (None, "(body)", "not a JSON object"),
    ({}, "(body)", "no map given"),
    ({"pattern": "FSSSFSSS"}, "pattern", "unknown key"),
    ({"map": "x.yaml", "index_topk_freq": 2}, "indexcache_map", "given together"),
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
