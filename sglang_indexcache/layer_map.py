"""``LayerMap``: which DSA layers run their indexer (Full) and which reuse an earlier one's top-k (Shared)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from . import schedule
from .errors import MapError
from .maps import ShippedName, shipped_maps
from .model_config import architecture, require_dsa
from .safe_input import decode, load_yaml, read_map_bytes, short
from .schema import MAX_LAYERS, MapFile, MapSection, Provenance, to_map_error


@dataclass(frozen=True)
class LayerMap:
    """A concrete per-layer schedule: one ``F``/``S`` character per DSA layer.

    ``pattern[l] == "F"``: layer ``l`` runs its indexer and caches its top-k indices. ``"S"``: layer ``l``
    runs no indexer and uses the indices of ``source_layer(l)``, the nearest preceding Full layer.
    """

    pattern: str
    source: str = "<inline>"
    name: str | None = None
    architectures: tuple[str, ...] = ()
    provenance: Provenance | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Re-check here too: maps can also be built from HF configs and server overrides.
        try:
            MapSection(pattern=self.pattern)
        except ValidationError as e:
            raise _rekey(to_map_error(e, self.source), "map", "pattern") from None

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path_or_name: str | Path, num_layers: int | None = None) -> LayerMap:
        """Load a YAML map from a path or a shipped name such as ``"glm-5/searched-1of4"``.

        ``num_layers`` binds a frequency map that does not state its layer count, and is checked against
        maps that do.
        """
        if num_layers is not None and (type(num_layers) is not int or not 1 <= num_layers <= MAX_LAYERS):
            raise MapError(short(str(path_or_name)), "num_layers", f"{num_layers} is not a layer count",
                           f"give a whole number from 1 to {MAX_LAYERS}")
        return cls._from_spec(*_load_spec(path_or_name), num_layers)

    @classmethod
    def _from_spec(cls, spec: MapFile, source: str, name: str | None, num_layers: int | None) -> LayerMap:
        stated = spec.model.num_layers or spec.map.length
        if num_layers is not None and stated is not None and num_layers != stated:
            raise MapError(
                source,
                "model.num_layers",
                f"map has {stated} layers but the model has {num_layers}",
                "use a map made for this model's layer count",
            )
        pattern = spec.map.pattern_for(stated or num_layers)
        if pattern is None:
            raise MapError(
                source,
                "model.num_layers",
                "a freq map needs the layer count",
                "set model.num_layers in the file or pass the number of layers (--num-layers)",
            )
        return cls(pattern, source, name, tuple(spec.model.architectures), spec.provenance)

    @classmethod
    def for_model(cls, path_or_name: str | Path, config: Mapping[str, Any], config_source: str) -> LayerMap:
        """Load a map for a model's ``config.json`` contents, refusing a map made for another model.

        Checks run in the order a user fixes them: DSA model, architecture, layer count.
        """
        spec, source, name = _load_spec(path_or_name)
        require_dsa(dict(config), config_source)
        arch = architecture(dict(config))
        if arch not in spec.model.architectures:
            raise MapError(
                source,
                "model.architectures",
                f"map is for {', '.join(spec.model.architectures)} but {config_source} is {arch}",
                f"use a map made for {arch}",
            )
        return cls._from_spec(spec, source, name, config["num_hidden_layers"])

    @classmethod
    def from_hf_config(cls, mapping: Mapping[str, Any], source: str = "config") -> LayerMap:
        """The schedule a Hugging Face DSA config describes, with transformers' key priority.

        ``indexer_types`` > ``index_topk_pattern`` > ``index_topk_freq`` / ``index_skip_topk_offset``; a
        config with none of them is all Full. Patterns may be strings or lists of F/S/full/shared.
        """
        num_layers = mapping.get("num_hidden_layers")
        if type(num_layers) is not int or not 1 <= num_layers <= MAX_LAYERS:
            raise MapError(source, "num_hidden_layers", "missing or not a positive integer", "fix the config")
        if mapping.get("indexer_types") is not None:
            key, section = "indexer_types", _section(source, indexer_types=list(mapping["indexer_types"]))
        elif mapping.get("index_topk_pattern") is not None:
            key, section = "index_topk_pattern", _section(source, pattern=_as_chars(mapping["index_topk_pattern"]))
        else:
            key = "index_topk_freq"
            offset = mapping.get("index_skip_topk_offset")
            freq = mapping.get("index_topk_freq")
            section = _section(source, freq=1 if freq is None else freq, offset=offset)
        pattern = section.pattern_for(num_layers)
        if len(pattern) != num_layers:
            raise MapError(
                source, key, f"{len(pattern)} layers given but num_hidden_layers is {num_layers}",
                f"give exactly {num_layers} entries",
            )
        return cls(pattern, source)

    # -- queries --------------------------------------------------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.pattern)

    @cached_property
    def full_layers(self) -> tuple[int, ...]:
        return tuple(l for l, c in enumerate(self.pattern) if c == schedule.FULL)

    @cached_property
    def _sources(self) -> tuple[int, ...]:
        return tuple(schedule.source_layers(self.pattern))

    @property
    def ratio(self) -> float:
        """Fraction of layers that keep their indexer."""
        return len(self.full_layers) / self.num_layers

    def is_full(self, layer: int) -> bool:
        return self.pattern[layer] == schedule.FULL

    def source_layer(self, layer: int) -> int:
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} outside 0..{self.num_layers - 1}")
        return self._sources[layer]

    def served_layers(self) -> dict[int, tuple[int, ...]]:
        """Full layer -> the Shared layers that read its indices (one pass: maps can be long)."""
        served: dict[int, list[int]] = {f: [] for f in self.full_layers}
        for layer, source in enumerate(self._sources):
            if source != layer:
                served[source].append(layer)
        return {f: tuple(layers) for f, layers in served.items()}

    @property
    def indexer_types(self) -> list[str]:
        return schedule.indexer_types_from_pattern(self.pattern)

    def with_full(self, layers: Iterable[int]) -> LayerMap:
        """The same map with ``layers`` forced Full (e.g. where a pipeline stage starts and has no earlier layer)."""
        chars = list(self.pattern)
        for layer in layers:
            chars[layer] = schedule.FULL
        return replace(self, pattern="".join(chars))

    def to_yaml(self, architectures: Iterable[str] | None = None, method: str | None = None) -> str:
        """This map as a map file; ``LayerMap.load`` reads it back to an equal map."""
        provenance = self.provenance.model_dump(exclude_none=True) if self.provenance is not None else {}
        if method is not None or not provenance:
            provenance["method"] = method or "published"
        archs = list(architectures if architectures is not None else self.architectures)
        if not archs:
            raise ValueError("a map file names the architectures it is for: pass architectures=")
        doc = {"model": {"architectures": archs, "num_layers": self.num_layers}, "map": {"pattern": self.pattern},
               "provenance": provenance}
        return yaml.safe_dump(doc, sort_keys=False)

    def to_hf_overrides(self) -> dict[str, Any]:
        """Config keys that give this schedule in HF transformers, SGLang and vLLM alike.

        ``index_topk_pattern`` is the one key all three read with the same meaning.
        """
        return {"index_topk_pattern": self.pattern}

    @property
    def label(self) -> str:
        """How logs and replies name the map: its shipped name, else where it came from."""
        return self.name or self.source

    def __str__(self) -> str:
        return f"{self.label}: {self.pattern} ({len(self.full_layers)}/{self.num_layers} Full)"


def _load_spec(path_or_name: str | Path) -> tuple[MapFile, str, str | None]:
    text, source, name = _read(path_or_name)
    data = load_yaml(text, source)
    if not isinstance(data, dict):
        raise MapError(source, "(top level)", "not a mapping", "write the keys model:, map: and provenance:")
    try:
        return MapFile.model_validate(data), source, name
    except ValidationError as e:
        raise to_map_error(e, source) from None


def _read(path_or_name: str | Path) -> tuple[str, str, str | None]:
    ref = str(path_or_name)
    data = None if isinstance(path_or_name, ShippedName) else read_map_bytes(ref)
    if data is not None:
        return decode(data, ref), ref, None
    shipped = shipped_maps()
    name = ref.removesuffix(".yaml")
    if name in shipped:
        return shipped[name].read_text(), f"{name}.yaml", name
    raise MapError(short(ref), "(file)", "no such file or shipped map",
                   f"pass a YAML path or one of: {', '.join(shipped)}")


def _section(source: str, **rule: Any) -> MapSection:
    try:
        return MapSection(**{k: v for k, v in rule.items() if v is not None})
    except ValidationError as e:
        err = to_map_error(e, source)
        hf_key = {"pattern": "index_topk_pattern", "freq": "index_topk_freq", "offset": "index_skip_topk_offset"}
        raise _rekey(err, *(hf_key.get(err.key, err.key),)) from None


def _as_chars(pattern: Any) -> str:
    if isinstance(pattern, str):
        return pattern
    return "".join(schedule.INDEXER_TYPE_CHARS.get(p, p) if isinstance(p, str) else str(p) for p in pattern)


def _rekey(err: MapError, *key: str) -> MapError:
    return MapError(err.source, ".".join(key), err.problem, err.fix)
