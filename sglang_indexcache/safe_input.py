"""Reading maps from files, JSON and YAML that may be hostile or simply wrong, with a clean error every time.

Files: only regular files up to ``MAX_MAP_BYTES``, opened without blocking (a FIFO or a device is refused,
not waited on). YAML: no duplicate keys, no aliases (``*name`` expands a few bytes into gigabytes of work),
nesting at most ``MAX_DEPTH`` deep. JSON: the same limits. Every failure is a :class:`MapError`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import Any

import yaml

from .errors import MapError
from .schema import MAX_REF_CHARS, kind_of

MAX_MAP_BYTES = 1 << 20  # shipped maps are under 1 KiB; a provenance with a long loss trajectory fits easily
MAX_DEPTH = 32  # a map file nests four levels deep
_NOT_THERE = (errno.ENOENT, errno.ENOTDIR)


def short(ref: str, limit: int = 120) -> str:
    """A path or name as an error may quote it."""
    return ref if len(ref) <= limit else f"{ref[:limit]}... ({len(ref)} characters)"


def read_map_bytes(path: str) -> bytes | None:
    """The bytes of the map file at ``path``; None when there is no such file (it may be a shipped name)."""
    if len(path) > MAX_REF_CHARS:
        raise MapError(short(path), "(file)", f"path is {len(path)} characters long",
                       f"use a path of at most {MAX_REF_CHARS} characters")
    if "\0" in path:
        raise MapError(short(path), "(file)", "path contains a NUL character", "pass a plain file path")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        if e.errno in _NOT_THERE:
            return None
        raise MapError(short(path), "(file)", f"cannot open it ({e.strerror})",
                       "check the path and its permissions") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MapError(short(path), "(file)", "not a regular file (a directory, FIFO, socket or device)",
                           "pass a YAML map file")
        if info.st_size > MAX_MAP_BYTES:
            raise _too_large(path)
        try:
            data = os.read(fd, MAX_MAP_BYTES + 1)
        except OSError as e:
            raise MapError(short(path), "(file)", f"cannot read it ({e.strerror})",
                           "check the path and its permissions") from None
    finally:
        os.close(fd)
    if len(data) > MAX_MAP_BYTES:  # grew while being read, or a file system that reports no size
        raise _too_large(path)
    return data


def _too_large(path: str) -> MapError:
    return MapError(short(path), "(file)", f"larger than {MAX_MAP_BYTES} bytes", "a layer map is a small YAML file")


def decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MapError(source, "(file)", f"cannot read it (not UTF-8 text at byte {e.start})",
                       "save the map as UTF-8 YAML") from None


class _YamlRule(Exception):
    def __init__(self, problem: str, mark: Any):
        self.problem, self.mark = problem, mark


class _MapLoader(yaml.SafeLoader):
    """PyYAML's safe loader without aliases, duplicate keys or deep nesting."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise _YamlRule("aliases (*name) are not allowed", self.peek_event().start_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _YamlRule(f"nested more than {MAX_DEPTH} levels deep", self.peek_event().start_mark)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
                seen.add(key)
            except TypeError:  # an unhashable key: SafeLoader reports it
                continue
            if duplicate:
                raise _YamlRule(f"duplicate key {str(key)[:40]!r}", key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=_MapLoader)  # noqa: S506 - a SafeLoader subclass
    except _YamlRule as e:
        raise MapError(source, "(file)", f"{e.problem} (line {e.mark.line + 1})",
                       "write each key once and every value out in full") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise MapError(source, "(file)", f"invalid YAML{where}", "fix the YAML syntax") from None


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = {}
    for key, value in pairs:
        if key in out:
            raise _YamlRule(f"duplicate key {key[:40]!r}", None)
        out[key] = value
    return out


def load_json_object(text: str | bytes, source: str, max_bytes: int = MAX_MAP_BYTES) -> dict[str, Any]:
    """A JSON object, or a one-line error: invalid JSON, duplicate keys, too deep, too large, not an object."""
    if len(text) > max_bytes:
        raise MapError(source, "(json)", f"larger than {max_bytes} bytes", "send a small JSON object")
    try:
        value = json.loads(text, object_pairs_hook=_unique_pairs)
    except _YamlRule as e:
        raise MapError(source, "(json)", e.problem, "give each key once") from None
    except RecursionError:
        raise MapError(source, "(json)", "nested too deeply", "send a flat JSON object") from None
    except (ValueError, TypeError) as e:  # JSONDecodeError, and bytes that are not UTF-8
        raise MapError(source, "(json)", f"invalid JSON ({getattr(e, 'msg', 'not UTF-8 text')})",
                       "send a JSON object") from None
    if not isinstance(value, dict):
        raise MapError(source, "(json)", f"not a JSON object but {kind_of(value)}",
                       'send an object such as {"index_topk_freq": 4}')
    return value
