"""Every way a map or model config can be wrong: one line naming file, key and fix; CLI exit 2."""

import json
import subprocess
import sys

import pytest

from sglang_indexcache import LayerMap, MapError
from sglang_indexcache.cli import app

GOOD_MODEL = {"architectures": [GlmMoeDsa := "GlmMoeDsaForCausalLM"], "num_hidden_layers": 4, "index_topk": 2048}


def yaml_map(map_body: str, model: str = "{architectures: [GlmMoeDsaForCausalLM], num_layers: 4}",
             extra: str = "") -> str:
    return f"model: {model}\nmap: {map_body}\nprovenance: {{method: uniform}}\n{extra}"


# (case id, file text, expected key, words the problem must contain)
MAP_CASES = [
    ("invalid-yaml", "model: [unclosed\n", "(file)", "invalid YAML at line"),
    ("not-a-mapping", "- just\n- a list\n", "(top level)", "not a mapping"),
    ("empty-file", "", "(top level)", "not a mapping"),
    ("unknown-top-key", yaml_map("{pattern: FFSS}", extra="colour: blue\n"), "colour", "unknown key"),
    ("unknown-map-key", yaml_map("{pattern: FFSS, every: 2}"), "map.every", "unknown key"),
    ("unknown-model-key", yaml_map("{pattern: FFSS}", model="{architectures: [X], layers: 4}"), "model.layers",
     "unknown key"),
    ("missing-section", "model: {architectures: [X]}\nmap: {freq: 2}\n", "provenance", "missing"),
    ("several-rules", yaml_map("{pattern: FFSS, freq: 2}"), "map", "several schedules given (pattern, freq)"),
    ("no-rule", yaml_map("{}"), "map", "no schedule given"),
    ("offset-without-freq", yaml_map("{pattern: FFSS, offset: 2}"), "map", "offset without freq"),
    ("bad-char", yaml_map("{pattern: FFXS}"), "map.pattern", "'X' at layer 2 is not F or S"),
    ("lowercase", yaml_map("{pattern: FfSS}"), "map.pattern", "'f' at layer 1"),
    ("empty-pattern", yaml_map("{pattern: ''}"), "map.pattern", "empty"),
    ("first-layer-shared", yaml_map("{pattern: SFFS}"), "map.pattern", "layer 0 is S"),
    ("pattern-too-short", yaml_map("{pattern: FFS}"), "map.pattern", "3 layers given but model.num_layers is 4"),
    ("pattern-too-long", yaml_map("{pattern: FFSSF}"), "map.pattern", "5 layers given"),
    ("freq-zero", yaml_map("{freq: 0}"), "map.freq", "freq is 0"),
    ("freq-negative", yaml_map("{freq: -4}"), "map.freq", "freq is -4"),
    ("freq-not-int", yaml_map("{freq: four}"), "map.freq", "integer"),
    ("offset-zero", yaml_map("{freq: 4, offset: 0}"), "map.offset", "offset is 0"),
    ("indexer-types-bad", yaml_map("{indexer_types: [full, full, sparse, shared]}"), "map.indexer_types",
     "'sparse' at layer 2 is not full or shared"),
    ("indexer-types-first-shared", yaml_map("{indexer_types: [shared, full, full, full]}"), "map.indexer_types",
     "layer 0 is shared"),
    ("indexer-types-length", yaml_map("{indexer_types: [full, shared]}"), "map.indexer_types", "2 layers given"),
    ("bad-method", "model: {architectures: [X]}\nmap: {freq: 2}\nprovenance: {method: vibes}\n",
     "provenance.method", "'vibes' is not allowed"),
]


@pytest.mark.parametrize("text, key, words", [c[1:] for c in MAP_CASES], ids=[c[0] for c in MAP_CASES])
def test_bad_map_file(write_map, text, key, words):
    path = write_map(text)
    with pytest.raises(MapError) as e:
        LayerMap.load(path, num_layers=4)
    err = e.value
    assert err.source == str(path) and err.key == key
    assert words in err.problem
    assert err.fix and "\n" not in str(err)
    assert str(err) == f"{path}: {key}: {err.problem}. Fix: {err.fix}"


def test_unreadable_file(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(MapError, match="cannot read it") as e:
        LayerMap.load(path)
    assert e.value.key == "(file)"


def model_config(tmp_path, **changes):
    cfg = {**GOOD_MODEL, **changes}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text(json.dumps(cfg))
    return tmp_path / "model"


MODEL_CASES = [
    ("other-architecture", {"architectures": ["DeepseekV3ForCausalLM"]}, "map", "model.architectures",
     "map is for GlmMoeDsaForCausalLM but"),
    ("other-layer-count", {"num_hidden_layers": 6}, "map", "model.num_layers", "map has 4 layers but the model has 6"),
    ("not-dsa", {"index_topk": None}, "model", "index_topk", "not a DeepSeek Sparse Attention"),
    ("no-layer-count", {"num_hidden_layers": None}, "model", "num_hidden_layers", "missing"),
]


@pytest.mark.parametrize("changes, blamed, key, words", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_map_against_model_config(write_map, tmp_path, changes, blamed, key, words):
    from sglang_indexcache.model_config import load_model_config

    map_path = write_map(yaml_map("{pattern: FFSF}"))
    config, source = load_model_config(model_config(tmp_path, **changes))
    with pytest.raises(MapError) as e:
        LayerMap.for_model(map_path, config, source)
    assert e.value.key == key and words in e.value.problem
    assert e.value.source == (str(map_path) if blamed == "map" else source)


def test_model_config_fits(write_map, tmp_path):
    from sglang_indexcache.model_config import load_model_config

    map_path = write_map(yaml_map("{freq: 2}", model="{architectures: [GlmMoeDsaForCausalLM]}"))
    config, source = load_model_config(model_config(tmp_path, num_hidden_layers=6))
    assert LayerMap.for_model(map_path, config, source).pattern == "FFSFSF"


@pytest.mark.parametrize("content, words", [("{not json", "invalid JSON"), ("[1, 2]", "not a JSON object")])
def test_bad_model_config_file(tmp_path, content, words):
    from sglang_indexcache.model_config import load_model_config

    (tmp_path / "config.json").write_text(content)
    with pytest.raises(MapError, match=words):
        load_model_config(tmp_path)
    with pytest.raises(MapError, match="no such file"):
        load_model_config(tmp_path / "missing.json")


# -- the same errors through the CLI: exit 2, one line on stderr, no traceback ------------------------------


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "sglang_indexcache", *args], capture_output=True, text=True)


@pytest.mark.parametrize("text, key, words", [c[1:] for c in MAP_CASES], ids=[c[0] for c in MAP_CASES])
def test_cli_validate_bad_map(write_map, text, key, words):
    from typer.testing import CliRunner

    path = write_map(text)
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: {key}: ") and words in lines[0]
    assert "Fix: " in lines[0] and "Traceback" not in result.output


@pytest.mark.parametrize("changes, blamed, key, words", [c[1:] for c in MODEL_CASES], ids=[c[0] for c in MODEL_CASES])
def test_cli_validate_against_model(write_map, tmp_path, changes, blamed, key, words):
    map_path = write_map(yaml_map("{pattern: FFSF}"))
    result = run_cli("validate", str(map_path), "--model-config", str(model_config(tmp_path, **changes)))
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and f": {key}: " in result.stderr and words in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_validate_ok_and_show(tmp_path):
    ok = run_cli("validate", "glm-5/searched-1of4", "--model-config",
                 str(model_config(tmp_path, num_hidden_layers=78)))
    assert ok.returncode == 0 and ok.stdout.startswith("ok: glm-5/searched-1of4 fits")
    shown = run_cli("show", "deepseek-v3.2/uniform-1of4")
    assert shown.returncode == 0
    lines = shown.stdout.splitlines()
    assert "pattern: FFSSSF" + "SSSF" * 13 + "S" * 3 in lines
    assert "full: 16" in lines and "ratio: 0.262" in lines
    assert "  1: 2 3 4" in lines and "  57: 58 59 60" in lines


def test_cli_show_freq_map_needs_layers(write_map):
    path = write_map("model: {architectures: [X]}\nmap: {freq: 3}\nprovenance: {method: uniform}\n")
    assert run_cli("show", str(path)).returncode == 2
    shown = run_cli("show", str(path), "--num-layers", "7")
    assert shown.returncode == 0 and "pattern: FFSSFSS" in shown.stdout.splitlines()
