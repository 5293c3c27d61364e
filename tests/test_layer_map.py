import pytest

from sglang_indexcache import LayerMap, MapError
from sglang_indexcache.maps import shipped_maps


def test_pattern_queries():
    m = LayerMap("FFSFSSSF")
    assert m.num_layers == 8
    assert m.full_layers == (0, 1, 3, 7)
    assert m.ratio == 0.5
    assert [m.source_layer(l) for l in range(8)] == [0, 1, 1, 3, 3, 3, 3, 7]
    assert m.served_layers() == {0: (), 1: (2,), 3: (4, 5, 6), 7: ()}
    assert m.indexer_types[:3] == ["full", "full", "shared"]
    with pytest.raises(IndexError):
        m.source_layer(8)


def test_inline_pattern_is_validated():
    with pytest.raises(MapError, match="layer 0 is S"):
        LayerMap("SF")
    with pytest.raises(MapError, match="'x' at layer 2"):
        LayerMap("FFx")


def test_freq_map_binds_layer_count(write_map):
    path = write_map("""
        model: {architectures: [GlmMoeDsaForCausalLM]}
        map: {freq: 4}
        provenance: {method: uniform}
    """)
    assert LayerMap.load(path, num_layers=10).pattern == "FFSSSFSSSF"
    with pytest.raises(MapError, match="needs the layer count"):
        LayerMap.load(path)


def test_stated_layer_count_is_checked(write_map):
    path = write_map("""
        model: {architectures: [GlmMoeDsaForCausalLM], num_layers: 6}
        map: {freq: 2, offset: 1}
        provenance: {method: uniform}
    """)
    assert LayerMap.load(path).pattern == "FSFSFS"
    with pytest.raises(MapError, match="map has 6 layers but the model has 7"):
        LayerMap.load(path, num_layers=7)


def test_hf_overrides_round_trip():
    m = LayerMap.load("glm-5/searched-1of4")
    again = LayerMap.from_hf_config({"num_hidden_layers": 78, **m.to_hf_overrides()})
    assert again.pattern == m.pattern


def test_hf_config_without_keys_is_all_full():
    assert LayerMap.from_hf_config({"num_hidden_layers": 5}).pattern == "FFFFF"


def test_hf_config_accepts_lists():
    cfg = {"num_hidden_layers": 4}
    assert LayerMap.from_hf_config({**cfg, "index_topk_pattern": ["F", "S", "F", "S"]}).pattern == "FSFS"
    assert (
        LayerMap.from_hf_config({**cfg, "index_topk_pattern": ["full", "shared", "shared", "full"]}).pattern == "FSSF"
    )


@pytest.mark.parametrize(
    "cfg, key",
    [
        ({"num_hidden_layers": 4, "index_topk_pattern": "FSF"}, "index_topk_pattern"),
        ({"num_hidden_layers": 4, "index_topk_pattern": "SFFF"}, "index_topk_pattern"),
        ({"num_hidden_layers": 4, "index_topk_freq": 0}, "index_topk_freq"),
        ({"num_hidden_layers": 4, "index_topk_freq": 2, "index_skip_topk_offset": 0}, "index_skip_topk_offset"),
        ({"num_hidden_layers": 4, "indexer_types": ["full", "dense", "full", "full"]}, "indexer_types"),
        ({"index_topk_freq": 2}, "num_hidden_layers"),
    ],
)
def test_hf_config_errors_name_the_hf_key(cfg, key):
    with pytest.raises(MapError) as e:
        LayerMap.from_hf_config(cfg, source="config.json")
    assert e.value.key == key and e.value.source == "config.json"


def test_shipped_maps():
    names = set(shipped_maps())
    assert {
        "glm-5/searched-1of2",
        "glm-5/searched-1of4",
        "glm-5/uniform-1of2",
        "glm-5/uniform-1of4",
        "glm-5.2/trained-1of4",
        "deepseek-v3.2/uniform-1of2",
        "deepseek-v3.2/uniform-1of4",
    } <= names
    searched2, searched4 = LayerMap.load("glm-5/searched-1of2"), LayerMap.load("glm-5/searched-1of4")
    assert (len(searched2.full_layers), len(searched4.full_layers)) == (40, 22)
    # A greedy removal order makes the 1/4 map a subset of the 1/2 map.
    assert set(searched4.full_layers) <= set(searched2.full_layers)
    assert searched2.provenance.confirmed and not searched4.provenance.confirmed
    # GLM-5.2 ships index_topk_freq 4 with offset 3: Full layers 0, 1, 2, 6, 10, ..., 74.
    glm52 = LayerMap.load("glm-5.2/trained-1of4")
    assert glm52.full_layers == (0, 1, 2, *range(6, 78, 4))
    for name in names:
        m = LayerMap.load(name)
        assert m.name == name and m.pattern[0] == "F"
        if name.startswith("deepseek-v3.2/"):
            assert m.num_layers == 61 and m.provenance.method != "greedy"


def test_unknown_name_lists_shipped_maps():
    with pytest.raises(MapError, match="glm-5/searched-1of4") as e:
        LayerMap.load("glm-5/searched-1of3")
    assert e.value.key == "(file)"


def test_yaml_round_trip(tmp_path):
    m = LayerMap.load("glm-5/searched-1of4")
    path = tmp_path / "copy.yaml"
    path.write_text(m.to_yaml())
    again = LayerMap.load(path)
    assert again == LayerMap(m.pattern, str(path), None, m.architectures)
    assert again.provenance == m.provenance
    inline = tmp_path / "inline.yaml"
    inline.write_text(LayerMap("FSSF").to_yaml(["DeepseekV3ForCausalLM"], method="greedy"))
    assert LayerMap.load(inline).provenance.method == "greedy"
    with pytest.raises(ValueError, match="architectures"):
        LayerMap("FSSF").to_yaml()
