"""``overlap.json`` and the printed summary from an :class:`OverlapAccumulator`."""

from __future__ import annotations

import math

import torch

from ..layer_map import LayerMap
from .overlap import OverlapAccumulator

DENOMINATOR = ("overlap of layers i and j at one query = |T_i ∩ T_j| / min(|T_i|, |T_j|) (= / k for full rows), "
               "averaged over queries; a query with fewer than k visible keys keeps all of them in every layer, "
               "so those queries (depth bucket 0) are reported but left out of the headline matrix")
MAX_PER_POSITION = 50_000  # longer captures are subsampled evenly in per_position


def build_report(acc: OverlapAccumulator, layer_map: LayerMap | None = None, block_threshold: float = 0.7,
                 least_like: int = 5, source: dict | None = None) -> dict:
    result = acc.result
    if result is None:
        raise ValueError("nothing was captured")
    positions = acc.all_positions()
    informative = positions >= acc.index_topk
    buckets = [b for b in range(1, acc.num_buckets) if int(result.pair_count[b].sum()) > 0]
    trivial_only = not buckets
    chosen = list(range(acc.num_buckets)) if trivial_only else buckets
    if trivial_only:
        informative = torch.ones_like(informative)
    matrix = _mean(result.ratio_sum[chosen].sum(0), result.pair_count[chosen].sum(0))
    layers = acc.layers
    adjacent = [float(matrix[i, i - 1]) for i in range(1, len(layers))]
    report = {
        "source": source or {},
        "layers": layers,
        "index_topk": acc.index_topk,
        "definition": DENOMINATOR,
        "positions": {"sequences": acc.sequences, "total": int(positions.numel()),
                      "in_matrix": int(informative.sum()), "trivial_only": trivial_only},
        "matrix": _rows(matrix),
        "adjacent": {str(layers[i]): _num(adjacent[i - 1]) for i in range(1, len(layers))},
        "by_layer": _by_layer(result.adjacent[informative], matrix, layers),
        "by_depth": _by_depth(acc),
        "per_position": _per_position(positions, result.adjacent),
        "summary": _summary(adjacent, layers, block_threshold, least_like),
    }
    if layer_map is not None:
        report["map"] = _map_section(layer_map, matrix, layers)
    return report


def summary_lines(report: dict) -> list[str]:
    s, p = report["summary"], report["positions"]
    lines = [
        f"layers: {len(report['layers'])}, top-k {report['index_topk']}, {p['sequences']} sequences, "
        f"{p['total']} query positions ({p['in_matrix']} in the matrix"
        + (", all with fewer than k visible keys" if p["trivial_only"] else "") + ")",
        f"mean adjacent overlap: {_fmt(s['mean_adjacent'])} (min {_fmt(s['min_adjacent'])})",
        f"blocks of similar layers (adjacent overlap >= {s['block_threshold']}): "
        + (", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in s["blocks"])
           if any(a != b for a, b in s["blocks"]) else "none (no adjacent pair reaches it)"),
        "least like their predecessor: " + ", ".join(f"{x['layer']} ({_fmt(x['overlap'])})"
                                                     for x in s["least_like_predecessor"]),
    ]
    if "map" in report:
        m = report["map"]
        lines.append(f"map {m['label']}: {len(m['full_layers'])}/{len(m['pattern'])} Full; mean overlap of a "
                     f"Shared layer with its source: {_fmt(m['mean_shared_source_overlap'])}"
                     + (f" (worst: layer {m['worst_shared']['layer']}, {_fmt(m['worst_shared']['overlap'])})"
                        if m.get("worst_shared") else ""))
    return lines


def _mean(sums: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    return torch.where(counts > 0, sums / counts.clamp(min=1), torch.nan)


def _num(x: float) -> float | None:
    return None if x is None or math.isnan(x) else round(float(x), 4)


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _rows(matrix: torch.Tensor) -> list[list[float | None]]:
    return [[_num(v) for v in row] for row in matrix.tolist()]


def _by_layer(adjacent: torch.Tensor, matrix: torch.Tensor, layers: list[int]) -> list[dict]:
    out = []
    for i, layer in enumerate(layers):
        others = torch.cat([matrix[i, :i], matrix[i, i + 1:]])
        entry = {"layer": layer, "mean_with_others": _num(float(others.nanmean())) if others.numel() else None}
        if i > 0:
            column = adjacent[:, i - 1]
            column = column[~column.isnan()]
            if column.numel():
                q = torch.quantile(column.double(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)).tolist()
                entry.update(adjacent_mean=_num(float(column.double().mean())), adjacent_p10=_num(q[0]),
                             adjacent_p50=_num(q[1]), adjacent_p90=_num(q[2]))
        out.append(entry)
    return out


def _by_depth(acc: OverlapAccumulator) -> list[dict]:
    result, out = acc.result, []
    for b in range(acc.num_buckets):
        count = int(result.pair_count[b].diagonal().max()) if result.num_layers else 0
        if count == 0:
            continue
        matrix = _mean(result.ratio_sum[b], result.pair_count[b])
        adjacent = matrix.diagonal(-1)
        lo, hi = acc.bucket_range(b)
        out.append({"positions": [lo, hi], "queries": count,
                    "mean_adjacent": _num(float(adjacent.nanmean())) if adjacent.numel() else None,
                    "matrix": _rows(matrix)})
    return out


def _per_position(positions: torch.Tensor, adjacent: torch.Tensor) -> dict:
    mean = adjacent.double().nanmean(dim=1) if adjacent.shape[1] else torch.full((len(positions),), torch.nan)
    step = max(1, -(-len(positions) // MAX_PER_POSITION))
    return {"every": step, "position": positions[::step].tolist(),
            "mean_adjacent": [_num(v) for v in mean[::step].tolist()]}


def _summary(adjacent: list[float], layers: list[int], threshold: float, least_like: int) -> dict:
    blocks, start = [], 0
    for i in range(1, len(layers)):
        if not adjacent[i - 1] >= threshold:  # NaN breaks a block too
            blocks.append([layers[start], layers[i - 1]])
            start = i
    if layers:
        blocks.append([layers[start], layers[-1]])
    ranked = sorted((x, layers[i + 1]) for i, x in enumerate(adjacent) if not math.isnan(x))
    defined = [x for x in adjacent if not math.isnan(x)]
    return {
        "mean_adjacent": _num(sum(defined) / len(defined)) if defined else None,
        "min_adjacent": _num(min(defined)) if defined else None,
        "block_threshold": threshold,
        "blocks": blocks,
        "least_like_predecessor": [{"layer": layer, "overlap": _num(x)} for x, layer in ranked[:least_like]],
    }


def _map_section(layer_map: LayerMap, matrix: torch.Tensor, layers: list[int]) -> dict:
    where = {layer: i for i, layer in enumerate(layers)}
    shared = []
    for layer in range(layer_map.num_layers):
        source = layer_map.source_layer(layer)
        if source == layer:
            continue
        x = float(matrix[where[layer], where[source]]) if layer in where and source in where else math.nan
        shared.append({"layer": layer, "source": source, "overlap": _num(x)})
    known = [s for s in shared if s["overlap"] is not None]
    return {
        "label": layer_map.label,
        "pattern": layer_map.pattern,
        "full_layers": list(layer_map.full_layers),
        "shared": shared,
        "mean_shared_source_overlap": _num(sum(s["overlap"] for s in known) / len(known)) if known else None,
        "worst_shared": min(known, key=lambda s: s["overlap"]) if known else None,
    }
