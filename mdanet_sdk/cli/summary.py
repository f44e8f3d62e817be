"""``mdanet-sdk summary``: parameter count and FLOPs per slice of a preset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from mdanet_sdk.cli._app import JSON_HELP, command, console, emit_json, plain
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import InputError


def _groups(spec: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``"2,2"`` → the CTP groups, ``"1,1"`` → the MRI groups, other sizes → generic names."""
    try:
        a, b = (int(n) for n in spec.split(","))
    except ValueError:
        raise InputError(f"--groups must be two channel counts like 2,2; got {spec!r}.") from None
    return MDANetConfig.groups_of_sizes(a, b)


@command("summary")
def summary(
    preset: Annotated[
        str, typer.Option(help="paper, small, unet, attention-unet, unetpp, msnet, transunet or swin-unet.")
    ] = "paper",
    groups: Annotated[str, typer.Option(help="Channels per modality group, e.g. 2,2 (CTP) or 1,1 (MRI).")] = "2,2",
    size: Annotated[int, typer.Option(help="Slice side in pixels (the model grid trained at).")] = 256,
    space_grid: Annotated[
        int | None,
        typer.Option(help="Side of the GCFB space-embedding node grid (default: the bottleneck, size / 16)."),
    ] = None,
    as_json: Annotated[Path | None, typer.Option("--json", metavar="FILE", help=JSON_HELP)] = None,
) -> None:
    """Print the parameter count and GFLOPs (and GMACs) per slice of a model preset."""
    from mdanet_sdk.model import model_summary

    config = MDANetConfig.from_preset(preset, groups=_groups(groups), space_grid=space_grid)
    info = model_summary(config, size)
    if as_json is not None:
        emit_json(info, as_json)
        return
    table = Table(title=f"mdanet-sdk summary: {preset}")
    table.add_column("field")
    table.add_column("value", justify="right")
    for key, value in info.items():
        table.add_row(key, plain(str(value)))
    console.print(table)
