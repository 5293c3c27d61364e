"""Summaries of a batch of timed requests."""

from __future__ import annotations

import numpy as np

from .client import RequestResult

PERCENTILES = (50, 90, 99)


def percentiles(values, prefix: str) -> dict[str, float | None]:
    values = [v for v in values if v is not None]
    return {f"{prefix}_p{p}": (float(np.percentile(values, p)) if values else None) for p in PERCENTILES}


def summarize(results: list[RequestResult], wall: float) -> dict:
    ok = [r for r in results if r.ok]
    return {
        "requests": len(results),
        "errors": len(results) - len(ok),
        "wall_s": wall,
        "input_tok_s": sum(r.prompt_tokens for r in ok) / wall if wall > 0 else None,
        "output_tok_s": sum(r.output_tokens for r in ok) / wall if wall > 0 else None,
        **percentiles([r.ttft for r in ok], "ttft_s"),
        **percentiles([r.tpot for r in ok], "tpot_s"),
        **percentiles([gap for r in ok for gap in r.itl], "itl_s"),
        "first_errors": [r.error for r in results if not r.ok][:3],
    }
