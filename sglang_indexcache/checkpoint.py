"""What a checkpoint directory holds, read from its safetensors index or file headers (never the weights).

A checkpoint trained with a sharing schedule (GLM-5.2) ships indexer weights only for its Full layers; serving
it with a map that makes another layer Full would run that layer's indexer on uninitialised weights.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path

from .errors import MapError
from .layer_map import LayerMap

INDEX_FILE = "model.safetensors.index.json"
INDEXER_TENSOR = re.compile(r"^model\.layers\.(\d+)\.self_attn\.indexer\.")
MAX_HEADER_BYTES = 100 << 20  # a safetensors header names tensors only; more than this is not a header


def tensor_names(model_dir: str | Path) -> list[str] | None:
    """Every tensor name in the checkpoint at ``model_dir``; None where there is no local safetensors checkpoint."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        return None
    index = model_dir / INDEX_FILE
    if index.is_file():
        try:
            return list(json.loads(index.read_text())["weight_map"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise MapError(str(index), "weight_map", f"cannot read it ({e})", "fix or remove the index file") from None
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    return [name for file in files for name in _header(file) if name != "__metadata__"]


def _header(file: Path) -> dict:
    try:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            if size > MAX_HEADER_BYTES:
                raise ValueError(f"header of {size} bytes")
            return json.loads(f.read(size))
    except (OSError, ValueError, struct.error) as e:
        raise MapError(str(file), "(header)", f"not a readable safetensors file ({e})",
                       "check the checkpoint files") from None


def layers_with_indexer(names: list[str]) -> set[int]:
    return {int(m.group(1)) for m in map(INDEXER_TENSOR.match, names) if m}


def check_indexer_weights(layer_map: LayerMap, model_dir: str | Path) -> None:
    """Refuse a map whose Full layers include one whose indexer weights the checkpoint does not ship.

    Checkpoints that carry no indexer tensors under the Hugging Face names at all are not judged (nothing to
    compare with), nor are directories without safetensors files.
    """
    names = tensor_names(model_dir)
    if names is None:
        return
    present = layers_with_indexer(names)
    if not present:
        return
    missing = [layer for layer in layer_map.full_layers if layer not in present]
    if missing:
        raise MapError(
            layer_map.label, "Full layers",
            f"layers {missing} would run their indexer but {model_dir} ships no indexer weights for them "
            f"(it has them for layers {sorted(present)})",
            "serve the checkpoint's own schedule (request no map) or a map whose Full layers have indexer weights",
        )
