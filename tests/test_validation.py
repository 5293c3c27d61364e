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
    (
        "unknown-model-key",
        yaml_map("{pattern: FFSS}", model="{architectures: [X], layers: 4}"),
        "model.layers",
        "unknown key",
    ),
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
    (
        "indexer-types-bad",
        yaml_map("{indexer_types: [full, full, sparse, shared]}"),
        "map.indexer_types",
        "'sparse' at layer 2 is not full or shared",
    ),
    (
        "indexer-types-first-shared",
        yaml_map("{indexer_types: [shared, full, full, full]}"),
        "map.indexer_types",
        "layer 0 is shared",
    ),
    ("indexer-types-length", yaml_map("{indexer_types: [full, shared]}"), "map.indexer_types", "2 layers given"),
    (
        "bad-method",
        "model: {architectures: [X]}\nmap: {freq: 2}\nprovenance: {method: vibes}\n",
        "provenance.method",
        "'vibes' is not allowed",
    ),
    # strict types: no silent coercion
    ("pattern-number", yaml_map("{pattern: 1111}"), "map.pattern", "expected a string, got a number"),
    ("pattern-list", yaml_map("{pattern: [F, S, S, S]}"), "map.pattern", "expected a string, got a list"),
    ("freq-numeric-string", yaml_map('{freq: "4"}'), "map.freq", "expected an integer, got a string"),
    ("freq-bool", yaml_map("{freq: true}"), "map.freq", "expected an integer, got a boolean"),
    ("freq-float", yaml_map("{freq: 4.0}"), "map.freq", "expected an integer, got a number"),
    ("freq-list", yaml_map("{freq: [4]}"), "map.freq", "expected an integer, got a list"),
    ("offset-bool", yaml_map("{freq: 4, offset: true}"), "map.offset", "expected an integer, got a boolean"),
    ("indexer-types-scalar", yaml_map("{indexer_types: full}"), "map.indexer_types", "expected a list, got a string"),
    (
        "architectures-scalar",
        yaml_map("{pattern: FFSS}", model="{architectures: GlmMoeDsaForCausalLM}"),
        "model.architectures",
        "expected a list, got a string",
    ),
    (
        "architectures-number",
        yaml_map("{pattern: FFSS}", model="{architectures: [1]}"),
        "model.architectures.0",
        "expected a string, got a number",
    ),
    (
        "num-layers-string",
        yaml_map("{pattern: FFSS}", model='{architectures: [X], num_layers: "4"}'),
        "model.num_layers",
        "expected an integer, got a string",
    ),
    (
        "num-layers-huge",
        yaml_map("{freq: 4}", model="{architectures: [X], num_layers: 1000000000000}"),
        "model.num_layers",
        "less than or equal to 100000",
    ),
    (
        "map-scalar",
        "model: {architectures: [X]}\nmap: FFSS\nprovenance: {method: uniform}\n",
        "map",
        "expected a mapping (key: value), got a string",
    ),
    (
        "confirmed-string",
        yaml_map("{freq: 2}", extra="").replace("{method: uniform}", "{method: uniform, confirmed: 'no'}"),
        "provenance.confirmed",
        "expected true or false, got a string",
    ),
    # nulls are not absent keys
    ("null-pattern", yaml_map("{pattern: null, freq: 2}"), "map.pattern", "is null"),
    ("null-offset", yaml_map("{freq: 2, offset: null}"), "map.offset", "is null"),
    (
        "null-num-layers",
        yaml_map("{freq: 2}", model="{architectures: [X], num_layers: null}"),
        "model.num_layers",
        "is null",
    ),
    ("null-map", "model: {architectures: [X]}\nmap:\nprovenance: {method: uniform}\n", "map", "is null"),
    ("offset-alone", yaml_map("{offset: 3}"), "map", "offset without freq"),
    # YAML that is valid but not a map file
    (
        "duplicate-top-key",
        yaml_map("{pattern: FFSS}", extra="map: {freq: 2}\n"),
        "(file)",
        "duplicate key 'map' (line 4)",
    ),
    ("duplicate-map-key", yaml_map("{freq: 2, freq: 4}"), "(file)", "duplicate key 'freq' (line 2)"),
    ("alias", yaml_map("&rule {pattern: FFSS}", extra="again: *rule\n"), "(file)", "aliases (*name) are not allowed"),
    (
        "billion-laughs",
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(9)),
        "(file)",
        "aliases (*name) are not allowed (line 2)",
    ),
    ("deep-nesting", "model: " + "[" * 20_000 + "]" * 20_000 + "\n", "(file)", "nested more than 32 levels deep"),
    ("deep-mapping", "model: " + "{a: " * 5_000 + "1" + "}" * 5_000 + "\n", "(file)", "nested more than 32 levels"),
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


def special_file(tmp_path, kind):
    import os

    if kind == "fifo":  # opening it for reading would wait for a writer forever
        os.mkfifo(tmp_path / "fifo.yaml")
        return str(tmp_path / "fifo.yaml")
    return {"device": "/dev/zero", "directory": str(tmp_path)}[kind]


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda tmp: special_file(tmp, "fifo"), "not a regular file"),
        (lambda tmp: special_file(tmp, "device"), "not a regular file"),
        (lambda tmp: special_file(tmp, "directory"), "not a regular file"),
        (lambda tmp: str(tmp / ("x" * 5000)), "characters long"),
        (lambda tmp: str(tmp / ("x" * 300)), "cannot open it (File name too long)"),
        (lambda tmp: str(tmp / "a\0b.yaml"), "path contains a NUL character"),
        (
            lambda tmp: (tmp / "huge.yaml").write_text("notes: " + "x" * (2 << 20)) and str(tmp / "huge.yaml"),
            "larger than 1048576 bytes",
        ),
    ],
    ids=["fifo", "device", "directory", "long-path", "long-name", "nul", "huge"],
)
def test_files_that_are_not_maps_fail_cleanly(tmp_path, make, words):
    path = make(tmp_path)
    with pytest.raises(MapError) as e:
        LayerMap.load(path)
    assert e.value.key == "(file)" and words in e.value.problem and len(str(e.value)) < 500
    if "\0" in path:  # no shell can pass it
        return
    result = run_cli("validate", path, timeout=60)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and words in result.stderr


def test_permission_denied_is_one_line(tmp_path, monkeypatch):
    import errno
    import os

    from sglang_indexcache import safe_input

    path = tmp_path / "locked.yaml"
    path.write_text(yaml_map("{pattern: FFSS}"))

    def denied(*args, **kwargs):  # tests may run as root, which reads any file
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(safe_input.os, "open", denied)
    with pytest.raises(MapError, match="cannot open it \\(Permission denied\\)"):
        LayerMap.load(path)


def model_config(tmp_path, **changes):
    cfg = {**GOOD_MODEL, **changes}
    cfg = {k: v for k, v in cfg.items() if v is not None}
    (tmp_path / "model").mkdir(exist_ok=True)
    (tmp_path / "model" / "config.json").write_text(json.dumps(cfg))
    return tmp_path / "model"


MODEL_CASES = [
    (
        "other-architecture",
        {"architectures": ["DeepseekV3ForCausalLM"]},
        "map",
        "model.architectures",
        "map is for GlmMoeDsaForCausalLM but",
    ),
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


def run_cli(*args, timeout=None):
    return subprocess.run(
        [sys.executable, "-m", "sglang_indexcache", *args], capture_output=True, text=True, timeout=timeout
    )


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
    ok = run_cli("validate", "glm-5/searched-1of4", "--model-config", str(model_config(tmp_path, num_hidden_layers=78)))
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


def test_cli_show_answers_in_linear_time_and_bounds_the_layer_count(write_map):
    """100,000 layers at freq 2: a quadratic lookup of each Shared layer's source would take hours."""
    path = write_map("model: {architectures: [X]}\nmap: {freq: 2, offset: 1}\nprovenance: {method: uniform}\n")
    shown = run_cli("show", str(path), "--num-layers", "100000", timeout=120)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "full: 50000" in lines and "  99998: 99999" in lines
    for bad in ("1000000000000", "0", "-3"):
        refused = run_cli("show", str(path), "--num-layers", bad, timeout=60)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert "num_layers" in refused.stderr and "Traceback" not in refused.stderr


# -- one set of rules, whichever way the map arrives --------------------------------------------------------


# (case id, bad schedule as HF request keys, the same mistake in a map file's map: section)
SAME_MISTAKES = [
    ("numeric-string", {"index_topk_freq": "4"}, '{freq: "4"}'),
    ("boolean", {"index_topk_freq": True}, "{freq: true}"),
    ("list", {"index_topk_freq": [4]}, "{freq: [4]}"),
    ("float", {"index_topk_freq": 4.0}, "{freq: 4.0}"),
    ("pattern-number", {"index_topk_pattern": 1111}, "{pattern: 1111}"),
    ("null", {"index_topk_freq": None}, "{freq: null}"),
    ("offset-without-freq", {"index_skip_topk_offset": 3}, "{offset: 3}"),
]


@pytest.mark.parametrize("request_keys, map_section", [c[1:] for c in SAME_MISTAKES], ids=[c[0] for c in SAME_MISTAKES])
def test_every_way_in_gives_the_same_error(write_map, request_keys, map_section):
    from sglang_indexcache.request import resolve_request
    from sglang_indexcache.switching import switch_request

    errors = {}
    with pytest.raises(MapError) as e:
        LayerMap.load(write_map(yaml_map(map_section)))
    errors["file"] = e.value
    with pytest.raises(MapError) as e:
        resolve_request(None, request_keys, GOOD_MODEL, "config.json")
    errors["overrides"] = e.value
    with pytest.raises(MapError) as e:
        switch_request(request_keys, GOOD_MODEL, "config.json")
    errors["admin body"] = e.value
    problems = {how: err.problem for how, err in errors.items()}
    assert len(set(problems.values())) == 1, problems
    if "offset" not in next(iter(request_keys)):  # the offset's fix names the keys as each way spells them
        assert len({err.fix for err in errors.values()}) == 1


def test_cli_switch_checks_before_sending():
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, ["switch", "--offset", "3", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "offset without freq" in result.stderr and "cannot reach" not in result.output
    result = CliRunner().invoke(app, ["switch", "glm-5/uniform-1of4", "--freq", "4", "--url", "http://127.0.0.1:9"])
    assert result.exit_code == 2 and "given together" in result.stderr


@pytest.mark.parametrize(
    "text, words",
    [
        ("[1, 2]", "not a JSON object but a list"),
        ('"FSSS"', "not a JSON object but a string"),
        ("null", "not a JSON object but null"),
        ('{"index_topk_freq": 4, "index_topk_freq": 2}', "duplicate key 'index_topk_freq'"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ("{not json", "invalid JSON"),
    ],
)
def test_json_requests_fail_cleanly(text, words):
    from sglang_indexcache.safe_input import load_json_object

    with pytest.raises(MapError) as e:
        load_json_object(text, "--json-model-override-args")
    assert words in e.value.problem and e.value.source == "--json-model-override-args"
