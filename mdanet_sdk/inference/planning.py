"""Which cases a list of inputs holds, with which weights each runs, and where its outputs go.

Inputs are files (a 4D NIfTI with one volume per modality), case folders (ISLES'22 ``sub-*``, ISLES'18
``case_N``, or a folder of ``dwi.nii.gz``/``adc.nii.gz``...), dataset roots holding many cases, or mappings
modality -> file (one case). Without a checkpoint the bundled weights are chosen per case: ``default-mri`` for
DWI+ADC (ISLES'22 folders, 4D files with 2 volumes) and ``default-ctp`` for CBF, CBV, MTT, Tmax (ISLES'18
folders, 4D files with 4 volumes). A 4D file with a ``.bval``/``.bvec`` sidecar is a diffusion series, not one
volume per modality: it is refused unless ``modalities`` say how to read it.

Outputs per case: ``<case>_seg.nii.gz`` (uint8 mask) in the output folder (default: the current folder), which
may also name the mask file itself for a single case; ``<case>_prob.nii.gz`` beside it when asked for; overlays
in a folder, or one ``.png`` name used as a stem. No output may overwrite an input or another output.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from mdanet_sdk._files import file_key
from mdanet_sdk.data.cases import FOURD_KEY, CaseSource, case_name, mapping_source
from mdanet_sdk.data.layouts import detect_layout, find_cases
from mdanet_sdk.data.layouts.nnunet import channels_named
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, load_volume, named_like_image, output_name
from mdanet_sdk.data.targets import check_output_file, check_report_file
from mdanet_sdk.data.validate import as_path
from mdanet_sdk.errors import InputError, MDANetError
from mdanet_sdk.inference.inputs import (
    BUNDLED_MODALITIES,
    input_name,
    kind_for_modalities,
    refuse_diffusion_series,
    refuse_single_3d,
    volume_count,
)

__all__ = [
    "Job",
    "SegmentInput",
    "plan_jobs",
    "output_paths",
    "refuse_clobbering",
    "refuse_unwritable",
    "parse_modalities",
    "attach_brain_mask",
    "mapping_text",
]

#: One input of :func:`mdanet_sdk.segment`: a file or folder, or a mapping modality -> file.
SegmentInput = Union[str, os.PathLike, Mapping[str, Union[str, os.PathLike]]]


@dataclass
class Job:
    """One case to segment: where it is, with which weights, and where its outputs go.

    Attributes:
        case_id: unique id within the run (used for output names).
        source: the case's files, or ``None`` if planning already failed.
        weights: ``"checkpoint"`` (the ``--checkpoint`` model) or a bundled kind, ``"mri"`` / ``"ctp"``.
        error: why the case cannot be segmented, when planning already failed.
        outputs: ``{"mask", "prob", "overlay"}`` → path, filled by :func:`output_paths`.
        given: the command-line path a failed job came from (its files are inputs all the same).
    """

    case_id: str
    source: CaseSource | None
    weights: str = "checkpoint"
    error: str | None = None
    outputs: dict[str, Path] = field(default_factory=dict)
    given: Path | None = None


def parse_modalities(text: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``"dwi,adc"`` or ``["dwi", "adc"]`` -> ``("dwi", "adc")``; ``None`` stays ``None``."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    names = tuple(m.strip().lower() for m in items if m.strip())
    if not names or len(set(names)) != len(names):
        raise InputError(f"the modalities must be distinct names, e.g. dwi,adc; got {text!r}.")
    return names


def _mapping_input(item: Mapping[Any, Any], wanted: tuple[str, ...] | None) -> Job:
    """The job of a mapping input (:func:`~mdanet_sdk.data.cases.mapping_source`); a mapping that names no image,
    a key twice, or a number or None among its files fails this case only."""
    try:
        source = mapping_source(item, wanted)
    except InputError as exc:
        return Job(input_name(item), None, error=str(exc))
    return Job(source.case_id, source)


def plan_jobs(
    inputs: Sequence[SegmentInput],
    modalities: tuple[str, ...] | None,
    checkpoint_modalities: tuple[str, ...] | None,
) -> list[Job]:
    """Expand inputs into cases, and pick the weights of each.

    Args:
        inputs: files, case folders, dataset roots, and mappings modality -> file (one case each).
        modalities: the volume order of 4D files, or which files of a folder to read.
        checkpoint_modalities: the given model's modalities, or ``None`` for the bundled weights.

    Returns:
        one :class:`Job` per case, in input order; a job whose input is unusable carries ``error``.
    """
    jobs: list[Job] = []
    wanted = modalities or checkpoint_modalities
    for item in inputs:
        if isinstance(item, Mapping):
            jobs.append(_mapping_input(item, wanted))
            continue
        path: Path | None = None
        try:
            path = as_path(item)
            if path.is_file():
                count = volume_count(path)
                if count is None:
                    load_volume(path)  # unreadable header: raises InputError saying why
                if count == 1:
                    refuse_single_3d(path, wanted or BUNDLED_MODALITIES["mri"])
                if modalities is None:
                    refuse_diffusion_series(path)
                order = wanted or next((m for m in BUNDLED_MODALITIES.values() if len(m) == count), None)
                if order is None:
                    raise InputError(
                        f"{path} holds {count} volumes; the bundled weights read 2 (dwi, adc) or 4 (cbf, cbv, "
                        "mtt, tmax); give the modalities in the file's order (--modalities), or a checkpoint."
                    )
                sources = [CaseSource(case_name(path), {FOURD_KEY: path}, None, order)]
            else:
                sources = find_cases(path, modalities=_folder_modalities(path, modalities, checkpoint_modalities))
        except MDANetError as exc:
            jobs.append(Job(case_name(path) if path else input_name(item), None, error=str(exc), given=path))
            continue
        jobs.extend(Job(source.case_id, source) for source in sources)
    for job in jobs:
        if job.source is None or checkpoint_modalities is not None:
            continue
        names = job.source.modalities or tuple(job.source.paths)
        kind = kind_for_modalities(names)
        if kind is None:
            job.error = (
                f"no bundled weights read {', '.join(names)}; the bundled weights need dwi, adc (MRI) or cbf, cbv, "
                "mtt, tmax (CTP); give a checkpoint (--checkpoint) for other modalities."
            )
        job.weights = kind or "checkpoint"
    _make_unique(jobs)
    return jobs


def attach_brain_mask(jobs: list[Job], brain_mask: Path) -> None:
    """Use ``brain_mask`` for the one case of the run (it replaces a mask found in the case's folder).

    Raises:
        InputError: the file does not exist, or there are several cases (one mask cannot fit them all).
    """
    if not brain_mask.is_file():
        raise InputError(f"the brain mask {brain_mask} does not exist; give the path of a NIfTI brain mask.")
    if len(jobs) != 1:
        raise InputError(
            f"one brain mask was given for {len(jobs)} cases; give each case its mask with -m brain_mask=FILE "
            "(one case per run) or as a brain-mask file in each case's folder."
        )
    source = jobs[0].source
    if source is not None:
        source.brain_mask_path = brain_mask


def mapping_text(job: Job) -> str:
    """How a case is read, e.g. ``"dwi, adc (volumes 1, 2 of case.nii.gz)"`` or ``"dwi, adc (from a_dwi.nii.gz,
    a_adc.nii.gz)"``, plus ``"; brain mask m.nii.gz"`` when one is used."""
    assert job.source is not None
    source = job.source
    order = source.modalities or tuple(source.paths)
    if FOURD_KEY in source.paths:
        numbers = ", ".join(str(i + 1) for i in range(len(order)))
        where = f"volumes {numbers} of {source.paths[FOURD_KEY].name}"
    else:
        where = "from " + ", ".join(source.paths[m].name if m in source.paths else f"no {m} file" for m in order)
    mask = f"; brain mask {source.brain_mask_path.name}" if source.brain_mask_path is not None else ""
    return f"{', '.join(order)} ({where}){mask}"


def _folder_modalities(
    path: Path, modalities: tuple[str, ...] | None, checkpoint_modalities: tuple[str, ...] | None
) -> tuple[str, ...] | None:
    """The modalities to find in a folder: the user's, else the model's; but an nnU-Net folder without a
    ``dataset.json`` holds unnamed channels, whose order only the user can give."""
    if modalities is None and checkpoint_modalities is not None and detect_layout(path) == "nnunet":
        if not channels_named(path):
            raise InputError(
                f"{path} is an nnU-Net folder without dataset.json, so its channels are unnamed; give their order "
                f"with --modalities, e.g. --modalities {','.join(checkpoint_modalities)}."
            )
    return modalities or checkpoint_modalities


def _make_unique(jobs: list[Job]) -> None:
    """Suffix repeated case ids (``case``, ``case-2``...) so that no output overwrites another.

    A new id never takes one that another case has (a real ``case-2`` keeps its id; the repeat becomes
    ``case-3``), and ids that differ only in letter case count as repeats (they collide on macOS and Windows).
    """
    taken = {job.case_id.casefold() for job in jobs}
    seen: set[str] = set()
    for job in jobs:
        if job.case_id.casefold() in seen:
            n = 2
            while f"{job.case_id}-{n}".casefold() in taken:
                n += 1
            job.case_id = f"{job.case_id}-{n}"
            taken.add(job.case_id.casefold())
            if job.source is not None:  # so that the case's own messages name it as the run does
                job.source.case_id = job.case_id
        seen.add(job.case_id.casefold())


def _inputs(job: Job) -> list[Path]:
    """The files of a case, or, for a path that failed planning, that file or the files in that folder."""
    if job.source is not None:
        extra = (job.source.label_path, job.source.brain_mask_path)
        return [*job.source.paths.values(), *(p for p in extra if p is not None)]
    if job.given is None:
        return []
    try:
        return [p for p in job.given.iterdir() if p.is_file()] if job.given.is_dir() else [job.given]
    except OSError:
        return [job.given]


def refuse_clobbering(jobs: list[Job], reports: Sequence[Path] = ()) -> None:
    """Fail (``job.error``) each case whose output would overwrite an input of any case, another output of the
    run or a report (the run's, or a shard's); the inputs are never touched and no output is written twice.

    Raises:
        InputError: a report would replace an input, an image or an image's sidecar (:func:`check_report_file`).
    """
    inputs = {file_key(p): (job.case_id, p) for job in jobs for p in _inputs(job)}
    planned: dict[tuple[Any, ...], str] = {}
    for report in reports:
        check_report_file(report)
        reason = _unwritable(report.parent)
        if reason is not None:  # found now, not after every mask is written
            raise InputError(f"the report {report} cannot be written: {reason}; choose another name.")
        if file_key(report) in inputs:
            raise InputError(f"the report {report} is an input file; choose another name for the report.")
        planned[file_key(report)] = f"the report {report}"
    for job in jobs:
        if job.error is not None:
            continue
        for role, path in job.outputs.items():
            key = file_key(path)
            if key in inputs:
                case_id, given = inputs[key]
                job.error = (
                    f"its {role} output {path} is the input file {given} of case {case_id}; choose another output "
                    "folder (-o) so that no input is overwritten."
                )
            elif key in planned:
                job.error = f"its {role} output {path} is also {planned[key]}; choose other output names."
            else:
                planned[key] = f"the {role} output of case {job.case_id}"
                continue
            break


def refuse_unwritable(jobs: list[Job]) -> None:
    """Fail (``job.error``) each case whose output folder cannot be made or written, or whose mask or
    probability file would replace an image mdanet-sdk did not write (:func:`check_output_file`), before any
    model runs (a missing folder is made later; its nearest existing ancestor must be a writable folder)."""
    reasons: dict[Path, str | None] = {}
    for job in jobs:
        if job.error is not None:
            continue
        for role, path in job.outputs.items():
            if path.parent not in reasons:
                reasons[path.parent] = _unwritable(path.parent)
            if reasons[path.parent] is not None:
                job.error = (
                    f"its {role} output {path} cannot be written: {reasons[path.parent]}; choose another folder."
                )
                break
            if role in ("mask", "prob"):
                try:
                    check_output_file(path)
                except InputError as exc:
                    job.error = str(exc)
                    break


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` or the folders that would be made for it; ``None`` if they can."""
    probe = folder.absolute()
    while not os.path.lexists(probe) and probe.parent != probe:
        probe = probe.parent
    if probe.is_symlink() and not probe.exists():
        return f"{probe} is a broken link"
    if not probe.is_dir():
        return f"{probe} is not a folder"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{probe} is not writable"
    return None


#: Picture and document formats an overlay is not written in (read as a folder name, they would become one).
_PICTURE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".jp2", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".avif", ".svg", ".pdf", ".eps"}
)


def output_paths(jobs: list[Job], out: Path | None, prob: bool, overlay: Path | None) -> None:
    """Fill each job's ``outputs`` (see the module docstring for the naming rules).

    Raises:
        InputError: ``-o`` or ``--overlay`` names one file but there are several cases, ``-o`` names an image
            file other than a lower-case ``.nii``/``.nii.gz``, or ``--overlay`` names an image file.
    """
    single = len(jobs) == 1
    out_is_file = out is not None and out.name.endswith(NIFTI_SUFFIXES)
    if out is not None and not out_is_file and named_like_image(out):
        raise InputError(
            f"-o {out} names an image file that mdanet-sdk does not write; masks are NIfTI: give a name ending in "
            ".nii.gz (lower case) or a folder."
        )
    if overlay is not None and overlay.suffix.lower() != ".png" and not overlay.is_dir():
        if named_like_image(overlay) or overlay.suffix.lower() in _PICTURE_SUFFIXES:  # else a folder "ov.jpg/"
            raise InputError(
                f"--overlay {overlay} names an image file; overlays are PNG: give a .png name or a folder for them."
            )
    if out_is_file and not single:
        raise InputError(f"-o {out} names one file but {len(jobs)} cases were given; pass a folder instead.")
    for job in jobs:
        if out_is_file:
            assert out is not None
            mask = out
        else:
            mask = (out or Path.cwd()) / output_name(job.case_id, "mask")
        job.outputs["mask"] = mask
        if prob:
            job.outputs["prob"] = mask.parent / output_name(job.case_id, "prob")
        if overlay is not None:
            if overlay.suffix.lower() != ".png":
                job.outputs["overlay"] = overlay / f"{job.case_id}_overlay.png"
            elif single:
                job.outputs["overlay"] = overlay
            else:
                job.outputs["overlay"] = overlay.with_name(f"{overlay.stem}_{job.case_id}.png")
