"""A checkpoint that states its own sharing schedule (GLM-5.2) is served with it when nothing is requested, through
the installed start-up hook in a fresh interpreter, and a request that needs indexer weights it lacks is refused."""

import json
import textwrap

import pytest
from test_autoload import installed, last_line, run, site_dir  # noqa: F401 - fixtures

pytest.importorskip("sglang")
pytestmark = pytest.mark.sglang

from sglang_indexcache.configs import __file__ as _configs  # noqa: E402
from sglang_indexcache.layer_map import LayerMap  # noqa: E402
from sglang_indexcache.schedule import pattern_from_freq  # noqa: E402

NUM_LAYERS = 8
PATTERN = pattern_from_freq(NUM_LAYERS, 4, 3)  # the checkpoint's freq 4 / offset 3: FFFSSSFS


def glm52_config(**overrides) -> dict:
    """GLM-5.2's bundled config.json (freq 4, offset 3) cut to 8 layers; the MoE routing keys it leaves out, and
    SGLang reads, come from the DeepSeek-V3.2-style test config."""
    from sglang_cpu import tiny_dsa_config

    with open(f"{_configs.rsplit('/', 1)[0]}/models/glm-5.2/config.json") as f:
        config = {**tiny_dsa_config(), **json.load(f)}
    config.update(num_hidden_layers=NUM_LAYERS, **overrides)
    return config


def checkpoint(tmp_path, config, indexer_layers):
    """A model directory with ``config`` and a safetensors index naming indexer tensors for ``indexer_layers`` only."""
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(config))
    names = [f"model.layers.{l}.self_attn.kv_a_proj_with_mqa.weight" for l in range(NUM_LAYERS)]
    names += [f"model.layers.{l}.self_attn.indexer.{w}.weight" for l in indexer_layers for w in ("wq_b", "wk")]
    (model / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: "x.safetensors" for n in names}}))
    return model


SERVE = textwrap.dedent("""
    import json, logging, os, sys
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(message)s")
    import sglang_cpu
    server_args = sglang_cpu.launch_server_args(model_path={model!r}, device="cuda", load_format={load_format!r},
                                                json_model_override_args={overrides!r})
    print("PATTERN", os.environ.get("SGLANG_INDEXCACHE_PATTERN"))
    if os.environ.get("SGLANG_INDEXCACHE_PATTERN") and {build}:
        from sglang_indexcache.patches.worker.indexer_forward import ROLE
        # Built with the overrides SGLang applies after the launch resolved them (0.5.20+: the map handed over).
        model = sglang_cpu.build_model(json.load(open({model!r} + "/config.json")),
                                       json.loads(server_args.json_model_override_args or "{{}}"))
        layers = model.model.layers
        print("ROLES", "".join("F" if getattr(l.self_attn.indexer, ROLE).full else "S" for l in layers))
        print("NATIVE_SKIP", any(l.self_attn.skip_topk or l.self_attn.next_skip_topk for l in layers))
        print("SHARED_WEIGHTS", [i for i, l in enumerate(layers) if hasattr(l.self_attn.indexer, "wq_b")])
        print("PARAMETERS", [i for i, l in enumerate(layers) if any(True for _ in l.self_attn.indexer.parameters())])
        print("OP_STATE", all(not l.self_attn.indexer.is_torch_compile for l in layers))
""")


def serve(site_dir, model, env=None, overrides="{}", build=False, load_format="auto"):  # noqa: F811
    code = SERVE.format(model=str(model), overrides=overrides, build=build, load_format=load_format)
    return run(site_dir, code, env={"INDEXCACHE_TEST_FAKE_HOPPER": "1", **(env or {})})


def test_served_with_its_own_schedule_without_a_request(site_dir, tmp_path):  # noqa: F811
    config = glm52_config()
    assert LayerMap.from_hf_config(config).pattern == PATTERN != pattern_from_freq(NUM_LAYERS, 4)  # not SGLang's
    model = checkpoint(tmp_path, config, [l for l, c in enumerate(PATTERN) if c == "F"])
    out = serve(site_dir, model, build=True)
    assert f"PATTERN {PATTERN}" in out.stdout, out.stderr[-3000:]
    assert "IndexCache serves the checkpoint's own schedule: checkpoint (" in out.stdout
    assert "index_topk_freq 4, index_skip_topk_offset 3" in out.stdout
    assert f"ROLES {PATTERN}" in out.stdout, out.stderr[-3000:]
    assert "NATIVE_SKIP False" in out.stdout
    assert "SHARED_WEIGHTS [0, 1, 2, 6]" in out.stdout  # Shared layers carry no indexer weights
    line = next(l for l in out.stdout.splitlines() if l.startswith("IndexCache active"))
    assert "map checkpoint (" in line and f"pattern {PATTERN}" in line


def test_indexer_types_come_first(site_dir, tmp_path):  # noqa: F811
    types = ["full", "shared"] * (NUM_LAYERS // 2)
    model = checkpoint(tmp_path, glm52_config(indexer_types=types), [0, 2, 4, 6])
    out = serve(site_dir, model)
    assert "PATTERN FSFSFSFS" in out.stdout, out.stderr[-3000:]


def test_disable_still_wins(site_dir, tmp_path):  # noqa: F811
    model = checkpoint(tmp_path, glm52_config(), [0, 1, 2, 6])
    out = serve(site_dir, model, env={"SGLANG_INDEXCACHE_DISABLE": "1"})
    assert "PATTERN None" in out.stdout, out.stderr[-3000:]
    assert "IndexCache" not in out.stdout


def test_no_schedule_no_arming(site_dir, tmp_path):  # noqa: F811
    config = glm52_config()
    del config["index_topk_freq"], config["index_skip_topk_offset"]
    out = serve(site_dir, checkpoint(tmp_path, config, range(NUM_LAYERS)))
    assert "PATTERN None" in out.stdout, out.stderr[-3000:]


def test_request_wins_when_the_weights_exist(site_dir, tmp_path):  # noqa: F811
    model = checkpoint(tmp_path, glm52_config(), range(NUM_LAYERS))
    out = serve(site_dir, model, overrides='{"index_topk_freq": 2}')
    assert f"PATTERN {pattern_from_freq(NUM_LAYERS, 2)}" in out.stdout, out.stderr[-3000:]


def test_requested_map_builds_its_roles(site_dir, tmp_path):  # noqa: F811
    """A request other than the checkpoint's schedule is what the model is built with, on every release: where
    SGLang is handed the map (0.5.20+) it builds no indexer for Shared layers and they get parameter-free
    stand-ins; before, the indexers SGLang builds lose their weights."""
    model = checkpoint(tmp_path, glm52_config(), range(NUM_LAYERS))
    requested = pattern_from_freq(NUM_LAYERS, 2)
    out = serve(site_dir, model, overrides='{"index_topk_freq": 2}', build=True)
    assert f"ROLES {requested}" in out.stdout, out.stderr[-3000:]
    assert "NATIVE_SKIP False" in out.stdout
    full = [l for l, c in enumerate(requested) if c == "F"]
    assert f"SHARED_WEIGHTS {full}" in out.stdout
    assert f"PARAMETERS {full}" in out.stdout  # stand-in or not, a Shared layer's indexer holds no parameters
    assert "OP_STATE True" in out.stdout


@pytest.mark.parametrize("how", ["map", "override"])
def test_request_needing_absent_indexer_weights_is_refused_before_weights(site_dir, tmp_path, how):  # noqa: F811
    import sglang_cpu

    model = checkpoint(tmp_path, glm52_config(), [0, 1, 2, 6])
    base = ["-m", "sglang.launch_server", "--model-path", str(model), "--skip-tokenizer-init", "--device", "cuda"]
    env = {"INDEXCACHE_TEST_FAKE_HOPPER": "1"}
    if how == "map":
        (tmp_path / "allF.yaml").write_text(LayerMap("F" * NUM_LAYERS).to_yaml(["GlmMoeDsaForCausalLM"]))
        env["SGLANG_INDEXCACHE_MAP"] = str(tmp_path / "allF.yaml")
        args = base
    else:
        args = [*base, "--json-model-override-args", '{"index_topk_freq": 2}']  # FFSFSFSF: 3 and 7 lack weights
    out = run(site_dir, args, env=env, module=True)
    assert out.returncode == 2, out.stderr[-3000:]
    last = last_line(out.stderr)
    missing = "[3, 4, 5, 7]" if how == "map" else "[3, 5, 7]"
    assert last.startswith("error: ") and f"layers {missing} would run their indexer" in last, last
    assert "Traceback" not in out.stderr
    assert sglang_cpu  # the stubs the site dir installs
