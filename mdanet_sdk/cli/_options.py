"""The options of ``mdanet-sdk`` commands as ``Annotated`` aliases: a command's signature lists them, and options
that several commands share (device, precision) are declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

_DEFAULT = "Default: the checkpoint's, else"

# Shared by segment, train and ablate.
Device = Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")]
Precision = Annotated[
    str,
    typer.Option(
        help="auto, fp32, fp16, bf16. auto: on GPU bf16 (fp16 where unsupported); on CPU fp32, except that segment "
        "uses bf16 on CPUs with native bf16 (AVX512-BF16/AMX) when a probe gives the fp32 mask."
    ),
]

# mdanet-sdk segment
Inputs = Annotated[
    list[Path] | None,
    typer.Argument(help="Cases: 4D NIfTI files, case folders (ISLES'22/'18, dwi.nii.gz...) or dataset roots."),
]
Out = Annotated[
    Path | None,
    typer.Option("-o", "--out", help="Output folder, or the mask file for one case. Default: current folder."),
]
Checkpoints = Annotated[
    list[str] | None,
    typer.Option(
        "--checkpoint",
        "-c",
        help="Checkpoint file or bundled name (default-mri, default-ctp); repeat for a fold "
        "ensemble. Default: the bundled weights that fit each case.",
    ),
]
Model = Annotated[
    Path | None,
    typer.Option("--model", help="Exported artefact (mdanet-sdk export, .ts/.pt2) to run instead of a checkpoint."),
]
Prob = Annotated[bool, typer.Option("--prob", help="Also write <case>_prob.nii.gz (float32).")]
Tta = Annotated[
    bool | None,
    typer.Option(
        "--tta/--no-tta", help="Average over flipped copies (4x slower). Default: as the checkpoint recommends."
    ),
]
BatchSize = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        min=1,
        help="Slices per forward pass (default: on CPU from the model grid's activation footprint; 16 on GPU).",
    ),
]
Compile = Annotated[
    bool,
    typer.Option(
        "--compile",
        help="torch.compile the model: about 30 s once on a CPU, then about 1.2x faster; pays for many cases.",
    ),
]
CudaGraphs = Annotated[
    bool | None,
    typer.Option(
        "--cuda-graphs/--no-cuda-graphs",
        help="Replay each batch shape's forward from a CUDA graph (default: on a GPU, unless --compile).",
    ),
]
TtaScreen = Annotated[
    bool,
    typer.Option(
        "--tta-screen/--no-tta-screen",
        help="With TTA, flip only the slices where the model sees a lesion candidate (same mask in practice).",
    ),
]
Threshold = Annotated[float | None, typer.Option(help=f"Lesion probability threshold. {_DEFAULT} 0.5.")]
MinSize = Annotated[
    int | None, typer.Option("--min-size", min=0, help=f"Drop lesions smaller than this (voxels). {_DEFAULT} 0.")
]
MaxAdcRatio = Annotated[
    float | None,
    typer.Option(
        "--max-adc-ratio",
        min=0.0,
        help=f"MRI: drop lesions whose median ADC is above this multiple of the tissue ADC (0: off). {_DEFAULT} 0.",
    ),
]
Report = Annotated[Path | None, typer.Option("--report", "--json", help="Write a JSON report of all cases.")]
Overlay = Annotated[
    Path | None, typer.Option("--overlay", help="PNG of the lesion outline (a folder, or a .png name used as stem).")
]
Modality = Annotated[
    list[str] | None,
    typer.Option("-m", "--modality", help="One case from one file per modality: -m dwi=a.nii.gz -m adc=b.nii.gz."),
]
Modalities = Annotated[str | None, typer.Option("--modalities", help="Order of the volumes in 4D files, e.g. dwi,adc.")]
BrainMask = Annotated[
    Path | None,
    typer.Option(
        "--brain-mask", help="Brain mask (NIfTI on the images' grid) of the single case, for inputs not skull-stripped."
    ),
]
SkipExisting = Annotated[
    bool,
    typer.Option(
        "--skip-existing", help="Resume: do not run again the cases whose outputs are all there and complete."
    ),
]
Shard = Annotated[
    str | None,
    typer.Option(
        "--shard",
        metavar="I/N",
        help="Run only shard I of N of the cases (I from 1 to N, e.g. $SLURM_ARRAY_TASK_ID/N with --array=1-N); "
        "the last shard to finish merges the reports. Under torchrun the ranks are the shards.",
    ),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (for pipelines).")]
Trust = Annotated[
    bool,
    typer.Option(
        "--trust",
        help="Load a checkpoint or artefact that has no integrity record (your own file from an older "
        "mdanet-sdk). Damaged files are refused either way.",
    ),
]
LabelPattern = Annotated[
    str | None,
    typer.Option(
        "--label-pattern",
        metavar="GLOB",
        help="Where each case's lesion label is, relative to its case folder, {case} = case id (e.g. "
        "'{case}_seg.nii.gz'); default: the layout's lesion-label names (derivatives/*_msk, OT, labelsTr/, label, "
        "lesion).",
    ),
]
