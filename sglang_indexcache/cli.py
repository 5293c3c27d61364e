"""``sglang-indexcache``: inspect, validate, calibrate and switch layer maps."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated

import typer

from .admin import AdminError
from .analysis.command import analyze
from .errors import MapError
from .layer_map import LayerMap
from .maps import shipped_maps
from .model_config import load_model_config
from .names import ENV_ADMIN_KEY

app = typer.Typer(
    help="IndexCache for SGLang: layer maps that keep the DSA indexer only in Full layers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

MapArg = Annotated[str, typer.Argument(help="a YAML file or a shipped map name such as glm-5/searched-1of4")]


def exits_with_one_line(fn):
    """Errors are one line on stderr, never a traceback: exit code 2 for bad input (a bad map, or one the server
    rejected as such), 1 when a server refused otherwise or could not be reached."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (MapError, AdminError) as e:
            print(f"error: {e}", file=sys.stderr)
            bad_input = isinstance(e, MapError) or e.status == 400
            raise typer.Exit(2 if bad_input else 1) from None

    return wrapper


@app.command()
@exits_with_one_line
def show(
    map_: MapArg,
    num_layers: Annotated[int | None, typer.Option(help="layer count, for freq maps that leave it open")] = None,
) -> None:
    """Print a map: its pattern, Full count, ratio and the Full layer each Shared layer reads."""
    layer_map = LayerMap.load(map_, num_layers=num_layers)
    for line in describe(layer_map):
        print(line)


@app.command()
@exits_with_one_line
def validate(
    map_: MapArg,
    model_config: Annotated[
        Path | None, typer.Option(help="model directory or config.json the map must fit")
    ] = None,
) -> None:
    """Exit 0 if the map is valid (and fits the model), else print why and exit 2."""
    if model_config is None:
        layer_map, target = LayerMap.load(map_), ""
    else:
        config, config_source = load_model_config(model_config)
        layer_map, target = LayerMap.for_model(map_, config, config_source), f" fits {config_source}"
    print(f"ok: {layer_map.label}{target}: "
          f"{len(layer_map.full_layers)}/{layer_map.num_layers} layers Full")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@exits_with_one_line
def serve(
    ctx: typer.Context,
    map_: Annotated[str, typer.Option("--map", help="a YAML file or a shipped map name")],
) -> None:
    """Run ``python -m sglang.launch_server ARGS`` with a layer map; all other arguments go to SGLang."""
    import os
    import runpy

    from .names import ENV_MAP
    from .patches.autoload import arm

    os.environ[ENV_MAP] = map_
    arm()
    sys.argv = ["sglang.launch_server", *ctx.args]
    runpy.run_module("sglang.launch_server", run_name="__main__", alter_sys=True)


UrlOpt = Annotated[str, typer.Option(help="the server's base URL")]
KeyOpt = Annotated[str, typer.Option(help="the server's --admin-api-key", envvar=ENV_ADMIN_KEY)]


@app.command()
@exits_with_one_line
def switch(
    map_: Annotated[
        str | None, typer.Argument(help="a shipped map name, or a file in the server's SGLANG_INDEXCACHE_MAP_DIR")
    ] = None,
    pattern: Annotated[str | None, typer.Option(help="index_topk_pattern, e.g. FSSSFSSS")] = None,
    freq: Annotated[int | None, typer.Option(help="index_topk_freq")] = None,
    offset: Annotated[int | None, typer.Option(help="index_skip_topk_offset (with --freq)")] = None,
    url: UrlOpt = "http://127.0.0.1:30000",
    admin_api_key: KeyOpt = "",
) -> None:
    """Switch a running server to another map (POST /indexcache/map) and print the new pattern per rank."""
    from .admin import switch_map
    from .switching import parse_switch_body

    schedule = {"index_topk_pattern": pattern, "index_topk_freq": freq, "index_skip_topk_offset": offset}
    body = {k: v for k, v in {"map": map_, **schedule}.items() if v is not None}
    parse_switch_body(body, "sglang-indexcache switch")  # the server's rules, checked before sending
    answer = switch_map(url, admin_api_key, map_, **schedule)
    for rank, state in enumerate(answer["dp_ranks"]):
        print(f"dp rank {rank}: {state['pattern']} ({state['full_layers']}/{state['num_layers']} Full)")


@app.command()
@exits_with_one_line
def status(url: UrlOpt = "http://127.0.0.1:30000", admin_api_key: KeyOpt = "") -> None:
    """Print a running server's active map and indexer counters (GET /indexcache) as JSON."""
    import json

    from .admin import status as get_status

    print(json.dumps(get_status(url, admin_api_key), indent=1))


@app.command(context_settings={"allow_extra_args": True})
@exits_with_one_line
def calibrate(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="Hugging Face checkpoint directory (config.json + weights), or testbed")],
    data: Annotated[
        Path, typer.Option(help=".txt, .jsonl (text or input_ids per line), .npy token ids or a dataset directory")
    ],
    out: Annotated[Path, typer.Option(help="directory for removal.json, the YAML maps and loss.png")],
    backend: Annotated[str, typer.Option(help="torch (in process) or server (a live SGLang server)")] = "torch",
    url: UrlOpt = "http://127.0.0.1:30000",
    admin_api_key: KeyOpt = "",
    ratios: Annotated[
        str, typer.Option(help="Full-layer ratios to write maps for, e.g. --ratios 0.5 0.25 0.125")
    ] = "0.5 0.25 0.125",
    resume: Annotated[bool, typer.Option(help="continue the search checkpointed in --out")] = False,
    device: Annotated[str, typer.Option(help="cpu or cuda (torch backend)")] = "cpu",
    seq_len: Annotated[int | None, typer.Option(help="tokens per sequence (default: twice index_topk)")] = None,
    max_tokens: Annotated[int, typer.Option(help="calibration tokens to use at most")] = 65536,
    batch_size: Annotated[int, typer.Option(help="sequences per forward or request")] = 4,
    stages: Annotated[int, typer.Option(help="pipeline variant: blocks searched side by side, one flip each")] = 1,
    cache_gb: Annotated[float, typer.Option(help="memory for reused hidden states (torch backend)")] = 4.0,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Greedy layer search: flip the Full layer whose removal raises the calibration loss least, repeat; write
    the nested maps of every ratio, the removal order and the loss curve."""
    from .calibrate.data import InputError
    from .calibrate.run import Options
    from .calibrate.run import calibrate as run_calibration
    from .calibrate.server_scorer import ServerGone

    values = [*ratios.split(), *ctx.args]
    try:
        parsed = [float(v) for v in values]
    except ValueError:
        raise InputError(
            "--ratios",
            "--ratios",
            f"{' '.join(values)!r} are not all numbers",
            "give ratios like --ratios 0.5 0.25 0.125",
        ) from None
    opts = Options(
        model=model,
        data=data,
        out=out,
        backend=backend,
        url=url,
        admin_api_key=admin_api_key,
        ratios=parsed,
        resume=resume,
        device=device,
        seq_len=seq_len,
        max_tokens=max_tokens,
        batch_size=batch_size,
        stages=stages,
        cache_gb=cache_gb,
        progress=not quiet,
    )
    try:
        outcome = run_calibration(opts)
    except ServerGone as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1) from None
    for line in outcome.lines:
        print(line)
    print(f"wrote {out}/removal.json, {out}/loss.png and {', '.join(f'{m.name}.yaml' for m in outcome.maps)}")


app.command("analyze")(exits_with_one_line(analyze))


@app.command("list")
def list_maps() -> None:
    """List the shipped maps."""
    for name in shipped_maps():
        layer_map = LayerMap.load(name)
        p = layer_map.provenance
        note = "" if p is None or p.confirmed else ", unconfirmed"
        print(
            f"{name:28s} {len(layer_map.full_layers):3d}/{layer_map.num_layers:<3d} Full  "
            f"({p.method if p else '?'}{note})"
        )


def describe(layer_map: LayerMap) -> list[str]:
    full = layer_map.full_layers
    lines = [
        f"map: {layer_map.label}",
        f"pattern: {layer_map.pattern}",
        f"layers: {layer_map.num_layers}",
        f"full: {len(full)}",
        f"ratio: {layer_map.ratio:.3f}",
    ]
    if layer_map.architectures:
        lines.append(f"architectures: {', '.join(layer_map.architectures)}")
    if layer_map.provenance is not None:
        p = layer_map.provenance
        lines.append(
            f"provenance: {p.method}{'' if p.confirmed else ' (unconfirmed)'}{f' - {p.source}' if p.source else ''}"
        )
    lines.append("shared layers read from (F layer: S layers):")
    for f, served in layer_map.served_layers().items():
        if served:
            lines.append(f"  {f}: {' '.join(map(str, served))}")
    return lines


def main() -> None:
    app()


if __name__ == "__main__":
    main()
