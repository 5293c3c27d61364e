"""The declarative patch table: the manifest says what the table says, one loop applies it, one registry guards it,
and the process state has one reset."""

import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

import sglang_indexcache.patches as patches  # noqa: E402
from sglang_indexcache import LayerMap  # noqa: E402
from sglang_indexcache.names import ENV_CAPTURE_DIR, ENV_PATTERN, ENV_SOURCE  # noqa: E402
from sglang_indexcache.patches import REGISTRY, apply, apply_model_patches, revert  # noqa: E402
from sglang_indexcache.patches.process_map import plan, plan_for  # noqa: E402
from sglang_indexcache.patches.state import COUNTERS, STATE, reset, set_active  # noqa: E402
from sglang_indexcache.patches.table import MAIN, PATCHES, WORKER, rows  # noqa: E402
from sglang_indexcache.patches.targets import SERVER_ARGS  # noqa: E402

pytestmark = pytest.mark.sglang
PATCHES_DIR = Path(__file__).resolve().parents[1] / "patches"
ROW = re.compile(r"^\| ``(\w+)`` \| (\w+) \| (.+?) \| ")


def manifest() -> dict[str, tuple[str, set[str]]]:
    found = {}
    for line in patches.__doc__.splitlines():
        match = ROW.match(line)
        if match:
            found[match[1]] = (match[2], set(re.findall(r"``([\w.]+)``", match[3])))
    return found


def short(target) -> set[str]:
    """The manifest's names for a target: every alternative of a ``OneOf``, whichever this SGLang has."""
    alternatives = getattr(target, "alternatives", (target,))
    return {f"{a.module.rsplit('.', 1)[1]}.{a.qualname}" for a in alternatives}


def test_manifest_matches_the_table():
    assert list(manifest()) == [p.name for p in PATCHES]
    for patch in PATCHES:
        process, targets = manifest()[patch.name]
        assert process == patch.process, patch.name
        assert targets == set().union(*(short(t) for t in patch.targets)), patch.name


def test_every_row_is_complete_and_lives_with_its_process():
    assert len({p.name for p in PATCHES}) == len(PATCHES)
    for patch in PATCHES:
        assert patch.process in (MAIN, WORKER) and patch.why and patch.upstream and patch.remove_when
        assert patch.apply.startswith(f"{patch.process}."), patch.name
        module = patch.apply.partition(":")[0].replace(".", "/")
        assert (PATCHES_DIR / f"{module}.py").is_file(), patch.name
        assert callable(patch.function())
        assert all(t.dotted.startswith("sglang.") for t in (*patch.targets, *patch.reads))


def test_core_patches_are_those_serving_a_map_needs():
    assert {p.name for p in PATCHES if p.core} == {
        "indexer_forward", "attention_roles", "model_checks", "model_forward_reset", "index_k_memory",
        "shared_indexer_weights", "server_args"}


@pytest.fixture
def requested(monkeypatch):
    sglang_cpu.sglang_dist_env()  # a scheduler's set-up: plans read the pipeline stage and server args
    monkeypatch.setenv(ENV_PATTERN, "FSSSFSSS")
    monkeypatch.setenv(ENV_SOURCE, "t.yaml")
    yield
    revert()


def test_the_loop_applies_each_worker_row_and_records_it_under_its_name(requested):
    apply_model_patches()
    recorded = {name for _, name in REGISTRY.applied()}
    assert recorded == {p.name for p in rows(WORKER) if p.enabled()}
    assert "topk_capture" not in recorded  # off without its variable
    before = REGISTRY.applied()
    apply(WORKER)  # the registry is the guard: nothing is applied twice
    assert REGISTRY.applied() == before


def test_main_rows_apply_on_their_module(requested):
    apply(MAIN, SERVER_ARGS)
    assert {name for _, name in REGISTRY.applied()} == {"server_args"}
    apply(MAIN)
    assert {name for _, name in REGISTRY.applied()} == {"server_args", "admin_endpoint", "map_switch_endpoint"}


def test_capture_row_is_applied_with_its_variable(requested, monkeypatch, tmp_path):
    monkeypatch.setenv(ENV_CAPTURE_DIR, str(tmp_path))
    apply_model_patches()
    assert sum(name == "topk_capture" for _, name in REGISTRY.applied()) == 2


def config(layers=8):
    return SimpleNamespace(num_hidden_layers=layers)


def test_plans_are_keyed_by_what_they_are_computed_from(requested):
    first = plan_for(config())
    assert plan_for(config()) is first  # another config object of the same shape: the same plan
    assert plan_for(config()).effective.pattern == "FSSSFSSS"
    with pytest.raises(RuntimeError, match="has 8 layers but the model being built has 4"):
        plan_for(config(4))


def test_a_new_request_is_not_answered_with_an_old_plan(requested, monkeypatch):
    """Keyed by id(config), a config freed and another allocated at its address got the old plan."""
    assert plan_for(config()).effective.pattern == "FSSSFSSS"
    monkeypatch.setenv(ENV_PATTERN, "FFSSFFSS")
    assert plan_for(config()).effective.pattern == "FFSSFFSS"


def test_revert_resets_every_piece_of_process_state(requested):
    apply_model_patches()
    plan_for(config())
    set_active(plan(LayerMap("FSSSFSSS"), 8, (0, 8), None), rank=3)
    stopped = []
    STATE.metrics, STATE.armed = SimpleNamespace(stop=lambda: stopped.append(True)), True
    COUNTERS.record(0, ran=True)
    generation = COUNTERS.snapshot()["generation"]
    revert()
    assert REGISTRY.applied() == []
    assert STATE.plans == {} and STATE.active is None and STATE.startup is None and STATE.rank == 0
    assert STATE.metrics is None and STATE.armed is False and STATE.switches == 0
    assert stopped == [True]  # the metrics' publishing thread was stopped, not left running
    snap = COUNTERS.snapshot()
    assert snap["calls"] == {} and snap["forwards"] == 0 and snap["generation"] == generation + 1
    reset()  # also on its own
    assert STATE.plans == {}


def test_native_row_is_neither_applied_nor_probed(monkeypatch):
    """A row whose work SGLang does itself is off: not applied, its targets and reads not probed."""
    from sglang_indexcache.patches import table

    row = next(p for p in table.PATCHES if p.name == "index_k_memory")
    assert row.native is not None
    monkeypatch.setattr("sglang_indexcache.patches.worker.eras.sglang_sizes_shared_layers", lambda: True)
    assert row.is_native() and not row.enabled()
    monkeypatch.setattr("sglang_indexcache.patches.worker.eras.sglang_sizes_shared_layers", lambda: False)
    assert not row.is_native() and row.enabled()
