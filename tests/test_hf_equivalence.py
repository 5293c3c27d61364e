"""Our schedules mean exactly what the same keys mean in Hugging Face transformers' GlmMoeDsaConfig."""

import random

import pytest

from sglang_indexcache import LayerMap

transformers = pytest.importorskip("transformers")
GlmMoeDsaConfig = pytest.importorskip("transformers.models.glm_moe_dsa.configuration_glm_moe_dsa").GlmMoeDsaConfig
if not hasattr(GlmMoeDsaConfig(num_hidden_layers=1), "indexer_types"):
    pytest.skip("this transformers has no GlmMoeDsaConfig.indexer_types", allow_module_level=True)


def hf_types(num_layers: int, **keys) -> list[str]:
    return GlmMoeDsaConfig(num_hidden_layers=num_layers, **keys).indexer_types


LAYER_COUNTS = [1, 2, 3, 5, 8, 47, 61, 78]


@pytest.mark.parametrize("num_layers", LAYER_COUNTS)
@pytest.mark.parametrize("freq", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("offset", [None, 1, 2, 3, 5])
def test_freq_offset(num_layers, freq, offset, write_map):
    keys = {"index_topk_freq": freq}
    if offset is not None:
        keys["index_skip_topk_offset"] = offset
    expected = hf_types(num_layers, **keys)
    assert LayerMap.from_hf_config({"num_hidden_layers": num_layers, **keys}).indexer_types == expected
    # The YAML spelling of the same rule.
    rule = f"{{freq: {freq}}}" if offset is None else f"{{freq: {freq}, offset: {offset}}}"
    path = write_map(
        f"model: {{architectures: [GlmMoeDsaForCausalLM]}}\nmap: {rule}\nprovenance: {{method: uniform}}\n"
    )
    assert LayerMap.load(path, num_layers=num_layers).indexer_types == expected


def random_patterns(count: int, seed: int = 0):
    rng = random.Random(seed)
    for _ in range(count):
        n = rng.choice(LAYER_COUNTS)
        yield "F" + "".join(rng.choice("FS") for _ in range(n - 1))


@pytest.mark.parametrize("pattern", list(random_patterns(40)))
def test_pattern_and_indexer_types(pattern, write_map):
    n = len(pattern)
    expected = hf_types(n, index_topk_pattern=pattern)
    m = LayerMap.from_hf_config({"num_hidden_layers": n, "index_topk_pattern": pattern})
    assert m.indexer_types == expected
    assert LayerMap.from_hf_config({"num_hidden_layers": n, "indexer_types": expected}).pattern == pattern
    # What we hand to engines reproduces the schedule in HF.
    assert hf_types(n, **m.to_hf_overrides()) == expected
    path = write_map(
        f"model: {{architectures: [X], num_layers: {n}}}\nmap: {{indexer_types: {expected}}}\n"
        "provenance: {method: greedy}\n".replace("'", "")
    )
    assert LayerMap.load(path).pattern == pattern


def test_priority_indexer_types_over_pattern_over_freq():
    n = 8
    types = ["full", "shared", "full", "shared", "full", "full", "shared", "shared"]
    keys = {"indexer_types": types, "index_topk_pattern": "FFFFFFFF", "index_topk_freq": 4}
    assert hf_types(n, **keys) == types
    assert LayerMap.from_hf_config({"num_hidden_layers": n, **keys}).indexer_types == types
    keys.pop("indexer_types")
    assert hf_types(n, **keys) == ["full"] * n
    assert LayerMap.from_hf_config({"num_hidden_layers": n, **keys}).pattern == "F" * n


def test_defaults_are_all_full():
    assert hf_types(5) == ["full"] * 5 == LayerMap.from_hf_config({"num_hidden_layers": 5}).indexer_types


@pytest.mark.parametrize(
    "name", ["glm-5/searched-1of2", "glm-5/searched-1of4", "glm-5/uniform-1of4", "glm-5.2/trained-1of4"]
)
def test_shipped_glm_maps_in_hf(name):
    m = LayerMap.load(name)
    assert hf_types(m.num_layers, **m.to_hf_overrides()) == m.indexer_types


def test_glm52_map_matches_its_config_keys():
    glm52 = hf_types(78, index_topk_freq=4, index_skip_topk_offset=3)
    assert LayerMap.load("glm-5.2/trained-1of4").indexer_types == glm52
