"""``mdanet-sdk synth``: write a synthetic stroke dataset in the real ISLES'22 or ISLES'18 folder layout."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mdanet_sdk.cli._app import command, console
from mdanet_sdk.errors import InputError

__all__ = ["synth", "parse_shape"]

# --kind took the layout names before it meant the modality kind (as in ``train --kind``); they still work.


def _kind_and_layout(kind: str) -> tuple[str, str]:
    """``(modality kind, phantom layout)`` of ``--kind``, the former values isles22/isles18 read as mri/ctp."""
    from mdanet_sdk.data.layouts import KIND_LAYOUT, LAYOUT_KIND  # here: scipy and nibabel load slowly

    kind = LAYOUT_KIND.get(kind, kind)  # the former values, isles22/isles18
    if kind not in KIND_LAYOUT:
        raise InputError(f"--kind must be mri or ctp (or the former isles22 or isles18), got {kind!r}.")
    return kind, KIND_LAYOUT[kind]


def parse_shape(text: str | None) -> tuple[int | None, int | None, int | None] | None:
    """``"64x64x32"`` → ``(64, 64, 32)``; ``"x"``-separated, ``_`` keeps a random default (``"96x96x_"``)."""
    if text is None:
        return None
    parts = text.lower().split("x")
    try:
        if len(parts) != 3:
            raise ValueError
        return tuple(None if p == "_" else int(p) for p in parts)  # type: ignore[return-value]
    except ValueError:
        raise InputError(f"--shape must be XxYxZ like 96x96x40 (_ keeps the default), got {text!r}.") from None


@command("synth")
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Dataset root to write (created).", file_okay=False)],
    kind: Annotated[
        str,
        typer.Option(
            help="mri (DWI + ADC, written in the ISLES'22 layout) or ctp (CBF, CBV, MTT, Tmax + CT, in the ISLES'18 "
            "layout), as in train --kind. The former values isles22 and isles18 still work: they mean mri and ctp."
        ),
    ] = "mri",
    cases: Annotated[int, typer.Option(help="Number of cases.", min=1)] = 10,
    seed: Annotated[int, typer.Option(help="Dataset seed; case i uses seed * 1000 + i.")] = 0,
    shape: Annotated[str | None, typer.Option(help="Grid XxYxZ, e.g. 96x96x40 (default: random per case).")] = None,
    domain: Annotated[
        str,
        typer.Option(
            help="classic, randomised (wider contrast, noise, bias, background, resolution and unit ranges), or "
            "mixed (classic and randomised cases alternately)."
        ),
    ] = "classic",
    workers: Annotated[int, typer.Option(help="Processes that write cases in parallel.", min=1)] = 1,
) -> None:
    """Write synthetic stroke phantoms (with lesion labels) as a real ISLES-layout NIfTI dataset."""
    from mdanet_sdk.data.phantom import write_dataset

    kind, layout = _kind_and_layout(kind)
    root = write_dataset(out_dir, layout, cases, seed, workers=workers, shape=parse_shape(shape), domain=domain)
    console.print(
        f"wrote {cases} synthetic {domain} {kind} case(s) in the {layout} layout to {root}",
        highlight=False,
        soft_wrap=True,
        markup=False,
    )
