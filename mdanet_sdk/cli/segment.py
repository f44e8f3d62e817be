"""``mdanet-sdk segment``: lesion masks, probability maps, reports and overlays for one or many cases.

Inputs are files (a 4D NIfTI with one volume per modality), case folders (ISLES'22 ``sub-*``, ISLES'18
``case_N``, or a folder of ``dwi.nii.gz``/``adc.nii.gz``...), dataset roots holding many cases, or one case
given file by file with ``-m dwi=a.nii.gz -m adc=b.nii.gz``. Without ``--checkpoint`` the bundled weights
are chosen per case: ``default-mri`` for DWI+ADC (ISLES'22 folders, 4D files with 2 volumes) and
``default-ctp`` for CBF, CBV, MTT, Tmax (ISLES'18 folders, 4D files with 4 volumes).

Outputs per case: ``<case>_seg.nii.gz`` (uint8 mask) in the current folder, or in ``-o`` when it is a folder
(``-o`` may also name the mask file itself for a single case), ``<case>_prob.nii.gz`` beside it with
``--prob``; all with the input's affine, orientation and header. Exit code 0 when every case was segmented,
1 when any failed (one ``error:`` line per failed case; the other cases are still written), 2 for a usage
error.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Callable

import typer
from rich.markup import escape

from mdanet_sdk.cli._app import command, console, err_console
from mdanet_sdk.data.cases import BRAIN_MASK_KEY, FOURD_KEY, CaseSource, find_cases
from mdanet_sdk.data.nifti import NIFTI_SUFFIXES, load_volume
from mdanet_sdk.errors import InputError, MDANetError

__all__ = ["segment", "Job", "plan_jobs", "output_paths", "refuse_clobbering"]


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


def _parse_mapping(items: Sequence[str]) -> dict[str, Path]:
    """``["dwi=a.nii.gz", "adc=b.nii.gz"]`` → ``{"dwi": Path("a.nii.gz"), ...}``."""
    mapping: dict[str, Path] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise InputError(f"-m expects MODALITY=FILE, e.g. -m dwi=a.nii.gz; got {item!r}.")
        if name.lower() in mapping:
            raise InputError(f"-m names {name.lower()} twice; give one file per modality.")
        mapping[name.lower()] = Path(path)
    return mapping


def _parse_modalities(text: str | None) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(m.strip().lower() for m in text.split(",") if m.strip())
    if not names or len(set(names)) != len(names):
        raise InputError(f"--modalities must be distinct names separated by commas, e.g. dwi,adc; got {text!r}.")
    return names


def _stem(path: Path) -> str:
    name = path.name
    for suffix in NIFTI_SUFFIXES[::-1]:
        name = name.removesuffix(suffix)
    return name


def plan_jobs(
    inputs: Sequence[Path],
    mapping: dict[str, Path],
    modalities: tuple[str, ...] | None,
    checkpoint_modalities: tuple[str, ...] | None,
) -> list[Job]:
    """Expand the command's inputs into cases, and pick the weights of each.

    Args:
        inputs: files and folders given on the command line.
        mapping: the ``-m`` files (one more case when not empty).
        modalities: ``--modalities`` (volume order of 4D files, or which files of a folder to read).
        checkpoint_modalities: the ``--checkpoint`` model's modalities, or ``None`` for the bundled weights.

    Returns:
        one :class:`Job` per case, in input order; a job whose input is unusable carries ``error``.
    """
    from mdanet_sdk.inference import BUNDLED_MODALITIES, kind_for_modalities, refuse_single_3d, volume_count

    jobs: list[Job] = []
    wanted = modalities or checkpoint_modalities
    if mapping:
        # "sub-7_dwi.nii.gz" names case "sub-7": drop the modality suffix of the first file.
        images = {m: p for m, p in mapping.items() if m != BRAIN_MASK_KEY}
        if not images:
            raise InputError("-m names only a brain mask; add the images, e.g. -m dwi=a.nii.gz -m adc=b.nii.gz.")
        first, path = next(iter(images.items()))
        case_id = _stem(path).removesuffix(f"_{first}") or _stem(path)
        source = CaseSource(case_id, images, None, wanted or tuple(images), mapping.get(BRAIN_MASK_KEY))
        jobs.append(Job(case_id, source))
    for path in inputs:
        try:
            if path.is_file():
                count = volume_count(path)
                if count is None:
                    load_volume(path)  # unreadable header: raises InputError saying why
                if count == 1:
                    refuse_single_3d(path, wanted or BUNDLED_MODALITIES["mri"])
                order = wanted or next((m for m in BUNDLED_MODALITIES.values() if len(m) == count), None)
                if order is None:
                    raise InputError(
                        f"{path} holds {count} volumes; the bundled weights read 2 (dwi, adc) or 4 (cbf, cbv, "
                        "mtt, tmax); pass --modalities in the file's order, or --checkpoint."
                    )
                sources = [CaseSource(_stem(path), {FOURD_KEY: path}, None, order)]
            else:
                sources = find_cases(path, modalities=wanted)
        except MDANetError as exc:
            jobs.append(Job(_stem(path), None, error=str(exc), given=path))
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
                "mtt, tmax (CTP); pass --checkpoint for other modalities."
            )
        job.weights = kind or "checkpoint"
    _make_unique(jobs)
    return jobs


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
        seen.add(job.case_id.casefold())


def _file_key(path: Path) -> tuple[Any, ...]:
    """One key per file: the inode of an existing file (hard links, symlinks and ``..`` agree), else the
    resolved path, case-folded where the file system folds case."""
    try:
        st = path.stat()
        return ("inode", st.st_dev, st.st_ino)
    except OSError:
        return ("path", os.path.normcase(os.path.realpath(path)))


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


def refuse_clobbering(jobs: list[Job], report: Path | None = None) -> None:
    """Fail (``job.error``) each case whose output would overwrite an input of any case, another output of the
    run or the report; the inputs are never touched and no output is written twice."""
    inputs = {_file_key(p): (job.case_id, p) for job in jobs for p in _inputs(job)}
    planned: dict[tuple[Any, ...], str] = {}
    if report is not None:
        if _file_key(report) in inputs:
            raise InputError(f"--report {report} is an input file; choose another name for the report.")
        planned[_file_key(report)] = f"the report {report}"
    for job in jobs:
        if job.error is not None:
            continue
        for role, path in job.outputs.items():
            key = _file_key(path)
            if key in inputs:
                case_id, given = inputs[key]
                job.error = (
                    f"its {role} output {path} is the input file {given} of case {case_id}; choose another -o so "
                    "that no input is overwritten."
                )
            elif key in planned:
                job.error = f"its {role} output {path} is also {planned[key]}; choose other output names."
            else:
                planned[key] = f"the {role} output of case {job.case_id}"
                continue
            break


def output_paths(jobs: list[Job], out: Path | None, prob: bool, overlay: Path | None) -> None:
    """Fill each job's ``outputs`` (see the module docstring for the naming rules).

    Raises:
        InputError: ``-o`` or ``--overlay`` names one file but there are several cases.
    """
    single = len(jobs) == 1
    out_is_file = out is not None and out.name.endswith(NIFTI_SUFFIXES)
    if out_is_file and not single:
        raise InputError(f"-o {out} names one file but {len(jobs)} cases were given; pass a folder instead.")
    for job in jobs:
        if out_is_file:
            assert out is not None
            mask = out
        else:
            mask = (out or Path.cwd()) / f"{job.case_id}_seg.nii.gz"
        job.outputs["mask"] = mask
        if prob:
            job.outputs["prob"] = mask.parent / f"{job.case_id}_prob.nii.gz"
        if overlay is not None:
            if overlay.suffix.lower() != ".png":
                job.outputs["overlay"] = overlay / f"{job.case_id}_overlay.png"
            elif single:
                job.outputs["overlay"] = overlay
            else:
                job.outputs["overlay"] = overlay.with_name(f"{overlay.stem}_{job.case_id}.png")


def _write(result: Any, outputs: dict[str, Path]) -> None:
    """Write a result's files; on any failure remove those already written (no partial output)."""
    mask, prob = result.save(outputs["mask"], outputs.get("prob"))
    if "overlay" in outputs:
        try:
            result.save_overlay(outputs["overlay"])
        except BaseException:
            for path in (mask, prob):
                if path is not None:
                    path.unlink(missing_ok=True)
            raise


@contextmanager
def _progress(quiet: bool, n_cases: int) -> Iterator[Callable[[str, str, int], None] | None]:
    """A rich progress display over cases and slices, as a ``predict_many`` progress callback."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err_console, transient=True,
    ) as bar:
        cases = bar.add_task("cases", total=n_cases)
        slices = bar.add_task("slices", total=0)

        def update(event: str, case_id: str, n: int) -> None:
            if event == "loaded":
                bar.update(slices, total=(bar.tasks[slices].total or 0) + n)
            elif event == "slices":
                bar.advance(slices, n)
            else:
                bar.advance(cases)

        yield update


def _run_group(
    seg: Any, group: list[Job], progress: Callable[[str, str, int], None] | None, failed: dict[str, str], quiet: bool
) -> list[Any]:
    """Segment the jobs of one model and write their outputs; record failures in ``failed``.

    Returns:
        the :class:`~mdanet_sdk.report.CaseReport` of each case written, in order.
    """
    if not quiet:
        console.print(
            f"model {seg.name} on {seg.device} ({seg.precision}), modalities {', '.join(seg.modalities)}",
            highlight=False, markup=False,
        )
        for job in group:
            assert job.source is not None
            order = job.source.modalities or tuple(job.source.paths)
            console.print(f"  {job.case_id}: reading {', '.join(order)}", highlight=False, markup=False)
    reports = []
    results = seg.predict_many([job.source for job in group], errors="yield", progress=progress)
    done = 0
    try:
        for result, job in zip(results, group):
            done += 1
            if not result.ok:
                failed[job.case_id] = result.error
                continue
            try:
                _write(result, job.outputs)
            except (MDANetError, OSError) as exc:
                failed[job.case_id] = str(exc)
                continue
            result.report.case_id = job.case_id
            reports.append(result.report)
    except MDANetError as exc:  # the model itself failed (e.g. non-finite output): so do its remaining cases
        failed.update((job.case_id, str(exc)) for job in group[done:])
    return reports


def _write_report(reports: list[Any], report: Path | None, failed: dict[str, str]) -> bool:
    """Write the JSON report if one was asked for; a report that cannot be written is one error line (the
    masks are already written). Returns whether it was written."""
    from mdanet_sdk.report import write_json_report

    if report is None:
        return False
    try:
        write_json_report(reports, report, failed)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        line = f"cannot write the report {report} ({reason}); the masks are written."
        err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
        return False
    return True


def _error_line(case_id: str, error: str) -> str:
    """``<case>: <error>``, unless the message already starts by naming the case."""
    return error if error.startswith(f"case {case_id}:") else f"{case_id}: {error}"


@command("segment")
def segment(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(help="Cases: 4D NIfTI files, case folders (ISLES'22/'18, dwi.nii.gz...) or dataset roots."),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("-o", "--out", help="Output folder, or the mask file for one case. Default: current folder."),
    ] = None,
    checkpoint: Annotated[
        list[str] | None,
        typer.Option(
            "--checkpoint", "-c",
            help="Checkpoint file or bundled name (default-mri, default-ctp); repeat for a fold ensemble. "
            "Default: the bundled weights that fit each case.",
        ),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option("--model", help="Exported artefact (mdanet-sdk export, .ts/.pt2) to run instead of a checkpoint."),
    ] = None,
    prob: Annotated[bool, typer.Option("--prob", help="Also write <case>_prob.nii.gz (float32).")] = False,
    tta: Annotated[
        bool | None,
        typer.Option("--tta/--no-tta", help="Average over flipped copies (4x slower). Default: as the checkpoint recommends."),
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Slices per forward pass.")] = 16,
    device: Annotated[str, typer.Option(help="auto (CUDA if present), cpu, cuda, cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16/fp16 on GPU, fp32 on CPU), fp32, fp16, bf16.")] = "auto",
    threshold: Annotated[
        float | None, typer.Option(help="Lesion probability threshold. Default: the checkpoint's, else 0.5.")
    ] = None,
    min_size: Annotated[
        int | None,
        typer.Option("--min-size", min=0, help="Drop lesions smaller than this (voxels). Default: the checkpoint's, else 0."),
    ] = None,
    max_adc_ratio: Annotated[
        float | None,
        typer.Option(
            "--max-adc-ratio", min=0.0,
            help="MRI: drop lesions whose median ADC is above this multiple of the tissue ADC (0: off). "
            "Default: the checkpoint's, else 0.",
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write a JSON report of all cases.")] = None,
    overlay: Annotated[
        Path | None,
        typer.Option("--overlay", help="PNG of the lesion outline (a folder, or a .png name used as stem)."),
    ] = None,
    modality: Annotated[
        list[str] | None,
        typer.Option("-m", "--modality", help="One case from one file per modality: -m dwi=a.nii.gz -m adc=b.nii.gz."),
    ] = None,
    modalities: Annotated[
        str | None, typer.Option("--modalities", help="Order of the volumes in 4D files, e.g. dwi,adc.")
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (for pipelines).")] = False,
    trust: Annotated[
        bool,
        typer.Option(
            "--trust",
            help="Load a checkpoint or artefact that has no integrity record (your own file from an older "
            "mdanet-sdk). Damaged files are refused either way.",
        ),
    ] = False,
) -> None:
    """Segment stroke lesions; write masks (and probability maps, a JSON report, overlays)."""
    from mdanet_sdk.inference import Segmenter
    from mdanet_sdk.report import report_table

    mapping = _parse_mapping(modality or [])
    if not inputs and not mapping:
        raise InputError("no input given; pass case files or folders, or -m dwi=a.nii.gz -m adc=b.nii.gz.")
    options: dict[str, Any] = dict(
        device=device, precision=precision, batch_size=batch_size, tta=tta, threshold=threshold, min_size=min_size,
        max_adc_ratio=max_adc_ratio,
    )
    segmenters: dict[str, Segmenter] = {}
    if checkpoint and model:
        raise InputError("pass either --checkpoint or --model, not both.")
    if checkpoint:
        segmenters["checkpoint"] = Segmenter.from_checkpoint(checkpoint, trust=trust, **options)
    elif model:
        segmenters["checkpoint"] = Segmenter.from_exported(model, trust=trust, **options)
    jobs = plan_jobs(
        inputs or [], mapping, _parse_modalities(modalities),
        segmenters["checkpoint"].modalities if segmenters else None,
    )
    output_paths(jobs, out, prob, overlay)
    refuse_clobbering(jobs, report)

    failed: dict[str, str] = {job.case_id: job.error for job in jobs if job.error is not None}
    reports = []
    with _progress(quiet, len(jobs)) as progress:
        for weights in dict.fromkeys(job.weights for job in jobs if job.error is None):
            group = [job for job in jobs if job.error is None and job.weights == weights]
            try:
                if weights not in segmenters:
                    segmenters[weights] = Segmenter.default(weights, **options)  # type: ignore[arg-type]
            except MDANetError as exc:  # e.g. bundled weights missing: these cases fail, the others go on
                failed.update((job.case_id, str(exc)) for job in group)
                continue
            reports += _run_group(segmenters[weights], group, progress, failed, quiet)

    for job in jobs:
        if job.case_id in failed:
            line = _error_line(job.case_id, failed[job.case_id])
            err_console.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    for case_report in [] if quiet else reports:  # doubts about a case, one line each (and in the report)
        for warning in case_report.warnings:
            err_console.print(f"[bold yellow]warning:[/] {escape(case_report.case_id)}: {escape(warning)}",
                              highlight=False, soft_wrap=True)
    report_written = _write_report(reports, report, failed)
    if not quiet:
        if reports:
            console.print(report_table(reports))
        for job in jobs:
            if job.case_id not in failed:
                written = ", ".join(str(p) for p in job.outputs.values())
                console.print(f"{job.case_id}: {written}", highlight=False, soft_wrap=True, markup=False)
        if report_written:
            console.print(f"report: {report}", highlight=False, soft_wrap=True, markup=False)
    if failed or (report is not None and not report_written):
        raise typer.Exit(1)
