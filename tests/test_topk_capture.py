"""Capture mode of the SGLang patch against the real SGLang (layers on the meta device)."""

from types import SimpleNamespace

import pytest
import sglang_cpu
import torch

sglang_cpu.install_import_stubs()
pytest.importorskip("sglang")

from sglang_cpu import build_decoder_layers, dispatching_as_on_cuda, tiny_dsa_config  # noqa: E402

from sglang_indexcache.analysis.capture_files import read_capture  # noqa: E402
from sglang_indexcache.names import CAPTURE_RID_PREFIX as RID_PREFIX  # noqa: E402
from sglang_indexcache.names import (  # noqa: E402  # noqa: E402
    ENV_CAPTURE_DIR,
    ENV_CAPTURE_MAX_BYTES,
    ENV_CAPTURE_MAX_TOKENS,
    ENV_PATTERN,
    ENV_SOURCE,
)
from sglang_indexcache.patches import REGISTRY, apply_model_patches, revert  # noqa: E402

pytestmark = pytest.mark.sglang
K = 4
FLAGGED = RID_PREFIX + "a"


def kernel_output(layer, positions):
    """What a fake indexer kernel returns: rows unique to (layer, position)."""
    return (1000 * layer + 10 * positions[:, None] + torch.arange(K)).int()


@pytest.fixture
def capture(monkeypatch, tmp_path):
    """Patches applied (with capture mode on unless ``on=False``) over a fake indexer kernel and model body."""
    from sglang.srt.layers.attention.nsa.nsa_indexer import Indexer
    from sglang.srt.models.deepseek_v2 import DeepseekV2ForCausalLM

    calls = []

    def fake_kernel(self, x, q_lora, positions, forward_batch, layer_id, return_indices=True):
        calls.append(layer_id)
        return kernel_output(layer_id, positions) if return_indices else None

    def fake_model_forward(self, input_ids, positions, forward_batch, *args, **kwargs):
        return [layer.self_attn.indexer(x=None, q_lora=None, positions=positions, forward_batch=forward_batch,
                                        layer_id=i) for i, layer in enumerate(self.layers)]

    monkeypatch.setattr(Indexer, "forward_cuda", fake_kernel)
    monkeypatch.setattr(DeepseekV2ForCausalLM, "forward", fake_model_forward)

    def apply(pattern="FFFF", on=True, **env):
        monkeypatch.setenv(ENV_PATTERN, pattern)
        monkeypatch.setenv(ENV_SOURCE, "test-map")
        if on:
            monkeypatch.setenv(ENV_CAPTURE_DIR, str(tmp_path / "captures"))
        for key, value in env.items():
            monkeypatch.setenv(key, str(value))
        apply_model_patches()
        with dispatching_as_on_cuda(monkeypatch):
            layers = build_decoder_layers(tiny_dsa_config(num_layers=len(pattern)), range(len(pattern)))
        model = SimpleNamespace(layers=layers)
        return lambda fb: DeepseekV2ForCausalLM.forward(model, None, fb.positions, fb)

    yield SimpleNamespace(apply=apply, dir=tmp_path / "captures", calls=calls)
    revert()


def batch(rids, lens, extend=True, start=0):
    positions = torch.cat([torch.arange(start, start + n) for n in lens])
    return SimpleNamespace(rids=rids, extend_seq_lens_cpu=lens, positions=positions,
                           forward_mode=SimpleNamespace(is_extend=lambda: extend))


def test_off_by_default_nothing_is_wrapped(capture):
    from sglang.srt.layers.attention.nsa.nsa_indexer import Indexer
    from sglang.srt.models.deepseek_v2 import DeepseekV2ForCausalLM

    before = (Indexer.__dict__["forward_cuda"], DeepseekV2ForCausalLM.__dict__["forward"])
    forward = capture.apply(on=False)
    assert (Indexer.__dict__["forward_cuda"], DeepseekV2ForCausalLM.__dict__["forward"]) == before
    assert not any(patch.startswith("topk_capture") for _, patch in REGISTRY.applied())
    forward(batch([FLAGGED], [3]))
    assert not capture.dir.exists()


def test_flagged_request_is_written_and_others_untouched(capture):
    forward = capture.apply("FSFF")  # a Shared layer runs no indexer, so it has nothing to capture
    fb = batch(["plain", FLAGGED, "other"], [2, 3, 4])
    outputs = forward(fb)
    plain_outputs = forward(batch(["plain", "b", "other"], [2, 3, 4]))
    assert all(torch.equal(a, b) for a, b in zip(outputs, plain_outputs))  # results unchanged by capturing
    got = read_capture(capture.dir, FLAGGED)
    assert got["layers"] == [0, 2, 3] and got["positions"].tolist() == [0, 1, 2] and not got["truncated"]
    want = torch.stack([kernel_output(layer, torch.arange(3)) for layer in (0, 2, 3)])
    # Relabelled onto 0..n-1, but the same token keeps one label across layers and positions.
    assert got["num_tokens"] == len(torch.unique(want))
    assert torch.equal(torch.unique(want, return_inverse=True)[1].int(), got["topk"])
    assert sorted(p.name for p in capture.dir.iterdir()) == [FLAGGED]  # nothing for the unflagged requests


def test_chunked_prefill_and_decode(capture):
    forward = capture.apply()
    forward(batch([FLAGGED], [3]))
    forward(batch([FLAGGED], [2], start=3))            # the next chunk of the same prompt
    forward(batch([FLAGGED], [1], extend=False, start=5))  # decode: not captured
    got = read_capture(capture.dir, FLAGGED)
    assert got["positions"].tolist() == [0, 1, 2, 3, 4]
    assert got["topk"].shape == (4, 5, K)


def test_size_bounds(capture):
    forward = capture.apply(**{ENV_CAPTURE_MAX_TOKENS: 4, ENV_CAPTURE_MAX_BYTES: 4 * 4 * 4 * 4 + 1})
    forward(batch([FLAGGED], [3]))
    forward(batch([FLAGGED], [3], start=3))  # only one more position fits the per-request bound
    got = read_capture(capture.dir, FLAGGED)
    assert got["positions"].tolist() == [0, 1, 2, 3] and got["truncated"]
    forward(batch([RID_PREFIX + "b"], [3]))  # the process's byte budget is spent
    assert read_capture(capture.dir, RID_PREFIX + "b") is None


def test_unsafe_rid_stays_inside_the_directory(capture):
    forward = capture.apply()
    rid = RID_PREFIX + "../../escape"
    forward(batch([rid], [2]))
    assert read_capture(capture.dir, rid)["positions"].tolist() == [0, 1]
    assert [p.parent for p in capture.dir.rglob("*.pt")] == [capture.dir / (RID_PREFIX + ".._.._escape")]
