"""The layer x layer overlap heatmap, readable at 78 layers, with a map's Full layers and Shared sources."""

from __future__ import annotations

from pathlib import Path


def write_heatmap(report: dict, path: Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    layers = report["layers"]
    n = len(layers)
    matrix = np.array([[np.nan if v is None else v for v in row] for row in report["matrix"]], dtype=float)
    size = min(16.0, max(6.0, 0.16 * n + 3))
    fig, (ax, strip) = plt.subplots(2, 1, figsize=(size + 1.5, size + 2.2),
                                    gridspec_kw={"height_ratios": [size, 1.6]}, constrained_layout=True)
    image = ax.imshow(matrix, vmin=0, vmax=1, cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label="top-k overlap")
    step = 1 if n <= 80 else 2
    ticks = list(range(0, n, step))
    fontsize = 6 if n > 40 else 9
    for axis_ticks, set_labels in ((ax.set_xticks, ax.set_xticklabels), (ax.set_yticks, ax.set_yticklabels)):
        axis_ticks(ticks)
        set_labels([str(layers[i]) for i in ticks], fontsize=fontsize)
    plt.setp(ax.get_xticklabels(), rotation=90)
    ax.set_xlabel("layer j")
    ax.set_ylabel("layer i")
    p = report["positions"]
    ax.set_title((title + "\n" if title else "") + f"mean adjacent overlap {report['summary']['mean_adjacent']}, "
                 f"{p['in_matrix']} query positions, top-{report['index_topk']}", fontsize=10)

    adjacent = [np.nan] + [np.nan if report["adjacent"][str(layer)] is None else report["adjacent"][str(layer)]
                           for layer in layers[1:]]
    strip.plot(range(n), adjacent, color="black", marker="o", markersize=2.5, linewidth=1, label="with layer - 1")
    mapped = report.get("map")
    if mapped:
        where = {layer: i for i, layer in enumerate(layers)}
        full = [where[f] for f in mapped["full_layers"] if f in where]
        for i in full:
            ax.axhline(i, color="white", linewidth=0.4, alpha=0.6)
            ax.axvline(i, color="white", linewidth=0.4, alpha=0.6)
        full_set = set(full)
        for labels in (ax.get_xticklabels(), ax.get_yticklabels()):
            for label, i in zip(labels, ticks):
                if i in full_set:
                    label.set_color("red")
                    label.set_fontweight("bold")
        ax.set_xlabel(f"layer j  (red, white lines: Full layers of {mapped['label']})")
        shared = [(where[s["layer"]], s["overlap"]) for s in mapped["shared"] if s["layer"] in where and
                  s["overlap"] is not None]
        if shared:
            strip.scatter(*zip(*shared), color="red", s=10, zorder=3,
                          label=f"Shared with its source ({mapped['label']})")
    strip.set_xlim(-0.5, n - 0.5)
    strip.set_ylim(0, 1.02)
    strip.set_xticks(ticks)
    strip.set_xticklabels([str(layers[i]) for i in ticks], fontsize=fontsize, rotation=90)
    strip.set_ylabel("overlap")
    strip.grid(alpha=0.3)
    strip.legend(loc="lower left", fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
