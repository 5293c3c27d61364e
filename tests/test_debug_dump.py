"""The verification aid (SGLANG_INDEXCACHE_DEBUG_FILE) finds the KV pool where the installed SGLang keeps it:
on the ForwardBatch (0.5.10) or in the forward context (0.5.16+)."""

import dataclasses
import json
from types import SimpleNamespace

import pytest
import sglang_cpu

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")
torch = pytest.importorskip("torch")

from sglang_indexcache.patches.state import COUNTERS, reset  # noqa: E402
from sglang_indexcache.patches.worker.model_checks import _dump_debug  # noqa: E402

pytestmark = pytest.mark.sglang


class Pool:
    def __init__(self, written: set[int]):
        self.written = written

    def get_index_k_with_scale_buffer(self, layer_id):
        return torch.ones(4) if layer_id in self.written else torch.zeros(4)


def test_debug_dump_reads_the_pool_of_this_sglang(tmp_path, monkeypatch):
    from sglang.srt.model_executor.forward_batch_info import ForwardBatch

    reset()
    COUNTERS.record(0, ran=True)
    pool = Pool(written={0})
    if "token_to_kv_pool" in {f.name for f in dataclasses.fields(ForwardBatch)}:
        batch = SimpleNamespace(token_to_kv_pool=pool)
    else:
        from sglang.srt.model_executor import forward_context

        batch = SimpleNamespace()
        monkeypatch.setattr(forward_context, "_current", SimpleNamespace(attn_backend=SimpleNamespace(
            token_to_kv_pool=pool)))
    layers = [SimpleNamespace(self_attn=SimpleNamespace(dsa=True)) for _ in range(3)]
    layers[2].self_attn.dsa = False  # a layer without DSA attention has no index-key cache to look at
    model = SimpleNamespace(start_layer=0, end_layer=3, layers=layers)
    _dump_debug(str(tmp_path / "counters"), model, batch, "dsa")
    (dumped,) = tmp_path.glob("counters.*")
    state = json.loads(dumped.read_text())
    assert state["index_k_written"] == {"0": True, "1": False}
    assert state["calls"] == {"0": 1}
