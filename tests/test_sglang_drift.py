"""Fail closed when SGLang drifts: renamed attributes, models without roles and moved parameters refuse to start."""

import inspect
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import sglang_cpu
import tomllib
import torch

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_cpu import build_model, tiny_dsa_config  # noqa: E402
from test_patches import batch, fake_layers, patched  # noqa: E402, F401 - fixture

from sglang_indexcache.patches import targets  # noqa: E402
from sglang_indexcache.patches.arguments import Argument  # noqa: E402
from sglang_indexcache.patches.main.server_args import resolve_in_main_process  # noqa: E402
from sglang_indexcache.patches.table import check_worker_targets  # noqa: E402
from sglang_indexcache.patches.targets import (  # noqa: E402
    ATTENTION_CLASS,
    ATTRIBUTES,
    SERVER_ARGS_CLASS,
    SUPPORTED,
    SUPPORTED_VERSIONS,
    Attribute,
    IncompatibleSGLang,
)

pytestmark = pytest.mark.sglang
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("attribute", ATTRIBUTES, ids=lambda a: a.dotted)
def test_every_attribute_read_with_a_default_exists(attribute):
    attribute.resolve()


def test_missing_field_and_attribute_are_refused_by_name():
    with pytest.raises(IncompatibleSGLang, match=r"ServerArgs\.enable_hierarchical_kache not found"):
        Attribute(SERVER_ARGS_CLASS, "enable_hierarchical_kache").resolve()
    with pytest.raises(IncompatibleSGLang, match=r"DeepseekV2AttentionMLA\.use_msa not found"):
        Attribute(ATTENTION_CLASS, "use_msa").resolve()


@pytest.fixture
def renamed_use_nsa(monkeypatch):
    """SGLang as it would read had it renamed its DSA flag (``self.use_nsa``, ``self.use_dsa`` from 0.5.14) once
    more, to a name the patches do not know."""
    real = inspect.getsource

    def getsource(obj):
        return re.sub(r"\bself\.use_[nd]sa\b", "self.use_msa", real(obj))

    monkeypatch.setattr(targets.inspect, "getsource", getsource)


def test_renamed_attribute_refuses_the_launch(renamed_use_nsa, tmp_path, monkeypatch):
    with pytest.raises(IncompatibleSGLang) as e:
        check_worker_targets()
    message = str(e.value)
    assert "DeepseekV2AttentionMLA.use_dsa|use_nsa not found" in message
    assert f"Supported: {SUPPORTED} (installed: sglang {targets.installed_version()})" in message
    assert all(v in message for v in SUPPORTED_VERSIONS)
    # The main process refuses before any worker starts, although the map itself is fine.
    (tmp_path / "config.json").write_text(json.dumps(tiny_dsa_config()))
    monkeypatch.delenv("SGLANG_INDEXCACHE_PATTERN", raising=False)
    monkeypatch.delenv("SGLANG_EXTERNAL_MODEL_PACKAGE", raising=False)
    server_args = SimpleNamespace(json_model_override_args='{"index_topk_pattern": "FSSSFSSS"}',
                                  model_path=str(tmp_path), trust_remote_code=False, revision=None,
                                  load_format="dummy")
    with pytest.raises(IncompatibleSGLang, match="use_dsa|use_nsa not found"):
        resolve_in_main_process(server_args)
    import os

    assert "SGLANG_INDEXCACHE_PATTERN" not in os.environ


def test_dsa_model_built_without_indexers_is_refused(patched, monkeypatch):  # noqa: F811
    """SGLang stops recognising the model as DSA (as it does for the name DeepseekV32ForCausalLM): no layer has an
    indexer, so no layer gets a role; serving it would silently run dense attention."""
    patched("FSSSFSSS")
    from sglang.srt.models import deepseek_v2

    predicate = next(name for name in ("is_deepseek_dsa", "is_deepseek_nsa") if hasattr(deepseek_v2, name))  # 0.5.14
    monkeypatch.setattr(deepseek_v2, predicate, lambda config: False)
    with pytest.raises(RuntimeError, match="built no DSA indexer"):
        build_model(tiny_dsa_config())


def test_arguments_come_from_the_signature():
    def forward_cuda(self, forward_batch, x, *, return_indices=True):
        pass

    batch_arg = Argument(forward_cuda, "forward_batch", "f")
    flag = Argument(forward_cuda, "return_indices", "f")
    assert batch_arg.get(("B", "X"), {}) == "B" and batch_arg.get(("X",), {"forward_batch": "K"}) == "K"
    assert flag.get(("B", "X"), {}) is True and flag.get((), {"return_indices": False}) is False
    with pytest.raises(IncompatibleSGLang, match="f lacks parameter layer_id"):
        Argument(forward_cuda, "layer_id", "f")


def test_shared_layer_reads_positional_arguments(patched):  # noqa: F811
    """Called positionally, as forward_cuda's signature orders them: the batch and return_indices are found."""
    patched("FSSSFSSS")
    layers, _ = fake_layers("FSSSFSSS")
    b = batch("a", 1)
    full = layers[0].self_attn.indexer(None, None, None, b, 0, True)
    assert torch.equal(layers[1].self_attn.indexer(None, None, None, b, 1, True), full)
    assert layers[1].self_attn.indexer(None, None, None, b, 1, False) is None


def test_sglang_dependency_is_bounded_to_the_tested_versions():
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["sglang"]
    assert extra == [f"sglang>={SUPPORTED_VERSIONS[0]},<={SUPPORTED_VERSIONS[-1]}"]


def test_one_of_takes_the_first_alternative_that_resolves_and_names_all_when_none_does():
    from sglang_indexcache.patches.targets import IncompatibleSGLang, OneOf, Target

    newest, oldest = Target("json", "JSONDecoder"), Target("json", "loads", ("s",))
    assert OneOf(Target("json", "NoSuchName"), oldest, newest).chosen() is oldest
    assert OneOf(newest, oldest).resolve() is __import__("json").JSONDecoder
    with pytest.raises(IncompatibleSGLang) as e:
        OneOf(Target("json", "Gone"), Target("no_such_module_here", "X")).resolve()
    assert "json.Gone" in str(e.value) and "no_such_module_here.X" in str(e.value)


def test_attribute_alternatives_return_the_name_in_use():
    from sglang_indexcache.patches.targets import ATTENTION_CLASS, SERVER_ARGS_CLASS, Attribute, IncompatibleSGLang

    assert Attribute(SERVER_ARGS_CLASS, ("no_such_field", "model_path")).resolve() == "model_path"
    assert Attribute(ATTENTION_CLASS, ("no_such_attribute", "indexer")).resolve() == "indexer"
    with pytest.raises(IncompatibleSGLang, match="no_such_attribute|neither"):
        Attribute(ATTENTION_CLASS, ("no_such_attribute", "neither")).resolve()
