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
from typing import Any, Union

from mdanet_sdk.device import resolve_device, resolve_precision
from mdanet_sdk.errors import InputError, MDANetError
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.planning import (
    Job,
    SegmentInput,
    attach_brain_mask,
    mapping_text,
    output_paths,
    parse_modalities,
    plan_jobs,
    refuse_clobbering,
    refuse_unwritable,
)
from mdanet_sdk.inference.resume import SkippedCase, earlier_reports, outputs_complete, run_document
from mdanet_sdk.inference.results import FailedCase, SegmentationResult
from mdanet_sdk.inference.predictor import check_run_options
from mdanet_sdk.inference.segmenter import Segmenter
from mdanet_sdk.inference.sharding import (
    Shard,
    ShardsPending,
    barrier,
    current_shard,
    fingerprint,
    merge_reports,
    select,
)
from mdanet_sdk.inference.sharding import shard_report_path
from mdanet_sdk._files import write_json
from mdanet_sdk._text import printable
from mdanet_sdk.ops import IMPLEMENTATIONS

__all__ = ["segment", "SEGMENTER_OPTIONS"]

#: ``progress(event, case_id, n)``: ``("cases", "", n)`` first (the cases this process runs), ``("model", text,
#: n_cases)`` before each group of cases (``text``, lines: which model reads which modalities of which files),
#: ``("loaded", id, n_slices)`` and ``("slices", id, n)`` as for :meth:`Segmenter.predict_many`; once per case,
#: when its outputs are written or it failed: ``("done", id, runtime_ms)``, ``("failed", id, 0)`` or
#: ``("skipped", id, 0)``; ``("note", text, 0)``: a line about the run (its shard, the merged report).
Progress = Callable[[str, str, int], None]
Outcome = Union[SegmentationResult, FailedCase, SkippedCase]


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
    brain_mask: str | os.PathLike[str] | None = None,
    skip_existing: bool = False,
    shard: str | tuple[int, int] | None = None,
    trust: bool = False,
    progress: Progress | None = None,
    **options: Any,
) -> Iterator[Outcome]:
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
        report: a JSON report of all cases, written at the end (:func:`~.resume.run_document`); sharded runs
            also write each shard's (:mod:`.sharding`).
        modalities: the volume order of 4D files (``"dwi,adc"`` or a list); required for a 4D file with a
            ``.bval``/``.bvec`` sidecar (a diffusion series).
        brain_mask: a brain mask (NIfTI on the images' grid) for the single case of the run.
        skip_existing: do not run again the cases whose outputs are all there and whole (see :mod:`.resume`);
            they are yielded first, as :class:`~.resume.SkippedCase`.
        shard: ``"I/N"`` or ``(I, N)``, I counted from 1: run only shard I of N of the cases (:mod:`.sharding`).
            Under ``torchrun`` the shards are the ranks, without this argument.
        trust: load a checkpoint or artefact without an integrity record (see :func:`load_checkpoint`).
        progress: called as described at :data:`Progress`.
        options: for the :class:`Segmenter` (:data:`SEGMENTER_OPTIONS`): ``device``, ``precision``,
            ``batch_size`` (None: by footprint), ``tta``, ``threshold``, ``min_size``, ``max_adc_ratio``,
            ``prefetch``, ``ops``, ``channels_last``, ``optimize``, ``compile``, ``cuda_graphs``, ``tta_screen``.

    Returns:
        an iterator (the cases run as it is consumed, e.g. by ``list(...)``) that yields per case of this
        process a :class:`SegmentationResult` whose files are written (``result.outputs``: role -> path), a
        :class:`FailedCase` saying why it was not, or a :class:`~.resume.SkippedCase`; in input order within each
        model. Case ids are unique within the run (repeats get ``-2``...). The report is written when the
        iterator is exhausted (under ``torchrun``, every rank must exhaust it: the ranks meet to merge).

    Raises:
        InputError: at the call: no input, both ``checkpoint`` and ``model``, an unknown or out-of-range
            option, one output file or brain mask for several cases, a report that would overwrite an input,
            a malformed shard; at the end of the iteration: a report that cannot be written or merged (the
            masks are written then).
        CheckpointError: a given checkpoint or artefact cannot be loaded.
    """
    items = [inputs] if isinstance(inputs, (str, os.PathLike, Mapping)) else list(inputs)
    if not items:
        raise InputError("no input given; pass case files or folders, or a mapping {'dwi': ..., 'adc': ...}.")
    if checkpoint and model:
        raise InputError("pass either a checkpoint or an exported model, not both.")
    split = current_shard(shard)
    if split is not None:
        options["device"] = split.device(options.get("device", "auto"))
    _check_options(options)
    segmenters: dict[str, Segmenter] = {}
    if checkpoint:
        segmenters["checkpoint"] = Segmenter.from_checkpoint(checkpoint, trust=trust, **options)
    elif model:
        segmenters["checkpoint"] = Segmenter.from_exported(model, trust=trust, **options)
    given = segmenters["checkpoint"].modalities if segmenters else None
    jobs = plan_jobs(items, parse_modalities(modalities), given)
    if brain_mask is not None:
        attach_brain_mask(jobs, Path(brain_mask))
    output_paths(jobs, Path(out) if out is not None else None, prob, Path(overlay) if overlay is not None else None)
    # What changes the outputs, for the shards to check that they belong to one run (devices may differ).
    settings = {k: v for k, v in options.items() if k not in _PER_PROCESS}
    settings.update(checkpoint=checkpoint, model=model, prob=prob, overlay=overlay, modalities=modalities)
    target = _Target(Path(report) if report is not None else None, split, jobs, settings)
    refuse_clobbering(jobs, target.paths)
    mine = select(jobs, split) if split is not None else jobs
    return _run(mine, segmenters, options, progress or _silent, target, skip_existing)


class _Target:
    """Where the report of this process goes, and for a sharded run what the merge needs.

    Attributes:
        report: the run's report (the merged one for a sharded run), or ``None``.
        shard: this process's shard, or ``None``.
        order: every case id of the run, in input order.
        run: the run's :func:`~.sharding.fingerprint` (empty without a shard).
    """

    def __init__(self, report: Path | None, shard: Shard | None, jobs: list[Job], settings: dict[str, Any]) -> None:
        self.report, self.shard, self.order = report, shard, [job.case_id for job in jobs]
        self.run = fingerprint(jobs, settings) if shard is not None else ""

    @property
    def own(self) -> Path | None:
        """The report this process writes: the run's, or its shard's."""
        if self.report is None or self.shard is None:
            return self.report
        return shard_report_path(self.report, self.shard.index, self.shard.count)

    @property
    def paths(self) -> list[Path]:
        """Every report file this process may write."""
        return [p for p in dict.fromkeys((self.report, self.own)) if p is not None]


#: Options that may differ between the processes of one run (they do not change the masks).
_PER_PROCESS = ("device", "precision", "batch_size", "prefetch", "ops", "channels_last", "optimize", "compile")


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
    "channels_last",
    "optimize",
    "compile",
    "cuda_graphs",
    "tta_screen",
)


def _check_options(options: dict[str, Any]) -> None:
    """Refuse unknown options and bad values before any case runs (a bad option would fail every case)."""
    unknown = sorted(set(options) - set(SEGMENTER_OPTIONS))
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(unknown)}; use {', '.join(SEGMENTER_OPTIONS)}.")
    resolve_precision(options.get("precision", "auto"), resolve_device(options.get("device", "auto")), inference=True)
    settings = {k: options.get(k) for k in ("tta", "threshold", "min_size", "max_adc_ratio")}
    PostprocessConfig().updated(**settings)  # raises InputError for out-of-range values
    check_run_options(options.get("batch_size"), options.get("prefetch", 1), options.get("tta_screen", True))
    if options.get("ops", "auto") not in IMPLEMENTATIONS:
        raise InputError(f"ops must be one of {', '.join(IMPLEMENTATIONS)}, got {options['ops']!r}.")


def _silent(event: str, case_id: str, n: int) -> None:
    return None


def _run(
    jobs: list[Job],
    segmenters: dict[str, Segmenter],
    options: dict[str, Any],
    progress: Progress,
    target: _Target,
    skip_existing: bool,
) -> Iterator[Outcome]:
    """Yield the skipped cases, then the others as they finish (:func:`_outcomes`); write the report last."""
    progress("cases", "", len(jobs))
    if target.shard is not None:
        progress("note", f"{target.shard.label}: {len(jobs)} of {len(target.order)} cases", 0)
    made_with = {job.case_id: _made_with(job, segmenters, options) for job in jobs if skip_existing and not job.error}
    skipped = [
        SkippedCase(job.case_id, dict(job.outputs))
        for job in jobs
        if skip_existing and job.error is None and outputs_complete(job, made_with[job.case_id])
    ]
    done = {case.case_id for case in skipped}
    for case in skipped:
        progress("skipped", case.case_id, 0)
        yield case
    # The kept cases' entries of the report this run replaces: the new report then lists every case's volumes.
    reports = earlier_reports(target.paths, skipped, made_with) if skipped else []
    failed: dict[str, str] = {}
    todo = [job for job in jobs if job.case_id not in done]
    refuse_unwritable(todo)  # after the skips: a finished read-only folder is skipped, not failed
    for outcome in _outcomes(todo, segmenters, options, progress):
        if isinstance(outcome, SegmentationResult):
            reports.append(outcome.report)
            progress("done", outcome.case_id, round(outcome.report.runtime_s * 1000))
        else:
            failed[outcome.case_id] = outcome.error
            progress("failed", outcome.case_id, 0)
        yield outcome
    if target.report is not None:
        shard = target.shard
        extra = {} if shard is None else {"shard": {"index": shard.index + 1, "count": shard.count, "run": target.run}}
        _write_reports(target, run_document(reports, failed, skipped, extra), progress)


def _segmenter(weights: str, segmenters: dict[str, Segmenter], options: dict[str, Any]) -> Segmenter:
    """The Segmenter of ``weights`` (a bundled kind is loaded once, when first needed)."""
    if weights not in segmenters:
        segmenters[weights] = Segmenter.default(weights, **options)  # type: ignore[arg-type]
    return segmenters[weights]


def _made_with(job: Job, segmenters: dict[str, Segmenter], options: dict[str, Any]) -> str | None:
    """What would make the job's outputs now (:attr:`Segmenter.results_digest`); None if its model cannot load
    (the case then runs, and fails with the reason)."""
    try:
        return _segmenter(job.weights, segmenters, options).results_digest
    except MDANetError:
        return None


def _outcomes(
    jobs: list[Job], segmenters: dict[str, Segmenter], options: dict[str, Any], progress: Progress
) -> Iterator[SegmentationResult | FailedCase]:
    """The cases that failed planning, each where it stands in the input between the others (whose groups run
    one model after the other, so a single-model run reports in input order), and each group's cases."""
    position = {job.case_id: i for i, job in enumerate(jobs)}
    unusable = deque(job for job in jobs if job.error is not None)

    def earlier(case_id: str | None) -> Iterator[FailedCase]:
        """The unusable cases before ``case_id`` in the input (all that are left for ``None``)."""
        end = len(jobs) if case_id is None else position[case_id]
        while unusable and position[unusable[0].case_id] < end:
            job = unusable.popleft()
            yield FailedCase(job.case_id, str(job.error), InputError(str(job.error)))

    for weights in dict.fromkeys(job.weights for job in jobs if job.error is None):
        group = [job for job in jobs if job.error is None and job.weights == weights]
        try:
            outcomes: Iterator[SegmentationResult | FailedCase] = _run_group(
                _segmenter(weights, segmenters, options), group, progress
            )
        except MDANetError as exc:  # e.g. bundled weights missing: these cases fail, the others go on
            outcomes = iter([FailedCase(job.case_id, str(exc), exc) for job in group])
        for outcome in outcomes:
            yield from earlier(outcome.case_id)
            yield outcome
    yield from earlier(None)  # the rest


def _write_reports(target: _Target, doc: dict[str, Any], progress: Progress) -> None:
    """Write this process's report; for a sharded run, merge the shards' reports once all are there.

    Under ``torchrun`` every rank meets at a barrier after writing its own report (even when that failed, so
    that no rank waits for ever), then rank 0 merges; by hand, the shard that finds every report merges.

    Raises:
        InputError: a report cannot be written, or the shard reports cannot be merged.
    """
    own, shard, report = target.own, target.shard, target.report
    assert own is not None and report is not None
    error = None
    try:
        write_json(own, doc, names_as_text=True)
    except OSError as exc:
        error = _report_error(own, exc)
    if shard is not None and shard.distributed:
        barrier()
    if error is not None:
        raise error
    if shard is None or (shard.distributed and shard.index != 0):
        return
    progress("note", f"{shard.label} report: {own}", 0)
    try:
        merged = merge_reports(report, shard.count, target.run, target.order, strict=shard.distributed)
    except OSError as exc:
        raise _report_error(report, exc) from None
    except ShardsPending as pending:
        if pending.foreign:  # a stale report its shard will replace, or a shard run with other settings
            progress(
                "note",
                f"warning: merged report {report} not written: {pending.why}; it is merged when that shard finishes "
                "with this run's cases and settings (rerun it if it already ran with others).",
                0,
            )
        else:
            progress("note", f"merged report {report}: written by the last shard to finish ({pending.why})", 0)
        return
    progress("note", f"merged report: {merged}", 0)


def _report_error(path: Path, exc: OSError) -> InputError:
    reason = exc.strerror or type(exc).__name__
    return InputError(f"cannot write the report {path} ({reason}); the masks are written.")


def _run_group(seg: Segmenter, group: list[Job], progress: Progress) -> Iterator[SegmentationResult | FailedCase]:
    """Segment the cases of one model and write their outputs; a model that fails fails its remaining cases."""
    lines = [f"model {seg.name} on {seg.device} ({seg.precision}), modalities {', '.join(seg.modalities)}"]
    # Ids are file names, which may hold newlines: escaped, so that each case stays one line of this text.
    lines += [f"  {printable(job.case_id)}: reading {printable(mapping_text(job))}" for job in group]
    progress("model", "\n".join(lines), len(group))

    def forward(event: str, case_id: str, n: int) -> None:  # the case's end is told once its files are written
        if event not in ("done", "failed"):
            progress(event, case_id, n)

    results = seg.predict_many(
        [job.source for job in group if job.source is not None], errors="yield", progress=forward
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
