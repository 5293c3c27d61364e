"""The one error type users see for bad maps and model configs."""

from __future__ import annotations


class MapError(ValueError):
    """A problem with a layer map or a model config, stated as one line: where, which key, what to do.

    The CLI prints ``str(err)`` and exits 2; the server plugin raises it in the main process before any
    weights load. Keeping ``source``/``key``/``fix`` separate lets tests assert on each part.
    """

    def __init__(self, source: str, key: str, problem: str, fix: str):
        self.source = str(source)
        self.key = key
        self.problem = problem
        self.fix = fix
        super().__init__(f"{self.source}: {key}: {problem}. Fix: {fix}")
