"""Reading a model's ``config.json`` and checking it is a DSA model, before anything heavy loads."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import MapError


def load_model_config(path: str | Path) -> tuple[dict[str, Any], str]:
    """Return ``(config, source)`` for a ``config.json`` file or a model directory holding one."""
    path = Path(path)
    file = path / "config.json" if path.is_dir() else path
    try:
        config = json.loads(file.read_text())
    except FileNotFoundError:
        raise MapError(str(file), "(file)", "no such file", "pass a model directory or its config.json") from None
    except (OSError, UnicodeDecodeError) as e:
        raise MapError(str(file), "(file)", f"cannot read it ({e})", "check the path and its permissions") from None
    except json.JSONDecodeError as e:
        raise MapError(str(file), "(file)", f"invalid JSON at line {e.lineno} ({e.msg})", "fix the JSON") from None
    if not isinstance(config, dict):
        raise MapError(str(file), "(file)", "top level is not a JSON object", "pass a Hugging Face config.json")
    return config, str(file)


def require_dsa(config: dict[str, Any], source: str) -> None:
    """Refuse configs without DeepSeek Sparse Attention: IndexCache has no indexer to skip there."""
    if config.get("index_topk") is None:
        raise MapError(
            source,
            "index_topk",
            "missing, so this is not a DeepSeek Sparse Attention (DSA) model",
            "use a DSA model such as DeepSeek-V3.2 or GLM-5, or run it without a layer map",
        )
    if not isinstance(config.get("num_hidden_layers"), int) or config["num_hidden_layers"] < 1:
        raise MapError(source, "num_hidden_layers", "missing or not a positive integer", "fix the model's config.json")


def architecture(config: dict[str, Any]) -> str | None:
    archs = config.get("architectures") or []
    return archs[0] if archs else None
