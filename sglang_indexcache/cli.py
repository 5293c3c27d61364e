"""``sglang-indexcache``: inspect and validate layer maps."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from .admin import ENV_ADMIN_KEY, AdminError
from .analysis.command import analyze
from .errors import MapError
from .layer_map import LayerMap
from .maps import shipped_maps
from .model_config import load_model_config

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
    num_layers: Annotated[Optional[int], typer.Option(help="layer count, for freq maps that leave it open")] = None,
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
        Optional[Path], typer.Option(help="model directory or config.json the map must fit")
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

    from .patches.autoload import arm
    from .patches.env import ENV_MAP

    os.environ[ENV_MAP] = map_
    arm()
    sys.argv = ["sglang.launch_server", *ctx.args]
    runpy.run_module("sglang.launch_server", run_name="__main__", alter_sys=True)


UrlOpt = Annotated[str, typer.Option(help="the server's base URL")]
KeyOpt = Annotated[str, typer.Option(help="the server's --admin-api-key", envvar=ENV_ADMIN_KEY)]


@app.command()
@exits_with_one_line
def switch(
    map_: Annotated[Optional[str], typer.Argument(help="map name, or a YAML path the server can read")] = None,
    pattern: Annotated[Optional[str], typer.Option(help="index_topk_pattern, e.g. FSSSFSSS")] = None,
    freq: Annotated[Optional[int], typer.Option(help="index_topk_freq")] = None,
    offset: Annotated[Optional[int], typer.Option(help="index_skip_topk_offset (with --freq)")] = None,
    url: UrlOpt = "http://127.0.0.1:30000",
    admin_api_key: KeyOpt = "",
) -> None:
    """Switch a running server to another map (POST /indexcache/map) and print the new pattern per rank."""
    from .admin import switch_map

    answer = switch_map(url, admin_api_key, map_, index_topk_pattern=pattern, index_topk_freq=freq,
                        index_skip_topk_offset=offset)
    for rank, state in enumerate(answer["dp_ranks"]):
        print(f"dp rank {rank}: {state['pattern']} ({state['full_layers']}/{state['num_layers']} Full)")


@app.command()
@exits_with_one_line
def status(url: UrlOpt = "http://127.0.0.1:30000", admin_api_key: KeyOpt = "") -> None:
    """Print a running server's active map and indexer counters (GET /indexcache) as JSON."""
    import json

    from .admin import status as get_status

    print(json.dumps(get_status(url, admin_api_key), indent=1))


app.command("analyze")(exits_with_one_line(analyze))


@app.command("list")
def list_maps() -> None:
    """List the shipped maps."""
    for name in shipped_maps():
        layer_map = LayerMap.load(name)
        p = layer_map.provenance
        note = "" if p is None or p.confirmed else ", unconfirmed"
        print(f"{name:28s} {len(layer_map.full_layers):3d}/{layer_map.num_layers:<3d} Full  "
              f"({p.method if p else '?'}{note})")


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
        lines.append(f"provenance: {p.method}{'' if p.confirmed else ' (unconfirmed)'}"
                     f"{f' - {p.source}' if p.source else ''}")
    lines.append("shared layers read from (F layer: S layers):")
    for f, served in layer_map.served_layers().items():
        if served:
            lines.append(f"  {f}: {' '.join(map(str, served))}")
    return lines


def main() -> None:
    app()


if __name__ == "__main__":
    main()
