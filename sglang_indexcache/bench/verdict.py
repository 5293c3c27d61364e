"""Judging two servers' outputs equal, or different, against SGLang's own run-to-run noise.

SGLang's DSA path is not bitwise reproducible, and on random-weight models the largest logprob difference is
set by a handful of near-tied positions, so the statistic is the mean absolute prompt-logprob difference over
every compared position. Its noise floor is the larger of two launches of the same server compared with each
other and one server answering the same cold prompt twice. A pair is "within noise" when its mean difference
is at most ``EQUAL_WITHIN`` times the floor; a pair that must differ is "sensitive" when its mean is at least
``SENSITIVE_FROM`` times the floor. Checks with a handful of probes judge their largest difference against a
floor of largest differences by the same two multiples (``within_noise``, ``beyond_noise``). Token agreement
(the share of generated tokens equal position by position) is reported beside it; greedy decoding diverges for
good after the first differing token, so it is not judged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

EQUAL_WITHIN = 1.5
SENSITIVE_FROM = 2.0


@dataclass(frozen=True)
class Comparison:
    positions: int  # prompt positions whose logprobs were compared
    nonfinite: int  # positions where either side's logprob is NaN or infinite (uninitialised weights, say)
    mean_lp_diff: float | None
    max_lp_diff: float | None
    tokens_agree: int  # generated tokens equal at the same position
    tokens: int
    generations_equal: int  # generations whose whole output is equal
    generations: int

    @property
    def identical(self) -> bool:
        return self.generations_equal == self.generations and not self.max_lp_diff and not self.nonfinite

    @property
    def token_agreement(self) -> float | None:
        return self.tokens_agree / self.tokens if self.tokens else None

    def as_dict(self) -> dict:
        return {**asdict(self), "token_agreement": self.token_agreement}


def compare(a: Mapping[str, Mapping], b: Mapping[str, Mapping]) -> Comparison:
    """Two runs of the same requests: ``{request: {"ids": [...], "prompt_lp": [...]}}``, over the requests both have."""
    keys = sorted(set(a) & set(b))
    diffs = [abs(x - y) for k in keys for x, y in zip(a[k]["prompt_lp"], b[k]["prompt_lp"])]
    finite = [d for d in diffs if math.isfinite(d)]
    pairs = [(x, y) for k in keys for x, y in zip(a[k]["ids"], b[k]["ids"])]
    return Comparison(
        positions=len(diffs),
        nonfinite=len(diffs) - len(finite),
        mean_lp_diff=sum(finite) / len(finite) if finite else None,
        max_lp_diff=max(finite) if finite else None,
        tokens_agree=sum(x == y for x, y in pairs),
        tokens=len(pairs),
        generations_equal=sum(a[k]["ids"] == b[k]["ids"] for k in keys),
        generations=len(keys),
    )


def noise_floor(comparisons: Iterable[Comparison]) -> float | None:
    """The largest mean difference among comparisons of a server with itself (relaunched, or the same server)."""
    means = [c.mean_lp_diff for c in comparisons if c.mean_lp_diff is not None]
    return max(means) if means else None


def ratio(value: float | None, floor: float | None) -> float | None:
    """``value`` as a multiple of the noise floor (a floor of 0 makes any difference infinitely many)."""
    if floor is None or value is None:
        return None
    return value / floor if floor > 0 else float("inf") if value > 0 else 0.0


def multiple(c: Comparison, floor: float | None) -> float | None:
    return ratio(c.mean_lp_diff, floor)


def within_noise(value: float | None, floor: float | None) -> bool:
    m = ratio(value, floor)
    return m is not None and m <= EQUAL_WITHIN


def beyond_noise(value: float | None, floor: float | None) -> bool:
    m = ratio(value, floor)
    return m is not None and m >= SENSITIVE_FROM


def judge_equal(c: Comparison, floor: float | None) -> str:
    if c.identical:
        return "identical"
    if c.nonfinite:
        return "DIFFERS"
    if multiple(c, floor) is None:
        return "no floor"
    return "within noise" if within_noise(c.mean_lp_diff, floor) else "DIFFERS"


def judge_different(c: Comparison, floor: float | None) -> str:
    if c.nonfinite:
        return "sensitive"
    if multiple(c, floor) is None:
        return "no floor"
    return "sensitive" if beyond_noise(c.mean_lp_diff, floor) else "INSENSITIVE"
