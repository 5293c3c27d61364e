"""Messages of ``POST /indexcache/map`` between the HTTP server and the schedulers.

They travel through SGLang's own control channel (pickled by module path), so they live in a module every
SGLang process can import, and subclass ``BaseReq`` as SGLang's control messages do: a dataclass up to
0.5.14, a keyword-only ``msgspec.Struct`` from 0.5.16 (a dataclass subclass of it fails at import).
"""

from __future__ import annotations

import dataclasses

from .targets import BASE_REQ

BaseReq = BASE_REQ.resolve()

if hasattr(BaseReq, "__struct_fields__"):
    import msgspec

    _FIELDS, message, field = {"kw_only": True}, (lambda cls: cls), msgspec.field
else:
    _FIELDS, message, field = {}, dataclasses.dataclass, dataclasses.field


@message
class SwitchMapReq(BaseReq, **_FIELDS):
    pattern: str
    source: str


@message
class SwitchMapReqOutput(BaseReq, **_FIELDS):
    ok: bool
    message: str = ""
    state: dict = field(default_factory=dict)


@message
class CommitSwitchMapReq(BaseReq, **_FIELDS):
    """Every rank answered ready to the switch ``switch_rid``: switch now."""

    switch_rid: str = ""


@message
class CancelSwitchMapReq(BaseReq, **_FIELDS):
    """The HTTP server gave up on the switch whose ``rid`` this carries: a rank not yet committed drops it."""
