"""What a calibration run leaves behind: ``removal.json``, one YAML map per ratio (and the knee), ``loss.png``,
and the summary table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from ..layer_map import LayerMap
from ..schema import Calibration as CalibrationSection
from ..schema import LossStep, Provenance
from .search import SearchState, full_count, knee, pattern_after

REMOVAL, PLOT = "removal.json", "loss.png"


@dataclass(frozen=True)
class ChosenMap:
    name: str
    ratio: float | None  # None for the knee
    steps: int  # flips of the removal order it takes
    layer_map: LayerMap

    @property
    def full(self) -> int:
        return len(self.layer_map.full_layers)


def map_name(ratio: float) -> str:
    inverse = Fraction(1 / ratio).limit_denominator(1000)
    return f"greedy-1of{inverse.numerator}" if inverse.denominator == 1 else f"greedy-{ratio:g}"


def chosen_maps(state: SearchState, ratios: list[float], provenance: dict) -> list[ChosenMap]:
    """The nested maps of ``ratios`` (those the search reached) and of the knee, each with its provenance."""
    n = state.num_layers
    wanted = [(map_name(r), r, n - full_count(r, n)) for r in sorted(set(ratios), reverse=True)]
    knee_full = knee(n, state.base_loss, state.loss)
    if knee_full is not None:
        wanted.append(("greedy-knee", None, n - knee_full))
    maps = []
    for name, ratio, steps in wanted:
        if steps > len(state.order):
            continue
        trajectory = [LossStep(step=0, loss=state.base_loss)] + [
            LossStep(step=i + 1, layer=layer, loss=loss)
            for i, (layer, loss) in enumerate(zip(state.order[:steps], state.loss[:steps]))]
        extra = {**provenance, "ratio": ratio, "loss": state.loss[steps - 1] if steps else state.base_loss,
                 "base_loss": state.base_loss}
        calibration = CalibrationSection(**extra.pop("calibration"))
        p = Provenance(method="greedy", calibration=calibration, loss_trajectory=trajectory, **extra)
        pattern = pattern_after(n, state.order[:steps])
        maps.append(ChosenMap(name, ratio, steps, LayerMap(pattern, source=f"{name}.yaml", name=name,
                                                           provenance=p)))
    return maps


def write_outputs(out: Path, state: SearchState, maps: list[ChosenMap], architectures: list[str],
                  summary: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for chosen in maps:
        (out / f"{chosen.name}.yaml").write_text(chosen.layer_map.to_yaml(architectures))
    removal = {"order": state.order, "loss": state.loss, "base_loss": state.base_loss,
               "num_layers": state.num_layers, "fixed": state.fixed, "steps": state.steps,
               "knee_full": knee(state.num_layers, state.base_loss, state.loss),
               "maps": {m.name: m.layer_map.pattern for m in maps}, **summary}
    (out / REMOVAL).write_text(json.dumps(removal, indent=1) + "\n")
    plot(out / PLOT, state, maps)


def plot(path: Path, state: SearchState, maps: list[ChosenMap]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = state.num_layers
    full = list(range(n, n - len(state.order) - 1, -1))
    losses = [state.base_loss, *state.loss]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(full, losses, marker=".", color="tab:blue", label="greedy removal")
    ax.axhline(state.base_loss, color="grey", linestyle=":", label="all Full")
    for chosen in maps:
        x, y = chosen.full, losses[chosen.steps]
        marker, color = ("*", "tab:red") if chosen.ratio is None else ("o", "tab:orange")
        ax.plot([x], [y], marker=marker, markersize=10, color=color, linestyle="none")
        ax.annotate(chosen.name.removeprefix("greedy-"), (x, y), textcoords="offset points", xytext=(4, 6))
    ax.set_xlabel("Full layers (indexers kept)")
    ax.set_ylabel("mean next-token loss")
    ax.invert_xaxis()
    ax.grid(alpha=0.3)
    ax.legend(loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def summary_lines(state: SearchState, maps: list[ChosenMap], cost: str) -> list[str]:
    rows = [("map", "Full", "loss", "vs all-F", "pattern"),
            ("all-F", str(state.num_layers), f"{state.base_loss:.4f}", "", "F" * state.num_layers)]
    for chosen in maps:
        loss = state.loss[chosen.steps - 1] if chosen.steps else state.base_loss
        rows.append((chosen.name, f"{chosen.full}/{state.num_layers}", f"{loss:.4f}",
                     f"{loss - state.base_loss:+.4f}", chosen.layer_map.pattern))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4] for r in rows]
    order = " ".join(map(str, state.order))
    return [*lines, f"removal order: {order}", cost]
