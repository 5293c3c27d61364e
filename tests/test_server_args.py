"""Map requests are resolved and validated in the server's main process, before any weights load."""

import json
import os

import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_indexcache import MapError  # noqa: E402
from sglang_indexcache.names import ENV_MAP, ENV_PATTERN, ENV_SOURCE  # noqa: E402
from sglang_indexcache.patches import REGISTRY  # noqa: E402
from sglang_indexcache.patches.main.server_args import apply_server_args  # noqa: E402
from sglang_indexcache.patches.targets import SERVER_ARGS_CLASS  # noqa: E402

pytestmark = pytest.mark.sglang


@pytest.fixture
def server_args(tmp_path, monkeypatch):
    """Build ServerArgs (as launch_server does) for a tiny DSA model, with the server-args patch applied."""
    for var in (ENV_MAP, ENV_PATTERN, ENV_SOURCE):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "config.json").write_text(json.dumps(sglang_cpu.tiny_dsa_config()))
    apply_server_args(REGISTRY)

    def make(**overrides):
        return sglang_cpu.launch_server_args(model_path=str(tmp_path), device="cuda", load_format="dummy",
                                             json_model_override_args=json.dumps(overrides))

    make.model_path = str(tmp_path)
    yield make
    REGISTRY.revert()
    for var in (ENV_PATTERN, ENV_SOURCE):  # exported by the hook itself, not through monkeypatch
        os.environ.pop(var, None)


def test_no_request_exports_nothing(server_args):
    server_args()
    assert ENV_PATTERN not in os.environ


def test_hf_keys_are_taken_over_with_hf_semantics(server_args):
    server_args(index_topk_freq=4, index_skip_topk_offset=3)  # GLM-5.2's schedule: native SGLang ignores the offset
    assert os.environ[ENV_PATTERN] == "FFFSSSFS"


def test_map_by_name_or_path(server_args, tmp_path, monkeypatch):
    path = tmp_path / "m.yaml"
    path.write_text("model: {architectures: [DeepseekV3ForCausalLM]}\nmap: {freq: 4}\nprovenance: {method: uniform}\n")
    server_args(indexcache_map=str(path))
    assert os.environ[ENV_PATTERN] == "FFSSSFSS" and os.environ[ENV_SOURCE] == str(path)
    monkeypatch.setenv(ENV_MAP, str(path))
    server_args()
    assert os.environ[ENV_PATTERN] == "FFSSSFSS"


@pytest.mark.parametrize("overrides, env_map, words", [
    ({"indexcache_map": "glm-5/searched-1of4"}, None, "model.architectures: map is for GlmMoeDsaForCausalLM"),
    ({}, "deepseek-v3.2/uniform-1of4", "model.num_layers: map has 61 layers but the model has 8"),
    ({"index_topk_pattern": "FSSF"}, None, "index_topk_pattern: 4 layers given but num_hidden_layers is 8"),
    ({"index_topk_pattern": "SFFFFFFF"}, None, "index_topk_pattern: layer 0 is S"),
    ({"index_topk_freq": 0}, None, "index_topk_freq: freq is 0"),
    ({"indexcache_map": "glm-5/searched-1of4", "index_topk_freq": 2}, None, "given together with index_topk_freq"),
    ({"index_topk_freq": 2}, "glm-5/searched-1of4", "SGLANG_INDEXCACHE_MAP given together with index_topk_freq"),
    ({"index_topk_freq": "4"}, None, "index_topk_freq: expected an integer, got a string"),
    ({"index_topk_freq": True}, None, "index_topk_freq: expected an integer, got a boolean"),
    ({"index_topk_freq": [4]}, None, "index_topk_freq: expected an integer, got a list"),
    ({"index_topk_pattern": ["F"] * 8}, None, "index_topk_pattern: expected a string, got a list"),
    ({"indexcache_map": 4}, None, "indexcache_map: expected a string, got a number"),
    ({"indexcache_map": ""}, None, "indexcache_map: String should have at least 1 character"),
    ({"index_topk_freq": None}, None, "index_topk_freq: is null"),
    ({"index_skip_topk_offset": 3}, None, "index_skip_topk_offset: offset without freq"),
    ({"index_topk_pattern": "FSFSFSFS", "index_topk_freq": 2}, None, "several schedules given"),
    ({}, "x" * 5000, "SGLANG_INDEXCACHE_MAP: indexcache_map: String should have at most 4096 characters"),
])
def test_bad_requests_stop_the_launch(server_args, monkeypatch, overrides, env_map, words):
    if env_map:
        monkeypatch.setenv(ENV_MAP, env_map)
    with pytest.raises(MapError, match=words):
        server_args(**overrides)
    assert ENV_PATTERN not in os.environ


def test_autoload_request_detection():
    from sglang_indexcache.patches.autoload import requested

    argv = ["python", "-m", "sglang.launch_server", "--model-path", "m"]
    assert not requested({}, argv)
    assert requested({ENV_MAP: "glm-5/searched-1of4"}, argv)
    assert requested({}, argv + ["--json-model-override-args", '{"index_topk_freq": 4}'])
    assert requested({}, argv + ['--json-model-override-args={"indexcache_map": "x.yaml"}'])
    assert not requested({}, argv + ["--json-model-override-args", '{"rope_theta": 1}'])


@pytest.mark.parametrize("raw, words", [
    ('["index_topk_freq", 4]', "not a JSON object but a list"),
    ('{"index_topk_freq": 4, "index_topk_freq": 2}', "duplicate key 'index_topk_freq'"),
    ('{"index_topk_freq": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
])
def test_override_json_that_is_no_request_stops_the_launch(server_args, raw, words):
    with pytest.raises(MapError, match=words):
        sglang_cpu.launch_server_args(model_path=server_args.model_path, device="cuda", load_format="dummy",
                                      json_model_override_args=raw)
    assert ENV_PATTERN not in os.environ


def test_a_map_from_a_fifo_stops_the_launch_at_once(server_args, monkeypatch, tmp_path):
    os.mkfifo(tmp_path / "map.yaml")
    monkeypatch.setenv(ENV_MAP, str(tmp_path / "map.yaml"))
    with pytest.raises(MapError, match="not a regular file"):
        server_args()


@pytest.mark.parametrize("env, value, words", [
    ("SGLANG_INDEXCACHE_MAP_DIR", "/no/such/dir", "not a directory"),
    ("SGLANG_INDEXCACHE_SWITCH_TIMEOUT", "soon", "not a positive number of seconds"),
])
def test_bad_switch_settings_stop_the_launch(server_args, monkeypatch, env, value, words):
    monkeypatch.setenv(env, value)
    with pytest.raises(MapError, match=words):
        server_args(index_topk_freq=2)


GLM_5 = os.path.join(os.path.dirname(__file__), "..", "configs", "models", "glm-5")


@pytest.mark.parametrize("request_keys", [
    {"index_topk_freq": 4, "index_skip_topk_offset": 3},
    {"indexcache_map": "glm-5/searched-1of4"},
])
def test_requested_map_reaches_sglangs_own_schedule_for_glm(tmp_path, monkeypatch, request_keys):
    """transformers' GlmMoeDsaConfig always fills ``indexer_types`` (all Full) and SGLang 0.5.20+ reads it before
    the frequency keys: the schedule SGLang itself derives from the launched server args must still be the map."""
    model_config = pytest.importorskip("sglang.srt.configs.model_config")
    if not hasattr(model_config, "dsa_layer_skips_topk"):
        pytest.skip("this SGLang reads the schedule inside the attention layer (0.5.12.post1 and earlier)")
    if not hasattr(SERVER_ARGS_CLASS.resolve(), "resolve_once") and "indexcache_map" in request_keys:
        # Before 0.5.20 the map is not handed over: SGLang's native schedule never sees a map name, and the
        # roles patch gives every layer its role from the map instead (test_patches.py).
        pytest.skip("this SGLang is not handed the map (0.5.18 and earlier)")
    for var in (ENV_MAP, ENV_PATTERN, ENV_SOURCE):
        monkeypatch.delenv(var, raising=False)
    import shutil

    shutil.copy(os.path.join(GLM_5, "config.json"), tmp_path / "config.json")
    # Only the main process's resolution is under test; the worker targets are probed in test_sglang_drift.py.
    monkeypatch.setattr("sglang_indexcache.patches.main.server_args.check_worker_targets", lambda: None)
    apply_server_args(REGISTRY)
    try:
        args = sglang_cpu.launch_server_args(model_path=str(tmp_path), device="cuda", load_format="dummy",
                                             json_model_override_args=json.dumps(request_keys))
        pattern = os.environ[ENV_PATTERN]
        hf_config = model_config.ModelConfig.from_server_args(args).hf_config
    finally:
        REGISTRY.revert()
        for var in (ENV_PATTERN, ENV_SOURCE):
            os.environ.pop(var, None)
    assert len(pattern) == 78 and pattern.count("F") < 78
    native = "".join("S" if model_config.dsa_layer_skips_topk(hf_config, i) else "F" for i in range(78))
    assert native == pattern
