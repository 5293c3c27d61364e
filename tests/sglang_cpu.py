"""Build SGLang's DeepSeek sparse-attention (DSA, "NSA" in SGLang) layers on a CPU-only machine.

SGLang 0.5.10.post1 never runs without an accelerator, but its model classes can be constructed on the meta
device, which is enough to check per-layer state such as the IndexCache flags ``skip_topk`` and
``next_skip_topk``. Three things stand in the way and are handled here:

- imports of CUDA-only packages (``sgl_kernel``, and a ``torchvision`` whose PyPI build is CUDA-linked),
  answered by stub modules;
- the process-wide state a scheduler process sets up before building a model (global server args, parallel
  groups), created once per process with a single-rank gloo group;
- rotary-embedding construction, which asks for an accelerator and precomputes its cos/sin table, redirected
  to the meta device while layers are built.
"""

from __future__ import annotations

import contextlib
import copy
import importlib.abc
import importlib.machinery
import itertools
import json
import os
import sys
import tempfile
import types
from collections.abc import Iterable, Iterator
from unittest import mock

import torch

_TINY_DSA_CONFIG = {
    "architectures": ["DeepseekV3ForCausalLM"],
    "model_type": "deepseek_v3",
    "torch_dtype": "bfloat16",
    "vocab_size": 129280,
    "hidden_size": 2048,
    "intermediate_size": 4096,
    "moe_intermediate_size": 512,
    "num_hidden_layers": 8,
    "num_nextn_predict_layers": 1,
    "num_attention_heads": 16,
    "num_key_value_heads": 16,
    "q_lora_rank": 1536,
    "kv_lora_rank": 512,
    "qk_rope_head_dim": 64,
    "qk_nope_head_dim": 128,
    "v_head_dim": 128,
    "n_routed_experts": 16,
    "n_shared_experts": 1,
    "num_experts_per_tok": 4,
    "n_group": 8,
    "topk_group": 4,
    "topk_method": "noaux_tc",
    "scoring_func": "sigmoid",
    "norm_topk_prob": True,
    "routed_scaling_factor": 2.5,
    "first_k_dense_replace": 1,
    "moe_layer_freq": 1,
    "hidden_act": "silu",
    "rms_norm_eps": 1e-6,
    "max_position_embeddings": 163840,
    "rope_theta": 10000,
    "rope_scaling": {
        "type": "yarn",
        "factor": 40.0,
        "original_max_position_embeddings": 4096,
        "beta_fast": 32.0,
        "beta_slow": 1.0,
        "mscale": 1.0,
        "mscale_all_dim": 1.0,
    },
    "index_n_heads": 64,
    "index_head_dim": 128,
    "index_topk": 2048,
    "tie_word_embeddings": False,
    "bos_token_id": 0,
    "eos_token_id": 1,
}


def tiny_dsa_config(num_layers: int = 8, **overrides) -> dict:
    """A small DeepSeek-V3.2-architecture HF config (``DeepseekV3ForCausalLM`` with DSA indexer fields).

    The DSA dimensions (``index_topk`` 2048, ``index_head_dim`` 128, ``kv_lora_rank`` 512, ``qk_rope_head_dim`` 64)
    are the ones SGLang's kernels accept; only widths and counts that the kernels do not constrain are shrunk.
    """
    config = copy.deepcopy(_TINY_DSA_CONFIG)
    config["num_hidden_layers"] = num_layers
    config.update(overrides)
    return config


# --- import stubs -----------------------------------------------------------------------------------------------


class _Placeholder:
    """Any attribute of a stubbed module: attribute chains resolve (transformers reads
    ``torchvision.transforms.InterpolationMode.NEAREST_EXACT`` at import), calls fail loudly."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self._name}.{attr}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is a CPU test stub and cannot be called")

    def __repr__(self) -> str:
        return f"<stub {self._name}>"


class _StubModule(types.ModuleType):
    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder(f"{self.__name__}.{attr}")


class _StubFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers for the stubbed top-level names and every submodule below them."""

    # SGLang's quantization utils fall back to their own scalar types only when this import fails; a stub
    # would be taken for the real table and break at import.
    MISSING = frozenset({"sgl_kernel.scalar_type"})

    def __init__(self, versions: dict[str, str | None]):
        self.versions = versions

    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] not in self.versions:
            return None
        if fullname in self.MISSING:
            raise ImportError(f"{fullname} is deliberately absent from the CPU test stubs", name=fullname)
        return importlib.machinery.ModuleSpec(fullname, self, is_package=True)

    def create_module(self, spec):
        module = _StubModule(spec.name)
        if self.versions.get(spec.name):
            module.__version__ = self.versions[spec.name]
        return module

    def exec_module(self, module):
        pass


def install_import_stubs() -> None:
    """Stub the CUDA-only imports SGLang makes unconditionally; call before anything imports ``sglang``.

    ``sgl_kernel`` (SGLang's CUDA extension) is always stubbed, and so is ``torchvision``, which SGLang needs only
    for ``decode_jpeg`` and whose PyPI build for CPU torch is CUDA-linked and fails to load. They carry the
    versions SGLang 0.5.10.post1 is built against (transformers parses the version of any torchvision it finds).
    ``IPython`` (``sglang/utils.py`` needs only ``IPython.display``) is stubbed only where it is not installed.
    Idempotent.
    """
    if any(isinstance(finder, _StubFinder) for finder in sys.meta_path):
        return
    versions = {"sgl_kernel": "0.4.1", "torchvision": "0.24.1"}
    if importlib.machinery.PathFinder.find_spec("IPython") is None:
        versions["IPython"] = None
    sys.meta_path.insert(0, _StubFinder(versions))
    _forget_missing_torchvision()


def _forget_missing_torchvision() -> None:
    """Drop transformers' memoised "torchvision is not installed", if it was asked before the stubs existed.

    Otherwise transformers hands out a placeholder ``AutoImageProcessor`` and SGLang's config modules fail at
    import when they register their image processors with it.
    """
    import_utils = sys.modules.get("transformers.utils.import_utils")
    for name in ("is_torchvision_available", "is_torchvision_v2_available", "is_torchvision_greater_or_equal"):
        cached = getattr(import_utils, name, None)
        if hasattr(cached, "cache_clear"):
            cached.cache_clear()


# --- process-wide SGLang state -----------------------------------------------------------------------------------

_workdir: tempfile.TemporaryDirectory | None = None
_model_dirs = itertools.count()
_server_args = None


def _new_model_dir(hf_config: dict) -> str:
    """Write ``hf_config`` to a directory never used before in this process.

    SGLang memoises ``get_config`` per (path, overrides) and edits the returned config in place (the draft
    model's architecture rename, ``rope_scaling["rope_type"]``), so every build gets its own path and object.
    """
    global _workdir
    if _workdir is None:
        _workdir = tempfile.TemporaryDirectory(prefix="sglang-cpu-")
    path = os.path.join(_workdir.name, f"model-{next(_model_dirs)}")
    os.mkdir(path)
    with open(os.path.join(path, "config.json"), "w") as f:
        json.dump(hf_config, f)
    return path


def launch_server_args(**kwargs):
    """``ServerArgs(**kwargs)`` resolved as a launch resolves them, on a faked Hopper GPU.

    SGLang up to 0.5.18 resolves in the dataclass's ``__post_init__``; from 0.5.20 construction only records the
    input and ``resolve_once()`` resolves it (reading the GPU), so both run under the fake.
    """
    from sglang.srt.server_args import ServerArgs

    with mock.patch.object(torch.cuda, "get_device_capability", lambda *args, **kwargs: (9, 0)):
        server_args = ServerArgs(**kwargs)
        resolve = getattr(server_args, "resolve_once", None)
        if resolve is not None:
            resolve()
    return server_args


def sglang_dist_env():
    """Set up, once per process, what SGLang's scheduler sets up before building a model; return the ServerArgs.

    The server args are those of a launch on one Hopper GPU with :func:`tiny_dsa_config`, so SGLang's own DSA
    defaults apply (``attention_backend="nsa"``, page size 64, bf16 KV); see :func:`launch_server_args`.
    Parallel state is a single-rank gloo group with tensor, pipeline, expert and attention-DP sizes 1.
    """
    global _server_args
    if _server_args is not None:
        return _server_args
    install_import_stubs()
    from sglang.srt.distributed import parallel_state

    with mock.patch.dict(os.environ):  # keeps the SGLANG_* variables resolution exports out of the test process
        server_args = launch_server_args(model_path=_new_model_dir(tiny_dsa_config()), device="cuda",
                                         load_format="dummy")
    _publish(server_args)
    parallel_state.init_distributed_environment(
        world_size=1,
        rank=0,
        local_rank=0,
        distributed_init_method=f"file://{os.path.join(_workdir.name, 'dist-store')}",
        backend="gloo",
    )
    _initialize_parallel_groups(server_args)
    _server_args = server_args
    return server_args


def _publish(server_args) -> None:
    """Make ``server_args`` this process's, as a scheduler process does. From 0.5.20 the runtime context also
    needs the process's placement (rank 0 of one, GPU 0) before the parallel groups can be built."""
    try:
        from sglang.srt.runtime_context import SpawnRanks, publish
    except ImportError:
        from sglang.srt.server_args import set_global_server_args_for_scheduler

        set_global_server_args_for_scheduler(server_args)
        return
    publish(server_args, role="scheduler", ranks=SpawnRanks(world_rank=0, dp_rank=None, gpu_id=0))


def _initialize_parallel_groups(server_args) -> None:
    """Model-parallel groups and attention-DP state of sizes 1. Up to 0.5.18 the sizes are arguments; from
    0.5.20 they are read from the published server args (and the groups take the backend)."""
    import inspect

    from sglang.srt.distributed import parallel_state
    from sglang.srt.layers.dp_attention import initialize_dp_attention

    if "tensor_model_parallel_size" in inspect.signature(parallel_state.initialize_model_parallel).parameters:
        from sglang.srt.configs.model_config import ModelConfig

        parallel_state.initialize_model_parallel(tensor_model_parallel_size=1, pipeline_model_parallel_size=1)
        initialize_dp_attention(server_args, ModelConfig.from_server_args(server_args))
    else:
        parallel_state.initialize_model_parallel(backend="gloo")
        initialize_dp_attention(server_args)


# --- building on the meta device ---------------------------------------------------------------------------------


def _model_config(hf_config: dict, overrides: dict | None, is_draft_model: bool):
    """SGLang's ModelConfig for ``hf_config``, with ``overrides`` applied as ``--json-model-override-args``."""
    from sglang.srt.configs.model_config import ModelConfig

    return ModelConfig(
        model_path=_new_model_dir(hf_config),
        model_override_args=json.dumps(overrides or {}),
        is_draft_model=is_draft_model,
    )


@contextlib.contextmanager
def _on_meta_device(dtype: torch.dtype) -> Iterator[None]:
    """Construct modules on the meta device with ``dtype`` as the default, as SGLang's loader does.

    Rotary embeddings place their cos/sin table on ``get_device()``, which raises without an accelerator;
    asking for "meta" also skips computing the table. ``_is_cpu`` keeps the rope base class off its fallback
    for other non-CUDA platforms, which imports vLLM.
    """
    from sglang.srt.layers.rotary_embedding import base, rope_variant

    previous_dtype = torch.get_default_dtype()
    with (
        mock.patch.object(rope_variant, "get_device", lambda *args: "meta"),
        mock.patch.object(base, "_is_cpu", True),
        torch.device("meta"),
    ):
        torch.set_default_dtype(dtype)
        try:
            yield
        finally:
            torch.set_default_dtype(previous_dtype)


def _layer_stack():
    """From 0.5.23 decoder layers declare their stages to an open layer stack, which the model's ``make_layers``
    opens; layers built on their own need one opened for them."""
    try:
        from sglang.srt.layers.layer_boundary.factories import layer_stack
    except ImportError:
        return contextlib.nullcontext()
    return layer_stack()


def build_decoder_layers(
    hf_config: dict, layer_ids: Iterable[int], is_nextn: bool = False, overrides: dict | None = None
) -> list:
    """SGLang's ``DeepseekV2DecoderLayer`` for each of ``layer_ids``, built on the meta device.

    ``overrides`` are applied like ``--json-model-override-args``. With ``is_nextn`` the config is loaded as
    SGLang loads a draft (MTP) model's and the layers are built the way ``deepseek_nextn`` builds its decoder.
    """
    sglang_dist_env()
    from sglang.srt.models.deepseek_v2 import DeepseekV2DecoderLayer

    model_config = _model_config(hf_config, overrides, is_draft_model=is_nextn)
    with _on_meta_device(model_config.dtype), _layer_stack():
        return [
            DeepseekV2DecoderLayer(
                model_config.hf_config,
                layer_id,
                is_nextn=is_nextn,
                prefix="model.decoder" if is_nextn else f"model.layers.{layer_id}",
            )
            for layer_id in layer_ids
        ]


def build_model(hf_config: dict, overrides: dict | None = None) -> torch.nn.Module:
    """The whole model SGLang would build for ``hf_config`` (class resolved by SGLang's model registry), on the
    meta device. ``overrides`` are applied like ``--json-model-override-args``."""
    sglang_dist_env()
    from sglang.srt.model_loader.utils import get_model_architecture

    model_config = _model_config(hf_config, overrides, is_draft_model=False)
    model_cls, _ = get_model_architecture(model_config)
    with _on_meta_device(model_config.dtype):
        return model_cls(config=model_config.hf_config, quant_config=None)


@contextlib.contextmanager
def dispatching_as_on_cuda(monkeypatch) -> Iterator[None]:
    """Ops built inside dispatch to ``forward_cuda`` as on a CUDA machine. SGLang's ``MultiPlatformOp`` (to
    0.5.17) binds the platform's forward at construction, so the flag is set only while building; its
    ``BaseFusedOp`` (0.5.23) resolves it at the first call, so the platform stays CUDA for the test."""
    try:
        fused_op = importlib.import_module("sglang.kernels.fused_op")
    except ImportError:
        fused_op = None
    if fused_op is not None and hasattr(fused_op, "_platform_key"):
        monkeypatch.setattr(fused_op, "_platform_key", lambda: "cuda")
        yield
        return
    monkeypatch.setattr("sglang.srt.layers.utils.multi_platform._is_cuda", True)
    try:
        yield
    finally:
        monkeypatch.setattr("sglang.srt.layers.utils.multi_platform._is_cuda", False)
