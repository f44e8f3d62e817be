"""The segment section's "today → defaults" comparison (issue 17): one phantom case segmented with the bundled
weights of its modality kind, once by **today's behaviour** (fp32, contiguous memory, batch 16, no compile, no
other optimisation, the C library's default memory allocator behaviour) and once by the Segmenter's
**defaults**, alternately in one run, as a ratio of medians.

Both variants run the public path ``Segmenter.predict(case).save(out)``, which is what ``mdanet-sdk segment``
does per case. Each variant lives in its own process (:class:`VariantProcess`), because one default is
process-wide (:func:`~mdanet_sdk.device.retain_cpu_memory`) and would otherwise speed up today's variant too;
the parent asks them for one call at a time, round-robin (:func:`~mdanet_sdk.bench.timing.measure_interleaved`),
so a busy neighbour slows both alike and only one variant works at a time. ``ratio`` is today's median over the
defaults' median, and ``round_ratio`` the spread of the per-round ratios (each round runs both variants back to
back). What each variant actually ran with (precision, batch size, memory format of the weights, compiled or
not, memory retained or not) is read from the built Segmenter, not from the options passed, so the record says
what was compared even if an option is renamed.
"""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mdanet_sdk.bench.records import VOLUMES, BenchSettings, DefaultsRecord
from mdanet_sdk.bench.runners import Progress, one_line, quiet
from mdanet_sdk.bench.segment import phantom_dataset
from mdanet_sdk.bench.timing import Stats, measure_interleaved
from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import InputError, MDANetError
from mdanet_sdk.metrics import dsc

__all__ = [
    "TODAY_OPTIONS",
    "VariantProcess",
    "variant_segmenter",
    "start_variants",
    "describe_segmenter",
    "bench_defaults",
]

#: The Segmenter options that reproduce today's behaviour (before issue 17): fp32, batch 16, contiguous memory,
#: batch norms not folded, not compiled, freed memory handed back to the kernel, every slice flipped for TTA. The defaults' optimisations are
#: each switched off here by name, so a new one needs a line here too (the test of this module checks that today
#: stays contiguous, fp32, batch 16, eager, memory handed back).
TODAY_OPTIONS: dict[str, Any] = {
    "precision": "fp32",
    "batch_size": 16,
    "channels_last": False,
    "optimize": False,
    "compile": False,
    "retain_memory": False,
    "tta_screen": False,
}


def variant_segmenter(kind: str, device: torch.device, name: str, **common: Any) -> Any:
    """The :class:`~mdanet_sdk.inference.Segmenter` of variant ``name`` around the bundled weights of ``kind``:
    ``"today"`` (:data:`TODAY_OPTIONS`) or ``"defaults"`` (no option but the device: what a user gets), with the
    ``common`` options (``--quick`` turns test-time augmentation off in both, a quarter of the work).

    Raises:
        CheckpointError: the bundled weights are missing or damaged.
    """
    from mdanet_sdk.inference import Segmenter

    options = TODAY_OPTIONS if name == "today" else {}
    return Segmenter.from_checkpoint(f"default-{kind}", device=device, **common, **options)


def _serve(conn: Any, spec: dict[str, Any]) -> None:
    """The child side of a :class:`VariantProcess`: build the variant, then one ``predict(...).save(...)`` per
    ``"run"`` received, answering ``("ok", mask)``, until ``"stop"``. Failures are answered, not raised:
    ``("unavailable", message)`` for the user's kind of error, ``("error", one line)`` for any other."""
    torch.set_num_threads(spec["threads"])
    try:
        segmenter = variant_segmenter(spec["kind"], torch.device(spec["device"]), spec["name"], **spec["common"])
        conn.send(("ok", describe_segmenter(segmenter)))
    except MDANetError as exc:
        conn.send(("unavailable", str(exc)))
        return
    while conn.recv() == "run":
        try:
            result = segmenter.predict(spec["source"])
            result.save(Path(spec["out"]))
            conn.send(("ok", result.mask))
        except Exception as exc:  # noqa: BLE001 - answered to the parent, which records it
            conn.send(("error", one_line(exc)))


class VariantProcess:
    """One variant's Segmenter in a spawned child process, called from the parent one case at a time.

    Args:
        spec: ``kind``, ``device``, ``name`` (``"today"`` or ``"defaults"``), ``common`` (options of both),
            ``source`` (the case), ``out`` (where the mask is written), ``threads`` (torch threads).

    Attributes:
        description: what the variant runs with (:func:`describe_segmenter`).
        mask: the mask of the last call.

    Raises:
        MDANetError: the variant cannot be built (e.g. its bundled weights are missing).
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, spec), daemon=True, name=f"bench-{spec['name']}")
        self._process.start()
        child.close()
        self.mask: np.ndarray | None = None
        try:
            self.description: dict[str, Any] = self._answer()
        except BaseException:
            self.close()
            raise

    def _answer(self) -> Any:
        try:
            status, value = self._conn.recv()
        except EOFError:
            raise RuntimeError("the benchmark's variant process ended without answering") from None
        if status == "unavailable":
            raise MDANetError(value)
        if status == "error":
            raise RuntimeError(value)
        return value

    def __call__(self) -> None:
        """One ``predict(case).save(out)`` in the child; the mask is kept in :attr:`mask`."""
        self._conn.send("run")
        self.mask = self._answer()

    def close(self) -> None:
        """Stop the child (it ends on its own when the parent's end of the pipe closes, too)."""
        if self._process.is_alive():
            try:
                self._conn.send("stop")
            except (BrokenPipeError, OSError):
                pass
            self._process.join(timeout=30)
            if self._process.is_alive():
                self._process.kill()
        self._conn.close()


def start_variants(kind: str, device: torch.device, common: dict[str, Any], source: Any, workdir: Path) -> dict:
    """``{"today": VariantProcess, "defaults": VariantProcess}`` for ``kind``; each writes its mask to
    ``workdir/defaults-KIND-NAME.nii.gz``.

    Raises:
        MDANetError: a variant cannot be built (the other one is stopped).
    """
    started: dict[str, VariantProcess] = {}
    try:
        for name in ("today", "defaults"):
            spec = {
                "kind": kind,
                "device": str(device),
                "name": name,
                "common": common,
                "source": source,
                "out": str(workdir / f"defaults-{kind}-{name}.nii.gz"),
                "threads": torch.get_num_threads(),
            }
            started[name] = VariantProcess(spec)
    except BaseException:
        for process in started.values():
            process.close()
        raise
    return started


def describe_segmenter(segmenter: Any) -> dict[str, Any]:
    """What ``segmenter`` runs with, read from it: ``precision``, ``batch`` (``auto`` when chosen per model grid
    by footprint), ``memory_format`` of its first model's convolution weights (``channels_last`` or
    ``contiguous``), ``compiled`` (a ``torch.compile`` wrapper), ``retain_memory`` (freed memory kept in the
    process, :func:`~mdanet_sdk.device.retain_cpu_memory`) and ``tta_screen`` (TTA on, flipping only the slices
    with a lesion candidate)."""
    model = segmenter.predictor.models[0]
    # A weight whose two layouts differ in memory: 1×1 kernels or a single input channel are both at once.
    weight = next(
        (
            p
            for p in getattr(model, "parameters", list)()
            if p.dim() == 4 and p.shape[1] > 1 and p.shape[2:].numel() > 1
        ),
        None,
    )
    channels_last = (
        weight is not None and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    )
    return {
        "precision": segmenter.precision,
        "batch": "auto" if segmenter.batch_size is None else segmenter.batch_size,  # None: chosen by footprint
        "memory_format": "channels_last" if channels_last else "contiguous",
        "compiled": "Optimized" in type(model).__name__,
        "retain_memory": segmenter.retains_memory,
        "tta_screen": segmenter.tta_screen and segmenter.tta,  # a screen without TTA changes nothing
    }


def _compare(
    kind: str,
    source: Any,
    shape: tuple[int, int, int],
    settings: BenchSettings,
    workdir: Path,
    progress: Progress,
    case: str = "phantom",
) -> DefaultsRecord:
    """The record of one case (of modality kind ``kind`` and grid ``shape``): both variants started, timed
    round-robin, masks compared."""
    device = settings.resolved_device()
    record = DefaultsRecord(kind=kind, shape=shape, weights=f"default-{kind}", device=str(device), case=case)
    common: dict[str, Any] = {"tta": False} if settings.quick else {}
    try:
        variants = start_variants(kind, device, common, source, workdir)
    except MDANetError as exc:
        record.status, record.reason = "unavailable", str(exc)
        return record
    progress(f"segment {kind} {case}: today vs defaults ({record.weights}), each in its own process")
    try:
        # Each call waits for its process's answer, so the device work is done when it returns.
        times = measure_interleaved(variants, warmup=max(1, settings.warmup), repeats=max(3, settings.repeats))
    except Exception as exc:  # noqa: BLE001 - one failing variant is reported, the run goes on
        record.status, record.reason = "error", one_line(exc)
        return record
    finally:
        for variant in variants.values():
            variant.close()
    for name, variant in variants.items():
        total = Stats.of([1e3 * t for t in times[name]])
        record.variants[name] = {
            "options": {**common, **TODAY_OPTIONS} if name == "today" else common,
            **variant.description,
            "total_ms": total,
            "slices_per_s": shape[2] / (total.median / 1e3),
        }
    record.ratio = record.variants["today"]["total_ms"].median / record.variants["defaults"]["total_ms"].median
    record.round_ratio = Stats.of([t / d for t, d in zip(times["today"], times["defaults"])])
    today_mask, defaults_mask = variants["today"].mask, variants["defaults"].mask
    if today_mask is not None and defaults_mask is not None:  # set by the warm-up round already
        record.mask_dice = dsc(defaults_mask, today_mask)  # 1 when both are empty: they agree
    return record


def bench_defaults(settings: BenchSettings, workdir: Path, progress: Progress = quiet) -> list[DefaultsRecord]:
    """Today's behaviour against the defaults, one record per modality kind (its phantom of
    :meth:`BenchSettings.volume_shape`, the bundled weights of that kind), then one per case found under each
    of :attr:`BenchSettings.cases` (:func:`user_cases`; a case that cannot be read or segmented is recorded as
    ``unavailable`` with the reason)."""
    from mdanet_sdk.data.cases import find_cases

    records = []
    for kind in VOLUMES:
        source = find_cases(phantom_dataset(kind, settings.volume_shape(kind), 1, workdir / "phantoms"))[0]
        records.append(_compare(kind, source, settings.volume_shape(kind), settings, workdir, progress))
    for i, source in enumerate(user_cases(settings.cases)):
        records.append(_compare_user_case(source, settings, workdir / f"case-{i}", progress))
    return records


def user_cases(paths: tuple[str, ...]) -> list[Any]:
    """The cases under each case or dataset folder of ``paths`` (:func:`~mdanet_sdk.data.cases.find_cases`).

    Raises:
        InputError: a path does not exist or holds no case this package can read.
    """
    from mdanet_sdk.data.cases import find_cases

    sources = []
    for path in map(Path, paths):
        if not path.exists():
            raise InputError(f"benchmark case {path} does not exist; pass a case or dataset folder.")
        sources += find_cases(path)
    return sources


def _case_kind(source: Any) -> str:
    """The modality kind whose bundled weights read every input of ``source`` (MRI first)."""
    held = set(source.modalities or source.paths)
    for kind in ("mri", "ctp"):
        if set(MDANetConfig.from_preset("small", kind).modalities) <= held:
            return kind
    raise InputError(f"case {source.case_id} holds {', '.join(sorted(held))}: neither DWI+ADC nor CTP maps.")


def _compare_user_case(source: Any, settings: BenchSettings, workdir: Path, progress: Progress) -> DefaultsRecord:
    """The record of one case of :attr:`BenchSettings.cases` (``unavailable`` when it cannot be read)."""
    try:
        if source.problem:
            raise InputError(source.problem)
        kind = _case_kind(source)
        shape = next(iter(source.load(label=False).images.values())).shape
    except MDANetError as exc:
        device = str(settings.resolved_device())
        return DefaultsRecord(
            kind="?",
            shape=(0, 0, 0),
            weights="",
            device=device,
            status="unavailable",
            reason=str(exc),
            case=source.case_id,
        )
    workdir.mkdir(parents=True, exist_ok=True)
    return _compare(kind, source, shape, settings, workdir, progress, case=source.case_id)
