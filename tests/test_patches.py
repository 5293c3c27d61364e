"""The SGLang patches against the real SGLang 0.5.10.post1 (built on the meta device, no GPU)."""

from types import SimpleNamespace

import pytest
import sglang_cpu
import torch

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_cpu import build_decoder_layers, build_model, tiny_dsa_config  # noqa: E402

from sglang_indexcache import LayerMap  # noqa: E402
from sglang_indexcache.names import (  # noqa: E402
    ENV_PATTERN,
    ENV_SOURCE,
    PROFILER_RANGE,  # noqa: E402
)
from sglang_indexcache.patches import REGISTRY, apply_model_patches, revert  # noqa: E402
from sglang_indexcache.patches.process_map import plan  # noqa: E402
from sglang_indexcache.patches.state import COUNTERS  # noqa: E402
from sglang_indexcache.patches.table import ALL_TARGETS  # noqa: E402
from sglang_indexcache.patches.targets import IncompatibleSGLang, Target  # noqa: E402
from sglang_indexcache.patches.worker.indexer_forward import ROLE, SLOT, StaleIndices  # noqa: E402

pytestmark = pytest.mark.sglang


@pytest.fixture
def patched(monkeypatch):
    """Patches applied with ``pattern`` requested, reverted afterwards."""

    def apply(pattern: str):
        monkeypatch.setenv(ENV_PATTERN, pattern)
        monkeypatch.setenv(ENV_SOURCE, "test-map")
        apply_model_patches()

    yield apply
    revert()


def roles(layers):
    return [getattr(layer.self_attn.indexer, ROLE, None) for layer in layers]


# -- targets and registry ---------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ALL_TARGETS, ids=lambda t: t.dotted)
def test_every_target_exists_with_its_signature(target):
    from sglang_indexcache.patches.table import PATCHES

    users = [p for p in PATCHES if target in (*p.targets, *p.reads)]
    if all(p.is_native() for p in users):
        pytest.skip("only patches whose work this SGLang does itself use it")
    assert target.resolve() is not None


def test_missing_target_is_refused_by_name():
    with pytest.raises(IncompatibleSGLang, match=r"DeepseekV2Model\.no_such_method not found.*0\.5\.10\.post1"):
        Target("sglang.srt.models.deepseek_v2", "DeepseekV2Model.no_such_method").resolve()
    with pytest.raises(IncompatibleSGLang, match="lacks parameter.*prev_topk"):
        Target("sglang.srt.models.deepseek_v2", "DeepseekV2Model.forward", ("prev_topk",)).resolve()


def test_apply_and_revert_are_exact(patched):
    from sglang.srt.layers.attention.nsa.nsa_indexer import Indexer
    from sglang.srt.layers.utils.multi_platform import MultiPlatformOp
    from sglang.srt.models.deepseek_v2 import DeepseekV2AttentionMLA, DeepseekV2Model

    before = {
        "attn_init": DeepseekV2AttentionMLA.__dict__["__init__"],
        "model_init": DeepseekV2Model.__dict__["__init__"],
        "model_forward": DeepseekV2Model.__dict__["forward"],
    }
    assert "forward" not in Indexer.__dict__  # inherited from MultiPlatformOp
    patched("FSFS")
    assert Indexer.forward.__indexcache_patch__ == "indexer_forward"
    assert DeepseekV2AttentionMLA.__init__ is not before["attn_init"]
    assert DeepseekV2Model.forward.__wrapped__ is before["model_forward"]
    from sglang_indexcache.patches.table import PATCHES

    native = sum(len(p.targets) for p in PATCHES if p.is_native())  # rows SGLang does itself are not applied
    assert len(REGISTRY.applied()) == 11 - native
    apply_model_patches()  # idempotent
    assert len(REGISTRY.applied()) == 11 - native
    revert()
    assert "forward" not in Indexer.__dict__ and Indexer.forward is MultiPlatformOp.forward
    assert DeepseekV2AttentionMLA.__dict__["__init__"] is before["attn_init"]
    assert DeepseekV2Model.__dict__["__init__"] is before["model_init"]
    assert DeepseekV2Model.__dict__["forward"] is before["model_forward"]
    from sglang.srt.managers.scheduler import Scheduler

    for name in ("process_input_requests", "init_request_dispatcher", "get_internal_state"):
        assert not hasattr(Scheduler.__dict__[name], "__indexcache_patch__")
    assert REGISTRY.applied() == []


def test_double_wrap_is_refused():
    from sglang_indexcache.patches.registry import PatchRegistry

    class Owner:
        def f(self):
            return 1

    registry = PatchRegistry()
    registry.wrap(Owner, "f", lambda orig: lambda self: orig(self) + 1, patch="first")
    with pytest.raises(RuntimeError, match="already patched by first"):
        registry.wrap(Owner, "f", lambda orig: orig, patch="second")
    assert Owner().f() == 2
    registry.revert()
    assert Owner().f() == 1


# -- roles on layers SGLang builds --------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["FFFFFFFF", "FSFSFSFS", "FSSSFSSS", "FFSFSSSF"])
def test_layers_get_roles_and_native_sharing_is_off(patched, pattern):
    patched(pattern)
    layers = build_decoder_layers(tiny_dsa_config(), range(8))
    got = roles(layers)
    assert "".join("F" if r.full else "S" for r in got) == pattern
    assert [r.source for r in got] == [LayerMap(pattern).source_layer(l) for l in range(8)]
    assert all(layer.self_attn.skip_topk is False and layer.self_attn.next_skip_topk is False for layer in layers)


def test_nextn_layer_keeps_its_indexer(patched):
    patched("FSSSFSSS")
    (draft,) = build_decoder_layers(tiny_dsa_config(), [0], is_nextn=True)
    assert roles([draft]) == [None]


def test_nextn_layer_is_full(patched):
    """Draft layers run their own indexer under a map, also where SGLang (0.5.14+) would have them reuse the
    previous draft step's top-k, and whatever native schedule keys the checkpoint carries."""
    patched("FSSSFSSS")
    (layer,) = build_decoder_layers(tiny_dsa_config(), [0], is_nextn=True, overrides={"index_topk_freq": 4})
    assert layer.self_attn.skip_topk is False
    assert layer.self_attn.next_skip_topk is False


@pytest.mark.parametrize("overrides, pattern", [
    ({"index_topk_pattern": "FSFSSFFS"}, "FSFSSFFS"),
    ({"index_topk_freq": 4}, LayerMap.from_hf_config({"num_hidden_layers": 8, "index_topk_freq": 4}).pattern),
    ({"index_topk_freq": 3}, LayerMap.from_hf_config({"num_hidden_layers": 8, "index_topk_freq": 3}).pattern),
])
def test_roles_match_sglang_native_schedule(patched, overrides, pattern):
    native = build_decoder_layers(tiny_dsa_config(), range(8), overrides=overrides)
    native_pattern = "".join("S" if layer.self_attn.skip_topk else "F" for layer in native)
    assert native_pattern == pattern  # SGLang's own formula agrees with HF's offset-2 schedule
    patched(pattern)
    ours = roles(build_decoder_layers(tiny_dsa_config(), range(8)))
    assert "".join("F" if r.full else "S" for r in ours) == native_pattern


def test_model_build_checks_and_logs(patched, caplog):
    patched("FSSSFSSS")
    with caplog.at_level("INFO", logger="sglang_indexcache"):
        model = build_model(tiny_dsa_config())
    assert "".join("F" if r.full else "S" for r in roles(model.model.layers)) == "FSSSFSSS"
    (line,) = [r.message for r in caplog.records if "IndexCache active" in r.message]
    assert "map test-map, pattern FSSSFSSS, 2/8 Full" in line
    from sglang_indexcache.patches.worker.scheduler_status import status

    assert status()["pattern"] == "FSSSFSSS" and status()["map"] == "test-map"


def test_model_build_refuses_layers_without_role(patched, monkeypatch):
    patched("FSSSFSSS")
    from sglang_indexcache.patches.worker import attention_roles

    # Simulate the attention hook not running (e.g. a renamed constructor argument).
    monkeypatch.setattr(attention_roles, "LayerRole", lambda *a: None)
    with pytest.raises(RuntimeError, match=r"layers \[0, 1, 2, 3, 4, 5, 6, 7\] were built without it"):
        build_model(tiny_dsa_config())


def test_no_request_no_effect():
    apply_model_patches()
    try:
        layers = build_decoder_layers(tiny_dsa_config(), range(4), overrides={"index_topk_freq": 2})
        assert roles(layers) == [None] * 4
        # SGLang's own flags are left as SGLang set them.
        assert [layer.self_attn.skip_topk for layer in layers] == [False, False, True, False]
    finally:
        revert()


# -- the forward: who runs, who reuses, and whose indices ----------------------------------------------------


class FakeIndexerKernel:
    """Stands in for the indexer's GPU kernels: returns a tensor unique to (layer, batch) and records calls."""

    def __init__(self, layer):
        self.layer, self.calls = layer, []

    def __call__(self, x, q_lora, positions, forward_batch, layer_id, return_indices=True):
        self.calls.append(forward_batch.name)
        return torch.full((2, 4), 100 * self.layer + forward_batch.id) if return_indices else None


def run_layers(layers, forward_batch, return_indices=True):
    return [
        layer.self_attn.indexer(x=None, q_lora=None, positions=None, forward_batch=forward_batch,
                                layer_id=i, return_indices=return_indices)
        for i, layer in enumerate(layers)
    ]


def fake_layers(pattern):
    layers = build_decoder_layers(tiny_dsa_config(num_layers=len(pattern)), range(len(pattern)))
    kernels = []
    for i, layer in enumerate(layers):
        kernels.append(FakeIndexerKernel(i))
        layer.self_attn.indexer._forward_method = kernels[-1]
    return layers, kernels


def batch(name, id_):
    return SimpleNamespace(name=name, id=id_)


def test_shared_layers_run_nothing_and_reuse_their_source(patched):
    pattern = "FSSFSFFS"
    patched(pattern)
    layers, kernels = fake_layers(pattern)
    COUNTERS.reset()
    out = run_layers(layers, batch("a", 1))
    assert [len(k.calls) for k in kernels] == [1 if c == "F" else 0 for c in pattern]
    sources = [LayerMap(pattern).source_layer(l) for l in range(len(pattern))]
    assert [int(t[0, 0]) for t in out] == [100 * s + 1 for s in sources]
    snap = COUNTERS.snapshot()
    assert sum(snap["calls"].values()) == pattern.count("F") and sum(snap["skips"].values()) == pattern.count("S")
    assert snap["skips"] == {l: 1 for l, c in enumerate(pattern) if c == "S"}


def test_two_micro_batches_never_see_each_others_indices(patched):
    """Two-batch overlap interleaves layers of two micro-batches, each with its own ForwardBatch."""
    pattern = "FSFSSFSS"
    patched(pattern)
    layers, _ = fake_layers(pattern)
    a, b = batch("a", 1), batch("b", 2)
    for i, layer in enumerate(layers):
        for fb in (a, b):
            out = layer.self_attn.indexer(x=None, q_lora=None, positions=None, forward_batch=fb, layer_id=i)
            assert int(out[0, 0]) == 100 * LayerMap(pattern).source_layer(i) + fb.id


def test_full_layers_open_the_profiler_range(patched):
    """Under torch's profiler, each Full layer's indexer runs inside one range holding its work (how the
    benchmark attributes the indexer's kernels); Shared layers open none."""
    pattern = "FSSFSSSF"
    patched(pattern)
    layers, _ = fake_layers(pattern)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run_layers(layers, batch("a", 1))
    ranges = [e for e in prof.events() if e.name == PROFILER_RANGE]
    fills = [e for e in prof.events() if e.name == "aten::full"]
    assert len(ranges) == pattern.count("F") and len(fills) == pattern.count("F")
    assert all(any(r.time_range.start <= f.time_range.start <= r.time_range.end for r in ranges) for f in fills)


def test_shared_layer_without_its_source_refuses(patched):
    patched("FSSF")
    layers, _ = fake_layers("FSSF")
    with pytest.raises(StaleIndices, match="layer 1 needs layer 0's top-k in this forward batch but found nothing"):
        run_layers(layers[1:2], batch("fresh", 3))
    fb = batch("c", 4)
    run_layers(layers[3:4], fb)  # layer 3 (F) ran, layer 0 did not
    with pytest.raises(StaleIndices, match="found layer 3's"):
        run_layers(layers[1:2], fb)


def test_mha_prefill_path_writes_no_shared_index_keys(patched):
    """The dense-MHA prefill calls every indexer with return_indices=False only to store index keys."""
    patched("FSSF")
    layers, kernels = fake_layers("FSSF")
    assert run_layers(layers, batch("mha", 5), return_indices=False) == [None] * 4
    assert [len(k.calls) for k in kernels] == [1, 0, 0, 1]


def test_model_forward_clears_previous_indices(patched, monkeypatch):
    from sglang.srt.models.deepseek_v2 import DeepseekV2Model

    seen = {}

    def body(self, input_ids, positions, forward_batch, *args, **kwargs):
        seen["slot"] = getattr(forward_batch, SLOT)

    monkeypatch.setattr(DeepseekV2Model, "forward", body)  # stands in for the real forward, wrapped below
    patched("FSFS")
    fb = batch("reused", 6)
    setattr(fb, SLOT, (0, torch.zeros(1)))  # left by an earlier run of the same ForwardBatch
    DeepseekV2Model.forward(None, None, None, fb)
    assert seen["slot"] is None


# -- per-process plan: pipeline stages and two-batch overlap ------------------------------------------------


def test_stage_starting_on_shared_layer_computes():
    p = plan(LayerMap("FSSSFSSS"), 8, stage=(3, 8), tbo_start=None)
    assert p.effective.pattern == "FSSFFSSS"
    assert p.forced == {3: "first layer of this pipeline stage"}
    assert "layer 3 computes (first layer of this pipeline stage)" in p.startup_line("rank 1")
    assert plan(LayerMap("FSSSFSSS"), 8, stage=(4, 8), tbo_start=None).forced == {}


def test_first_two_batch_overlap_layer_computes():
    p = plan(LayerMap("FSSSFSSS"), 8, stage=(0, 8), tbo_start=1)
    assert p.effective.pattern == "FFSSFSSS" and p.forced == {1: "first two-batch-overlap layer"}
    assert plan(LayerMap("FSSSFSSS"), 8, stage=(0, 8), tbo_start=None).forced == {}


def test_plan_refuses_other_layer_count():
    with pytest.raises(RuntimeError, match="has 4 layers but the model being built has 8"):
        plan(LayerMap("FSSS"), 8, stage=(0, 8), tbo_start=None)
