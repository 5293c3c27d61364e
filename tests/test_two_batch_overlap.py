"""Two-batch overlap through SGLang's own executor and the layer's own ``op_prepare``/``op_core`` split.

SGLang 0.5.10.post1 runs the MoE layers of a two-batch-overlap (TBO) batch as two micro-batches whose
operations interleave (``batch_overlap.operations.execute_overlapped_operations``). Its ``op_prepare`` calls
``forward_prepare`` without ``prev_topk_indices`` and ``op_core`` drops the returned top-k, so with native
sharing every Shared layer falls back to its own indexer (reading an index-key cache it never wrote outside
TBO). With IndexCache each micro-batch carries its own Full-layer indices on its own ForwardBatch.

No GPU kernel runs here: the attention body between ``op_prepare`` and ``op_core`` is a stand-in that keeps
exactly the index hand-off of SGLang's MLA path (forward_mla.py: the ``not self.skip_topk or
prev_topk_indices is None`` gate around ``self.indexer(...)``; forward_absorb_core returns the top-k when
``next_skip_topk``), and the indexer's kernels are a fake that returns a tensor unique to (layer, batch).
"""

import contextlib
from types import MethodType, SimpleNamespace

import pytest
import sglang_cpu
import torch

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_cpu import build_decoder_layers, tiny_dsa_config  # noqa: E402

from sglang_indexcache import LayerMap  # noqa: E402
from sglang_indexcache.names import ENV_PATTERN  # noqa: E402
from sglang_indexcache.patches import apply_model_patches, revert  # noqa: E402

pytestmark = pytest.mark.sglang
PATTERN = "FSSSFSSF"


class Kernel:
    def __init__(self, layer, calls):
        self.layer, self.calls = layer, calls

    def __call__(self, x, q_lora, positions, forward_batch, layer_id, return_indices=True):
        self.calls.append((self.layer, forward_batch.name))
        return torch.full((2, 4), 100 * self.layer + forward_batch.id)


def mla_stand_in(attn, seen):
    """``forward_prepare``/``forward_core`` keeping only SGLang's MLA index hand-off (see module docstring)."""

    def forward_prepare(self, positions, hidden_states, forward_batch, zero_allocator, layer_scatter_modes=None,
                        llama_4_scaling=None, prev_topk_indices=None):
        seen.append((self.layer_id, forward_batch.name, prev_topk_indices))
        if not self.skip_topk or prev_topk_indices is None:
            topk = self.indexer(x=hidden_states, q_lora=None, positions=positions, forward_batch=forward_batch,
                                layer_id=self.layer_id)
        else:
            topk = prev_topk_indices
        return hidden_states, topk

    def forward_core(self, state):
        hidden_states, topk = state
        return hidden_states + 0, (topk if self.next_skip_topk else None)

    attn.forward_prepare = MethodType(forward_prepare, attn)
    attn.forward_core = MethodType(forward_core, attn)


def micro_batch(name, id_):
    return SimpleNamespace(name=name, id=id_, global_dp_buffer_len=None, tbo_padded_len=None,
                           global_num_tokens_cpu=None, dp_padding_mode=SimpleNamespace(is_max_len=lambda: False),
                           moe_num_token_non_padded=None)  # read by the executor from 0.5.23


def run_tbo(layers, outputs):
    """Each layer's real op_prepare/op_core for two micro-batches, interleaved layer by layer."""
    from sglang.srt.batch_overlap.operations import YieldOperation, execute_overlapped_operations

    def comm_prepare(state, hidden_states, forward_batch, positions, zero_allocator):
        state.hidden_states_after_comm_pre_attn = hidden_states
        if state.get("forward_batch") is None:  # set once per micro-batch, as SGLang's first op does
            state.update({"forward_batch": forward_batch, "positions": positions, "zero_allocator": zero_allocator})

    def collect(state):
        out = state.pop("hidden_states_after_attn")
        return {"hidden_states": out, "forward_batch": state.forward_batch, "positions": state.positions,
                "zero_allocator": state.zero_allocator}

    ops = []
    for layer in layers:
        ops += [comm_prepare, layer.self_attn.op_prepare, layer.self_attn.op_core, collect, YieldOperation()]
    inputs = [{"hidden_states": torch.zeros(2, 4), "forward_batch": fb, "positions": None, "zero_allocator": None}
              for fb in outputs]
    with model_runner_forward_context():
        return execute_overlapped_operations(inputs, [ops, ops], [0, 0])


def model_runner_forward_context():
    """From 0.5.17 the executor reads the forward context the model runner opens around each forward (here one
    whose attention backend is no TBO dispatcher, so both micro-batches run in it)."""
    try:
        from sglang.srt.model_executor.forward_context import ForwardContext, forward_context
    except ImportError:
        return contextlib.nullcontext()
    return forward_context(ForwardContext(attn_backend=None))


def build(pattern, overrides=None):
    layers = build_decoder_layers(tiny_dsa_config(num_layers=len(pattern)), range(len(pattern)), overrides=overrides)
    calls, seen = [], []
    for i, layer in enumerate(layers):
        if layer.self_attn.indexer is None:
            pytest.skip("this SGLang builds no indexer for natively Shared layers (0.5.18+); it refuses two-batch "
                        "overlap with sharing at launch (0.5.14+)")
        layer.self_attn.indexer._forward_method = Kernel(i, calls)
        mla_stand_in(layer.self_attn, seen)
    return layers, calls, seen


def test_native_sharing_drops_indices_in_tbo():
    layers, calls, seen = build(PATTERN, overrides={"index_topk_pattern": PATTERN})
    assert "".join("S" if layer.self_attn.skip_topk else "F" for layer in layers) == PATTERN
    run_tbo(layers, [micro_batch("a", 1), micro_batch("b", 2)])
    assert all(prev is None for _, _, prev in seen)  # op_prepare never passes the previous layer's top-k
    # So every Shared layer ran its own indexer, for both micro-batches.
    assert sorted(calls) == sorted((l, mb) for l in range(len(PATTERN)) for mb in "ab")


def test_indexcache_carries_each_micro_batchs_indices(monkeypatch):
    monkeypatch.setenv(ENV_PATTERN, PATTERN)
    apply_model_patches()
    try:
        layers, calls, seen = build(PATTERN)
        a, b = micro_batch("a", 1), micro_batch("b", 2)
        seen_topk = {}
        original = [layer.self_attn.indexer.forward for layer in layers]
        for layer, fwd in zip(layers, original):
            def spy(*args, _fwd=fwd, _layer=layer.self_attn.layer_id, **kwargs):
                out = _fwd(*args, **kwargs)
                seen_topk[(_layer, kwargs["forward_batch"].name)] = int(out[0, 0])
                return out
            layer.self_attn.indexer.forward = spy
        run_tbo(layers, [a, b])
    finally:
        revert()
    full = [l for l, c in enumerate(PATTERN) if c == "F"]
    assert sorted(calls) == sorted((l, mb) for l in full for mb in "ab")  # Shared layers ran no indexer
    m = LayerMap(PATTERN)
    for (layer, mb), value in seen_topk.items():
        assert value == 100 * m.source_layer(layer) + {"a": 1, "b": 2}[mb]  # own micro-batch, right source
    assert len(seen_topk) == 2 * len(PATTERN)
