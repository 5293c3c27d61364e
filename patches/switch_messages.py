"""Messages of ``POST /indexcache/map`` between the HTTP server and the schedulers.

They travel through SGLang's own control channel (pickled by module path), so they live in a module every
SGLang process can import, and subclass ``BaseReq`` as SGLang's control messages do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .targets import BASE_REQ

BaseReq = BASE_REQ.resolve()


@dataclass
class SwitchMapReq(BaseReq):
    pattern: str
    source: str


@dataclass
class SwitchMapReqOutput(BaseReq):
    ok: bool
    message: str = ""
    state: dict = field(default_factory=dict)


@dataclass
class CommitSwitchMapReq(BaseReq):
    """Every rank answered ready to the switch ``switch_rid``: switch now."""

    switch_rid: str = ""


@dataclass
class CancelSwitchMapReq(BaseReq):
    """The HTTP server gave up on the switch whose ``rid`` this carries: a rank not yet committed drops it."""
