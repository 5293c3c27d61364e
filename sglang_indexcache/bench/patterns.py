"""The layer maps the benchmarks and checks serve, built for the model's layer count."""

from __future__ import annotations

from ..schedule import pattern_from_freq

# An irregular block (Full runs of one and two, Shared runs of one to three) repeated over the layers: no
# frequency and offset gives it, so it exercises explicit maps rather than SGLang's native schedule.
IRREGULAR_BLOCK = "FFSFSSSF"
RATIO_MAPS = ("allF", "1of2", "1of4")


def irregular(num_layers: int) -> str:
    return (IRREGULAR_BLOCK * -(-num_layers // len(IRREGULAR_BLOCK)))[:num_layers]


def native_patterns(num_layers: int) -> tuple[str, str, str]:
    """1/4 and 1/2 on SGLang's native schedule (layers 0 and 1 Full, then every 4th / 2nd), and an irregular one."""
    return pattern_from_freq(num_layers, 4), pattern_from_freq(num_layers, 2), irregular(num_layers)


def ratio_maps(num_layers: int) -> dict[str, str | None]:
    """Stock SGLang (None), then all-F, 1/2 and 1/4 with a Full layer every 1, 2 and 4 layers from layer 0, so
    the Shared fraction of a short slice is that of the full model (V3.2 at 1/4: 45 of 61 layers Shared)."""
    return {"stock": None, **{name: pattern_from_freq(num_layers, k, offset=1)
                              for name, k in zip(RATIO_MAPS, (1, 2, 4))}}


def switching_maps(num_layers: int) -> dict[str, str]:
    quarter, _, irregular_ = native_patterns(num_layers)
    return {"allF": "F" * num_layers, "1of4": quarter, "irregular": irregular_}
