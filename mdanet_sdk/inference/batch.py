"""Files in, files out: :func:`segment`, everything ``mdanet-sdk segment`` does, as one Python call.

It plans the cases of the inputs (:mod:`.planning`), loads the weights each needs (a given checkpoint or
export artefact, else the bundled weights that fit each case), streams every group of cases through its
:class:`~mdanet_sdk.inference.Segmenter`, writes each case's outputs (all of them or none) and, when asked,
a JSON report of the run. One case that fails never stops the others.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mdanet_sdk._text import printable
from mdanet_sdk.device import resolve_device, resolve_precision
from mdanet_sdk.errors import InputError, MDANetError
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.planning import (
    Job,
    SegmentInput,
    output_paths,
    parse_modalities,
    plan_jobs,
    refuse_clobbering,
)
from mdanet_sdk.inference.results import FailedCase, SegmentationResult
from mdanet_sdk.inference.segmenter import Segmenter
from mdanet_sdk.ops import IMPLEMENTATIONS
from mdanet_sdk.report import CaseReport, write_json_report

__all__ = ["segment", "SEGMENTER_OPTIONS"]

#: ``progress(event, case_id, n)``, as for :meth:`Segmenter.predict_many`, plus ``("model", text, n_cases)``
#: before each group of cases: ``text`` (lines) says which model reads which modalities of which case.
Progress = Callable[[str, str, int], None]


def segment(
    inputs: SegmentInput | Sequence[SegmentInput],
    out: str | os.PathLike[str] | None = None,
    *,
    checkpoint: str | os.PathLike[str] | Sequence[str | os.PathLike[str]] | None = None,
    model: str | os.PathLike[str] | None = None,
    prob: bool = False,
    overlay: str | os.PathLike[str] | None = None,
    report: str | os.PathLike[str] | None = None,
    modalities: str | Sequence[str] | None = None,
    trust: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Iterator[SegmentationResult | FailedCase]:
    """Segment files, case folders and dataset roots; write each case's mask (and probability map, overlay).

    Example: ``for r in mdanet_sdk.segment(["sub-01/", "ctp_case.nii.gz"], "masks/"): print(r.case_id, r.ok)``.

    Args:
        inputs: one input or a list: 4D NIfTI files, case folders (ISLES'22, ISLES'18, ``dwi.nii.gz``...),
            dataset roots, or mappings modality -> file such as ``{"dwi": "a.nii.gz", "adc": "b.nii.gz"}``.
        out: output folder (default: the current folder), or the mask file itself for a single case.
        checkpoint: checkpoint file(s) or bundled name(s); several are a fold ensemble. Default: the bundled
            weights that fit each case (``default-mri`` for DWI+ADC, ``default-ctp`` for CBF, CBV, MTT, Tmax).
        model: an export artefact (``.ts``/``.pt2``) to run instead of a checkpoint.
        prob: also write ``<case>_prob.nii.gz`` (float32).
        overlay: a folder for ``<case>_overlay.png`` outline images, or one ``.png`` name used as a stem.
        report: a JSON report of all cases, written at the end (:func:`~mdanet_sdk.report.write_json_report`).
        modalities: the volume order of 4D files (``"dwi,adc"`` or a list).
        trust: load a checkpoint or artefact without an integrity record (see :func:`load_checkpoint`).
        progress: called as described at :data:`Progress`.
        options: for the :class:`Segmenter`: ``device``, ``precision``, ``batch_size``, ``tta``, ``threshold``,
            ``min_size``, ``max_adc_ratio``, ``prefetch``, ``ops``.

    Returns:
        an iterator (the cases run as it is consumed, e.g. by ``list(...)``) that yields per case a
        :class:`SegmentationResult` whose files are written (``result.outputs``: role -> path), or a
        :class:`FailedCase` saying why it was not, in input order within each model. Case ids are unique within
        the run (repeats get ``-2``...). The report is written when the iterator is exhausted.

    Raises:
        InputError: at the call: no input, both ``checkpoint`` and ``model``, an unknown or out-of-range
            option, one output file for several cases, a report that would overwrite an input; at the end of
            the iteration: a report that cannot be written (the masks are written then).
        CheckpointError: a given checkpoint or artefact cannot be loaded.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike, Mapping)) else list(inputs)
    if not items:
        raise InputError("no input given; pass case files or folders, or a mapping {'dwi': ..., 'adc': ...}.")
    if checkpoint and model:
        raise InputError("pass either a checkpoint or an exported model, not both.")
    _check_options(options)
    segmenters: dict[str, Segmenter] = {}
    if checkpoint:
        segmenters["checkpoint"] = Segmenter.from_checkpoint(checkpoint, trust=trust, **options)
    elif model:
        segmenters["checkpoint"] = Segmenter.from_exported(model, trust=trust, **options)
    given = segmenters["checkpoint"].modalities if segmenters else None
    jobs = plan_jobs(items, parse_modalities(modalities), given)
    report_path = Path(report) if report is not None else None
    output_paths(jobs, Path(out) if out is not None else None, prob, Path(overlay) if overlay is not None else None)
    refuse_clobbering(jobs, report_path)
    return _run(jobs, segmenters, options, progress or _silent, report_path)


#: The :class:`Segmenter` options :func:`segment` passes on.
SEGMENTER_OPTIONS = (
    "device",
    "precision",
    "batch_size",
    "tta",
    "threshold",
    "min_size",
    "max_adc_ratio",
    "prefetch",
    "ops",
)


def _check_options(options: dict[str, Any]) -> None:
    """Refuse unknown options and bad values before any case runs (a bad option would fail every case)."""
    unknown = sorted(set(options) - set(SEGMENTER_OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; use {', '.join(SEGMENTER_OPTIONS)}.")
    resolve_precision(options.get("precision", "auto"), resolve_device(options.get("device", "auto")))
    settings = {k: options.get(k) for k in ("tta", "threshold", "min_size", "max_adc_ratio")}
    PostprocessConfig().updated(**settings)  # raises InputError for out-of-range values
    for name in ("batch_size", "prefetch"):
        if name in options and (not isinstance(options[name], int) or options[name] < 1):
            raise InputError(f"{name} must be a whole number >= 1, got {options[name]!r}.")
    if options.get("ops", "auto") not in IMPLEMENTATIONS:
        raise InputError(f"ops must be one of {', '.join(IMPLEMENTATIONS)}, got {options['ops']!r}.")


def _silent(event: str, case_id: str, n: int) -> None:
    return None


def _run(
    jobs: list[Job],
    segmenters: dict[str, Segmenter],
    options: dict[str, Any],
    progress: Progress,
    report: Path | None,
) -> Iterator[SegmentationResult | FailedCase]:
    """Yield the cases that failed planning, then each group's cases as they finish; write the report last."""
    reports: list[CaseReport] = []
    failed: dict[str, str] = {}
    position = {job.case_id: i for i, job in enumerate(jobs)}
    # Cases that failed planning are yielded where they stand in the input, between the others (whose groups
    # run one model after the other), so a single-model run reports in input order.
    unusable = deque(job for job in jobs if job.error is not None)

    def earlier(case_id: str | None) -> Iterator[FailedCase]:
        """The unusable cases before ``case_id`` in the input (all that are left for ``None``)."""
        end = len(jobs) if case_id is None else position[case_id]
        while unusable and position[unusable[0].case_id] < end:
            job = unusable.popleft()
            failed[job.case_id] = str(job.error)
            yield FailedCase(job.case_id, str(job.error), InputError(str(job.error)))

    for weights in dict.fromkeys(job.weights for job in jobs if job.error is None):
        group = [job for job in jobs if job.error is None and job.weights == weights]
        try:
            if weights not in segmenters:
                segmenters[weights] = Segmenter.default(weights, **options)  # type: ignore[arg-type]
            outcomes: Iterator[SegmentationResult | FailedCase] = _run_group(segmenters[weights], group, progress)
        except MDANetError as exc:  # e.g. bundled weights missing: these cases fail, the others go on
            outcomes = iter([FailedCase(job.case_id, str(exc), exc) for job in group])
        for outcome in outcomes:
            yield from earlier(outcome.case_id)
            if isinstance(outcome, SegmentationResult):
                reports.append(outcome.report)
            else:
                failed[outcome.case_id] = outcome.error
            yield outcome
    yield from earlier(None)  # the rest
    if report is not None:
        try:
            write_json_report(reports, report, failed)
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise InputError(f"cannot write the report {report} ({reason}); the masks are written.") from None


def _run_group(seg: Segmenter, group: list[Job], progress: Progress) -> Iterator[SegmentationResult | FailedCase]:
    """Segment the cases of one model and write their outputs; a model that fails fails its remaining cases."""
    lines = [f"model {seg.name} on {seg.device} ({seg.precision}), modalities {', '.join(seg.modalities)}"]
    # Ids are file names, which may hold newlines: escaped, so that each case stays one line of this text.
    lines += [f"  {printable(job.case_id)}: reading {', '.join(_order(job))}" for job in group]
    progress("model", "\n".join(lines), len(group))
    results = seg.predict_many(
        [job.source for job in group if job.source is not None], errors="yield", progress=progress
    )
    done = 0
    try:
        for result, job in zip(results, group):
            done += 1
            if isinstance(result, FailedCase):
                yield FailedCase(job.case_id, result.error, result.exception)
                continue
            try:
                _write(result, job.outputs)
            except (MDANetError, OSError) as exc:
                error = exc if isinstance(exc, MDANetError) else InputError(f"cannot write the outputs: {exc}")
                yield FailedCase(job.case_id, str(exc), error)
                continue
            result.report.case_id = job.case_id
            result.outputs = dict(job.outputs)
            yield result
    except MDANetError as exc:  # the model itself failed (e.g. non-finite output): so do its remaining cases
        for job in group[done:]:
            yield FailedCase(job.case_id, str(exc), exc)


def _order(job: Job) -> tuple[str, ...]:
    assert job.source is not None
    return job.source.modalities or tuple(job.source.paths)


def _write(result: SegmentationResult, outputs: dict[str, Path]) -> None:
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
