"""``mdanet-sdk demo``: write a synthetic MRI stroke case, segment it with the bundled weights, show the result."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from mdanet_sdk.cli._app import command, console
from mdanet_sdk.cli._options import Device
from mdanet_sdk.errors import CheckpointError

__all__ = ["demo", "DEMO_SEED"]

#: Seed of the demo phantom (the same case on every machine; a territorial infarct).
DEMO_SEED = 2024


@command("demo")
def demo(
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Folder for the phantom, mask, overlay and report (default: a temp folder)."),
    ] = None,
    device: Device = "auto",
) -> None:
    """Segment a synthetic ISLES'22-like case (DWI + ADC) with the bundled weights and show the report."""
    from mdanet_sdk.data.layouts import find_cases
    from mdanet_sdk.data.nifti import output_name
    from mdanet_sdk.data.phantom import write_dataset
    from mdanet_sdk.inference import Segmenter
    from mdanet_sdk.metrics import dsc
    from mdanet_sdk.report import report_table, write_json_report
    from mdanet_sdk.train.checkpoint import resolve_checkpoint

    try:
        resolve_checkpoint("default-mri")
    except CheckpointError:
        raise CheckpointError(
            "the bundled demo weights default-mri are not in this installation yet (mdanet_sdk/weights/"
            "default-mri.pt is produced by training on synthetic phantoms); train them, or run "
            "`mdanet-sdk segment --checkpoint FILE` with a checkpoint of your own."
        ) from None
    seg = Segmenter.default("mri", device=device)  # a device that is not there is refused before any file is written
    folder = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="mdanet-demo-"))
    # A territorial infarct: large enough to see at a glance in the overlay.
    data = write_dataset(folder / "data", "isles22", n_cases=1, seed=DEMO_SEED, pattern="territorial")
    (source,) = find_cases(data)
    console.print(
        f"phantom case {source.case_id} (DWI + ADC, synthetic) written to {data}", highlight=False, markup=False
    )
    console.print(f"model {seg.name} on {seg.device} ({seg.precision})", highlight=False, markup=False)
    result = seg.predict(source)
    mask, _ = result.save(folder / output_name(source.case_id))
    overlay = result.save_overlay(folder / f"{source.case_id}_overlay.png")
    report = write_json_report([result.report], folder / "report.json")

    console.print(report_table([result.report]))
    # The Segmenter never reads labels; the demo scores itself against the phantom's, read here on the same
    # canonical grid as the mask.
    truth = source.load().label
    if truth is not None:
        score = dsc(result.mask_canonical, truth)
        console.print(f"Dice with the phantom's true lesion: {score:.3f}", highlight=False, markup=False)
    for name, path in (("mask", mask), ("overlay", overlay), ("report", report)):
        console.print(f"{name + ':':9}{path}", highlight=False, soft_wrap=True, markup=False)
