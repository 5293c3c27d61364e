"""Server capture mode on a real SGLang: capture, reduce on the GPU, and compare with a second capture.

Launches one server (all-Full map, capture mode on, no radix cache so every capture is a full prefill, chunked
prefill so prompts span several forwards), sends the prompts as flagged requests twice and once unflagged,
and checks: every flagged request left a capture of every layer and position (the unflagged one none); the
Triton kernel and the torch reference agree exactly on the captured indices; and how far two captures of the
same prompts differ (SGLang's DSA path is not bitwise reproducible: this is the floor any comparison of
captures has to be judged against). Runs ``sglang-indexcache analyze --url`` end to end as well.
``scripts/capture_server_check.py`` is its command line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import requests
import torch

from ..analysis.capture_files import request_dir
from ..analysis.compare import labels_are_positions, overlap_distance, set_agreement
from ..analysis.runs import capture_from_server
from ..kernels.naive import topk_overlap_naive
from ..kernels.topk_overlap import topk_overlap
from ..names import ENV_CAPTURE_DIR, ENV_MAP
from . import results
from .client import random_prompt
from .server import Server, map_file

WHAT = "capture_server_check: capture mode on a real server, kernel against reference"


@dataclass
class Options:
    model: str
    out: Path
    port: int = 31500
    prompts: int = 3
    prompt_len: int = 5000
    inprocess: bool = False
    sglang: str | None = None  # the SGLang release the server must report (e.g. 0.5.17 for the 0.5.17 kit)


def adjacent_diff(a, b) -> float:
    """Mean |difference| of the per-position adjacent-layer overlaps of two captures (label-free: the indices
    are KV-cache slots, which differ between runs, but each capture's overlaps do not depend on them)."""
    return float((a.adjacent - b.adjacent).abs().nanmean())


def run(args: Options) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    captures_dir = tmp / "captures"
    rng = np.random.default_rng(0)
    config = json.loads((Path(args.model) / "config.json").read_text())
    layers = config["num_hidden_layers"]
    records = [{"input_ids": random_prompt(rng, args.prompt_len, config["vocab_size"])} for _ in range(args.prompts)]
    data = tmp / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    kit = os.environ.get("GPUKIT_SGLANG_ARGS", "").split()
    server_args = [*kit, "--skip-tokenizer-init", "--disable-radix-cache", "--disable-cuda-graph",
                   "--chunked-prefill-size", "4096", "--mem-fraction-static", "0.5", "--context-length", "16384"]
    env = {
        ENV_MAP: map_file(tmp, "allF", "F" * layers, config["architectures"]),
        ENV_CAPTURE_DIR: str(captures_dir),
    }
    out: dict = {"model": args.model, "prompts": args.prompts, "prompt_len": args.prompt_len, "layers": layers}
    with Server("capture", args.model, args.port, server_args, env=env, logdir=args.out,
                sglang=args.sglang) as server:
        first = capture_from_server(server.url, records, captures_dir, progress=False)
        second = capture_from_server(server.url, records, captures_dir, progress=False)
        plain = requests.post(
            f"{server.url}/generate",
            json={**records[0], "rid": "plain-request", "sampling_params": {"max_new_tokens": 1}},
            timeout=300,
        )
        out["unflagged_ok"] = plain.ok
        out["unflagged_wrote_nothing"] = not request_dir(captures_dir, "plain-request").exists()
        cli = subprocess.run(
            [
                sys.executable,
                "-m",
                "sglang_indexcache",
                "analyze",
                "--url",
                server.url,
                "--capture-dir",
                str(captures_dir),
                "--data",
                str(data),
                "--out",
                str(Path(args.out).resolve() / "analyze"),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
            cwd=tmp,
        )  # the installed package, not a source tree in the working directory
        out["cli"] = {"exit": cli.returncode, "stdout": cli.stdout.splitlines(), "stderr": cli.stderr[-2000:]}
    out["captures"] = [
        {
            "layers": c["layers"],
            "positions": int(c["positions"].numel()),
            "first_position": int(c["positions"][0]),
            "last_position": int(c["positions"][-1]),
            "truncated": c["truncated"],
            "shape": list(c["topk"].shape),
        }
        for c in first
    ]
    complete = all(
        c["layers"] == list(range(layers)) and c["positions"].tolist() == list(range(args.prompt_len))
        for c in first + second
    )
    out["complete"] = complete
    exact, floor, other_prompt, matrix_diff = [], [], [], []
    reduced = [
        (topk_overlap(a["topk"].cuda(), a["num_tokens"]), topk_overlap(b["topk"].cuda(), b["num_tokens"]))
        for a, b in zip(first, second)
    ]
    for i, a in enumerate(first):
        topk = a["topk"].cuda()
        got, want = reduced[i][0], topk_overlap_naive(topk, a["num_tokens"])
        exact.append(
            bool(
                torch.equal(got.sizes, want.sizes)
                and torch.equal(got.pair_count, want.pair_count)
                and torch.allclose(got.ratio_sum, want.ratio_sum, rtol=0, atol=1e-6)
            )
        )
        matrix_diff.append(float((got.mean() - reduced[i][1].mean()).abs().nan_to_num(0).max()))
        floor.append(adjacent_diff(got, reduced[i][1]))
        other_prompt.append(adjacent_diff(got, reduced[(i + 1) % len(first)][1]))
    out.update(
        kernel_equals_reference=exact,
        max_matrix_diff_same_prompt=matrix_diff,
        adjacent_diff_same_prompt=floor,
        adjacent_diff_other_prompt=other_prompt,
    )
    if args.inprocess:
        out["inprocess"] = compare_inprocess(args.model, config, records, first, reduced, floor)
    if (args.out / "analyze" / "overlap.json").exists():
        out["analysis_summary"] = results.read(args.out / "analyze" / "overlap.json")["summary"]
    results.write(args.out / "capture_check.json", WHAT, args, out)
    print("| check | result |\n|---|---|")
    print(
        f"| flagged captures complete ({args.prompts} prompts x 2, {layers} layers x {args.prompt_len} positions, "
        f"chunked prefill 4096) | {complete} |"
    )
    print(f"| unflagged request served / wrote nothing | {out['unflagged_ok']} / {out['unflagged_wrote_nothing']} |")
    print(f"| Triton kernel == torch reference on the captures | {exact} |")
    print(f"| overlap matrix, same prompt captured twice: max abs diff | {[round(x, 4) for x in matrix_diff]} |")
    print(f"| per-position adjacent overlap, same prompt twice: mean abs diff | {[round(x, 4) for x in floor]} |")
    print(f"| the same against another prompt (must differ) | {[round(x, 4) for x in other_prompt]} |")
    print(f"| analyze --url exit code | {out['cli']['exit']} |")
    for line in out["cli"]["stdout"]:
        print(f"    {line}")
    if args.inprocess:
        c = out["inprocess"]
        print("\n| server vs in-process (transformers, bf16), same prompts | per prompt |\n|---|---|")
        for key in ("matrix_max_abs_diff", "matrix_mean_abs_diff", "adjacent_mean_abs_diff"):
            print(f"| {key} | {[round(d[key], 4) for d in c['distance']]} |")
        print(f"| floor: adjacent, server twice | {[round(x, 4) for x in floor]} |")
        print(f"| server labels are token positions | {c['labels_are_positions']} |")
        for i, agree in enumerate(c["set_agreement"]):
            if agree is not None:
                print(f"| prompt {i}: per-layer |S ∩ T| / |S| server vs in-process | {[round(x, 4) for x in agree]} |")


def compare_inprocess(model_dir: str, config: dict, records: list[dict], server: list[dict], reduced: list,
                      floor: list) -> dict:
    """Capture the prompts in-process on this GPU (the server has exited) and compare with the server's."""
    from ..inprocess.load import loader_for
    from ..inprocess.runner import capture_topk

    load = loader_for(model_dir, config)
    if load is None:
        return {"skipped": f"{config.get('architectures')} has no in-process loader"}
    model = load(model_dir, "cuda")
    result: dict = {"distance": [], "labels_are_positions": [], "set_agreement": [], "floor": floor}
    for record, capture, (server_overlap, _) in zip(records, server, reduced):
        ids = torch.tensor([record["input_ids"]], device="cuda")
        local = capture_topk(model, ids)[:, 0]
        n = len(record["input_ids"])
        result["distance"].append(overlap_distance(server_overlap, topk_overlap(local.int(), n)))
        positions = labels_are_positions(capture["topk"].cuda())
        result["labels_are_positions"].append(positions)
        result["set_agreement"].append(set_agreement(capture["topk"].cuda(), local, n) if positions else None)
    return result
