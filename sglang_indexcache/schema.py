"""The YAML layer-map file format, validated by pydantic.

Every rule lives here as a field constraint or validator; ``to_map_error`` turns pydantic's first error
into a one-line :class:`MapError` naming the file, the dotted key and the fix.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .errors import MapError
from .names import MAP_KEY
from .schedule import DEFAULT_OFFSET, FULL, INDEXER_TYPE_CHARS, SHARED, pattern_from_freq, pattern_from_indexer_types

MAP_KEYS = ("pattern", "freq", "indexer_types")
# No DSA model has more than a few hundred layers; the bound keeps `show --num-layers 10**12` from building a
# terabyte pattern.
MAX_LAYERS = 100_000
MAX_REF_CHARS = 4096  # a map name or path; longer is refused before any file system call


def _fail(problem: str, fix: str, loc: tuple[str, ...] = ()) -> PydanticCustomError:
    return PydanticCustomError("map_rule", problem, {"fix": fix, "loc": loc})


class _Strict(BaseModel):
    """Strict types everywhere a map arrives: "4" is not 4, true is not 1, [4] is not 4, null is not absent."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    @model_validator(mode="before")
    @classmethod
    def _no_nulls(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for key, value in data.items():
                if value is None and key in cls.model_fields:
                    raise _fail("is null", "give a value or leave the key out", (str(key),))
        return data


class ModelSection(_Strict):
    architectures: list[str] = Field(min_length=1)
    num_layers: int | None = Field(default=None, ge=1, le=MAX_LAYERS)


class MapSection(_Strict):
    pattern: str | None = None
    freq: int | None = None
    offset: int | None = None
    indexer_types: list[str] | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_chars(cls, pattern: str) -> str:
        if not pattern:
            raise _fail("pattern is empty", "give one F or S per DSA layer")
        _check_length(len(pattern))
        bad = next((i for i, c in enumerate(pattern) if c not in (FULL, SHARED)), None)
        if bad is not None:
            raise _fail(
                f"character {pattern[bad]!r} at layer {bad} is not F or S",
                "use only F (Full: runs its indexer) and S (Shared: reuses the previous F layer's top-k)",
            )
        if pattern[0] == SHARED:
            raise _fail("layer 0 is S but has no earlier F layer to reuse", "make the first character F")
        return pattern

    @field_validator("indexer_types")
    @classmethod
    def _indexer_type_values(cls, types: list[str]) -> list[str]:
        if not types:
            raise _fail("indexer_types is empty", "give one of full/shared per DSA layer")
        _check_length(len(types))
        bad = next((i for i, t in enumerate(types) if t not in INDEXER_TYPE_CHARS), None)
        if bad is not None:
            raise _fail(f"value {types[bad]!r} at layer {bad} is not full or shared", "use only full and shared")
        if types[0] == "shared":
            raise _fail("layer 0 is shared but has no earlier full layer to reuse", "make the first entry full")
        return types

    @field_validator("freq")
    @classmethod
    def _freq_positive(cls, freq: int) -> int:
        if freq < 1:
            raise _fail(f"freq is {freq}", "use an integer >= 1 (1 keeps every indexer, 4 keeps about a quarter)")
        return freq

    @field_validator("offset")
    @classmethod
    def _offset_positive(cls, offset: int) -> int:
        if offset < 1:
            raise _fail(f"offset is {offset}, which makes layer 0 Shared", "use an integer >= 1 (default 2)")
        return offset

    @model_validator(mode="after")
    def _exactly_one_rule(self) -> MapSection:
        if self.offset is not None and self.freq is None:
            raise _fail("offset without freq", "remove map.offset or use map.freq")
        given = [k for k in MAP_KEYS if getattr(self, k) is not None]
        if len(given) != 1:
            problem = f"several schedules given ({', '.join(given)})" if given else "no schedule given"
            raise _fail(problem, "give exactly one of map.pattern, map.freq (+ map.offset) or map.indexer_types")
        return self

    def pattern_for(self, num_layers: int | None) -> str | None:
        """The F/S string, or None for a frequency rule when the layer count is unknown."""
        if self.pattern is not None:
            return self.pattern
        if self.indexer_types is not None:
            return pattern_from_indexer_types(self.indexer_types)
        if num_layers is None:
            return None
        return pattern_from_freq(num_layers, self.freq, DEFAULT_OFFSET if self.offset is None else self.offset)

    @property
    def length(self) -> int | None:
        rule = self.pattern if self.pattern is not None else self.indexer_types
        return None if rule is None else len(rule)


def _check_length(n: int) -> None:
    if n > MAX_LAYERS:
        raise _fail(f"{n} layers given, more than any model has", f"give at most {MAX_LAYERS} entries")


class MapRequest(_Strict):
    """What a launch (``--json-model-override-args``, ``SGLANG_INDEXCACHE_MAP``) or a switch (the admin body,
    the CLI flags) asks for: a map name or path, or the Hugging Face schedule keys, with their HF meaning."""

    indexcache_map: str | None = Field(default=None, min_length=1, max_length=MAX_REF_CHARS)
    indexer_types: list[str] | None = None
    index_topk_pattern: str | None = None
    index_topk_freq: int | None = None
    index_skip_topk_offset: int | None = None

    @model_validator(mode="after")
    def _one_request(self) -> MapRequest:
        keys = ("indexer_types", "index_topk_pattern", "index_topk_freq")
        schedule = [k for k in keys if getattr(self, k) is not None]
        if self.indexcache_map is not None and (schedule or self.index_skip_topk_offset is not None):
            raise _fail(
                f"given together with {', '.join(schedule or ['index_skip_topk_offset'])}",
                "give either a map (indexcache_map or SGLANG_INDEXCACHE_MAP) or the schedule keys, not both",
                (MAP_KEY,),
            )
        if len(schedule) > 1:
            raise _fail(f"several schedules given ({', '.join(schedule)})", "give exactly one of them", (schedule[1],))
        if self.index_skip_topk_offset is not None and self.index_topk_freq is None:
            raise _fail(
                "offset without freq",
                "add index_topk_freq or remove index_skip_topk_offset",
                ("index_skip_topk_offset",),
            )
        return self

    @property
    def schedule(self) -> dict[str, Any]:
        return {k: v for k, v in self.model_dump(exclude={MAP_KEY}).items() if v is not None}


class LossStep(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    step: int = Field(ge=0)
    loss: float
    layer: int | None = Field(default=None, ge=0, description="the layer flipped to S at this step")


class Calibration(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    data_hash: str | None = None
    dataset: str | None = None
    num_tokens: int | None = Field(default=None, ge=0)


class Provenance(BaseModel):
    """Where a map came from; free-form beyond the typed fields."""

    model_config = ConfigDict(extra="allow", frozen=True, strict=True)
    method: Literal["published", "uniform", "greedy", "distilled"]
    source: str | None = None
    confirmed: bool = True
    calibration: Calibration | None = None
    loss_trajectory: list[LossStep] | None = None
    notes: str | None = None


class MapFile(_Strict):
    model: ModelSection
    map: MapSection
    provenance: Provenance

    @model_validator(mode="after")
    def _length_matches_layers(self) -> MapFile:
        n, length = self.model.num_layers, self.map.length
        if n is not None and length is not None and n != length:
            key = "pattern" if self.map.pattern is not None else "indexer_types"
            raise _fail(
                f"{length} layers given but model.num_layers is {n}",
                f"give exactly {n} entries, one per DSA layer",
                ("map", key),
            )
        return self


# Type errors name the kinds, never the value: an error must not echo what a file holds.
_KINDS = {
    "int_type": "an integer",
    "string_type": "a string",
    "list_type": "a list",
    "bool_type": "true or false",
    "float_type": "a number",
    "model_type": "a mapping (key: value)",
    "dict_type": "a mapping (key: value)",
    "model_attributes_type": "a mapping (key: value)",
}
_FIXES = {
    "int_type": "write a whole number without quotes, e.g. 4",
    "string_type": "write it as a string (in quotes if it looks like a number or true/false)",
    "list_type": "write a list, e.g. [full, shared]",
    "bool_type": "write true or false without quotes",
    "float_type": "write a number without quotes",
}


def kind_of(value: Any) -> str:
    """How JSON and YAML call the type of ``value``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def to_map_error(err: ValidationError, source: str) -> MapError:
    """The first of pydantic's errors for ``err.title`` (a map file or a request) as one line."""
    first = err.errors(include_url=False)[0]
    ctx = first.get("ctx") or {}
    loc = tuple(str(p) for p in (*first["loc"], *ctx.get("loc", ())))
    key = ".".join(loc) or "(top level)"
    kind = first["type"]
    if kind == "map_rule":
        return MapError(source, key, first["msg"], ctx["fix"])
    if kind in _KINDS:
        return MapError(
            source,
            key,
            f"expected {_KINDS[kind]}, got {kind_of(first['input'])}",
            _FIXES.get(kind, "write a mapping of the allowed keys"),
        )
    if kind == "extra_forbidden":
        allowed = ", ".join(_allowed(loc[:-1], _SCHEMAS.get(err.title, MapFile)))
        return MapError(source, key, "unknown key", f"remove it (allowed: {allowed})")
    if kind == "missing":
        return MapError(source, key, "required key is missing", "add it")
    if kind == "literal_error":
        return MapError(
            source, key, f"{str(first['input'])[:40]!r} is not allowed", f"use one of {ctx.get('expected')}"
        )
    return MapError(source, key, first["msg"].rstrip("."), "correct the value's type or range")


def _allowed(parent: tuple[str, ...], root: type[BaseModel]) -> list[str]:
    model = root
    for part in parent:
        model = model.model_fields[part].annotation
    return list(model.model_fields)


_SCHEMAS = {m.__name__: m for m in (MapFile, MapRequest)}
