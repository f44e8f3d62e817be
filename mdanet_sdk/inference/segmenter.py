"""Segment stroke lesions with trained MDANet weights: the :class:`Segmenter`.

One core runs every entry point (:meth:`Segmenter.predict`, :meth:`Segmenter.predict_arrays`,
:meth:`Segmenter.predict_many`):

1. a background thread reads each case (:func:`mdanet_sdk.data.cases.read_case`), normalises it with the
   checkpoint's :class:`~mdanet_sdk.data.preprocess.PreprocessConfig` (as in training) into a lazy
   :class:`~mdanet_sdk.data.preprocess.SliceStack` and hands it over through a bounded queue, so loading the next
   case overlaps with the model's work;
2. the calling thread cuts the slices of consecutive cases into batches, makes each batch on the model grid only
   when it runs, and averages the softmax lesion probabilities of every model (fold ensemble) and, with TTA, of
   the flips of the slices with a lesion candidate (:class:`~mdanet_sdk.inference.predictor.Predictor`); logits
   with NaN/Inf (damaged weights) raise :class:`~mdanet_sdk.errors.CheckpointError`, never an empty mask;
3. each batch's probabilities are restored to their case's native grid right away (:mod:`.pipeline` does
   1-3); each finished case is post-processed (:mod:`.postprocess`), summarised in a
   :class:`~mdanet_sdk.report.CaseReport` and yielded; :meth:`SegmentationResult.save` writes it back in the
   input's own orientation and geometry.

Cases are yielded in input order and at most ``prefetch`` loaded cases wait, so memory does not grow with the
number of cases; within a case it is O(native volume + one batch on the model grid) (at most
:data:`~mdanet_sdk.data.preprocess.MAX_SLICES` slices are accepted).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch

from mdanet_sdk.data.cases import Case, CaseSource, read_case
from mdanet_sdk.data.preprocess import PreprocessConfig, slice_stack
from mdanet_sdk.data.validate import as_path
from mdanet_sdk.device import resolve_device, resolve_precision, retain_cpu_memory
from mdanet_sdk.errors import InputError, MDANetError
from mdanet_sdk.inference.ensemble import check_ensemble, ensemble_postprocessing
from mdanet_sdk.inference.inputs import CaseInput, case_from_arrays, input_name, refuse_single_3d
from mdanet_sdk.inference.optimize import build_networks
from mdanet_sdk.inference.pipeline import CaseStream, Loaded, Pending
from mdanet_sdk.inference.postprocess import PostprocessConfig
from mdanet_sdk.inference.precision_check import MIN_PROBE_DICE, reduced_precision_agrees
from mdanet_sdk.inference.predictor import TTA_SCREEN, Predictor, check_run_options
from mdanet_sdk.inference.provenance import WeightsOrigin
from mdanet_sdk.inference.results import FailedCase, SegmentationResult, finish_case
from mdanet_sdk.report import results_digest
from mdanet_sdk.train.checkpoint import Checkpoint, load_checkpoint

__all__ = ["Segmenter"]

logger = logging.getLogger(__name__)


def _setting(name: str, doc: str) -> Any:
    """A property of :class:`Segmenter` that reads, and on assignment updates, one of its :attr:`settings`."""

    def get(self: "Segmenter") -> Any:
        return getattr(self.settings, name)

    def update(self: "Segmenter", value: Any) -> None:
        self.settings = self.settings.updated(**{name: value})

    return property(get, update, doc=doc)


class Segmenter:
    """Lesion segmentation with one checkpoint, or a fold ensemble of compatible checkpoints.

    Build it with :meth:`from_checkpoint` or :meth:`default`; then :meth:`predict`, :meth:`predict_arrays`
    or :meth:`predict_many`.

    Args:
        checkpoints: loaded checkpoints; several are a fold ensemble and must share the model's modalities
            and the preprocessing.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
        precision: ``"auto"`` (bf16, or fp16 where unsupported, on CUDA; on a CPU bf16 where it computes bf16
            natively (:func:`~mdanet_sdk.device.cpu_has_native_bf16`), else fp32), ``"fp32"``, ``"fp16"``,
            ``"bf16"`` (autocast; probabilities are always computed in fp32). When ``auto`` picks a reduced
            precision, the models are first checked on a built-in probe
            (:mod:`~mdanet_sdk.inference.precision_check`): if its mask differs from fp32's (Dice < 0.99)
            they run in fp32, with a warning (:attr:`precision_note` says why).
        batch_size: slices per forward pass; ``None`` (default): chosen from the activation footprint of the
            model grid (:func:`~mdanet_sdk.inference.optimize.auto_batch_size`: 16 for the bundled weights).
        channels_last: run the models in channels_last memory order; ``None`` (default): on a CPU.
        optimize: fold the batch norms into the convolutions (same function up to float rounding); applies
            to networks built here, not to ``models`` given.
        compile: ``torch.compile`` the networks built here: tens of seconds of compilation on a CPU before the
            first batch (once per batch shape), then faster; pays for many cases, not for one.
        cuda_graphs: replay each batch shape's forward from a CUDA graph (:mod:`~mdanet_sdk.inference.cuda_graphs`;
            a network that cannot be captured runs eagerly, with a warning); ``None`` (default): on CUDA unless
            ``compile``.
        retain_memory: keep freed tensor memory in the process for the next batch instead of returning it to
            the kernel (:func:`~mdanet_sdk.device.retain_cpu_memory`, process-wide, glibc); ``None`` (default):
            on a CPU.
        tta: average over the 4 in-plane flips (none, H, W, both).
        tta_screen: with TTA, flip only the slices whose un-flipped probability reaches a quarter of the threshold
            somewhere (:data:`~mdanet_sdk.inference.predictor.TTA_SCREEN`; the others keep it: the same mask in
            practice, less work). ``False`` flips every slice.
        threshold: a voxel is lesion when its probability is above this.
        min_size: lesions of fewer voxels are removed (26-connectivity); 0 keeps all.
        max_adc_ratio: lesions whose median ADC is above this multiple of the case's parenchymal ADC are
            removed (:func:`keep_restricted_lesions`; models with an ``adc`` input); 0 keeps all.
            ``tta``, ``threshold``, ``min_size`` and ``max_adc_ratio`` left at ``None`` take the values the
            checkpoints recommend in ``meta["inference"]`` (see :func:`choose_postprocessing`; an ensemble whose
            checkpoints disagree is refused until they are set), else ``False``, ``0.5``, ``0``, ``0``.
        prefetch: cases loaded ahead by the background thread.
        ops: implementation of the MDANet operators: ``"auto"`` (native kernels when built), ``"native"``,
            ``"reference"`` (pure PyTorch); it changes speed, not results beyond float rounding.
        models: already loaded networks ``(B, C, H, W) -> logits``, one per checkpoint, used instead of
            building them from the checkpoints (:meth:`from_exported` passes an export artefact).

    Attributes:
        device: the :class:`torch.device` used (also logged at INFO level).
        precision: the precision used.
        precision_note: why ``precision="auto"`` fell back to fp32 (the probe check), else ``""``.
        retains_memory: whether this Segmenter made the process keep freed memory
            (:func:`~mdanet_sdk.device.retain_cpu_memory`).
        modalities: the model's input modalities in channel order, e.g. ``("dwi", "adc")``.
        model_config: the :class:`~mdanet_sdk.config.MDANetConfig` of the (first) checkpoint.
        preprocess: the checkpoint's :class:`~mdanet_sdk.data.preprocess.PreprocessConfig`.
        name: the checkpoint name(s), e.g. ``"default-mri"`` or ``"fold0+fold1"``.
        weights_sha256: the SHA-256 of each checkpoint file (of the artefact for :meth:`from_exported`),
            computed once here; ``None`` for a checkpoint that came from no file.
        notice: :data:`~mdanet_sdk.inference.provenance.SYNTHETIC_NOTICE` when any of the weights were trained
            on synthetic phantoms (:func:`~mdanet_sdk.inference.provenance.trained_on_synthetic`), else ``""``;
            every report carries it.
    """

    def __init__(
        self,
        checkpoints: Sequence[Checkpoint],
        *,
        device: str | torch.device = "auto",
        precision: str = "auto",
        batch_size: int | None = None,
        tta: bool | None = None,
        threshold: float | None = None,
        min_size: int | None = None,
        max_adc_ratio: float | None = None,
        prefetch: int = 2,
        ops: str = "auto",
        models: Sequence[Callable[[torch.Tensor], torch.Tensor]] | None = None,
        channels_last: bool | None = None,
        optimize: bool = True,
        compile: bool = False,
        retain_memory: bool | None = None,
        cuda_graphs: bool | None = None,
        tta_screen: bool = True,
    ) -> None:
        _check_options(checkpoints, batch_size, prefetch, tta_screen)
        first = checkpoints[0]
        given = {"tta": tta, "threshold": threshold, "min_size": min_size, "max_adc_ratio": max_adc_ratio}
        settings = ensemble_postprocessing(checkpoints, given)
        check_ensemble(checkpoints)
        device_ = resolve_device(device)
        self.prefetch = prefetch
        self.model_config = first.model_config
        self.modalities: tuple[str, ...] = first.model_config.modalities
        self.preprocess: PreprocessConfig = first.preprocess
        origin = WeightsOrigin.of(checkpoints)
        self.name, self.model_version, self.weights_sha256 = origin.name, origin.model_version, origin.weights_sha256
        self.notice = origin.notice
        channels_last = device_.type == "cpu" if channels_last is None else channels_last
        self.retains_memory = (
            device_.type == "cpu" if retain_memory is None else retain_memory
        ) and retain_cpu_memory()
        built = {"fold": optimize, "channels_last": channels_last, "compile": compile}
        built["cuda_graphs"] = not compile if cuda_graphs is None else cuda_graphs
        nets = list(models) if models is not None else build_networks(checkpoints, device_, ops=ops, **built)
        # One name per model, to say which one is broken (numbered when models were given without one each).
        numbered = [f"{self.name} #{i + 1}" for i in range(len(nets))]
        self.predictor = Predictor(
            nets,
            origin.names if len(origin.names) == len(nets) else numbered,
            device_,
            resolve_precision(precision, device_, inference=True),
            PostprocessConfig(),
            batch_size,
            channels_last=channels_last,
            config=first.model_config,
            tta_screen=TTA_SCREEN if tta_screen else 0.0,
        )
        self.settings = settings  # checked against the model's inputs
        self.precision_note = ""
        if precision == "auto" and self.precision != "fp32":
            self._check_auto_precision()
        logger.info(
            "mdanet-sdk Segmenter: %s on %s (%s), %d model(s), %s, TTA screen %s",
            *(self.name, self.device, self.precision, len(nets), settings, "on" if tta_screen else "off"),
        )

    def _check_auto_precision(self) -> None:
        """Keep fp32 when the precision ``auto`` chose changes the mask of the built-in probe (Dice < 0.99)."""
        agrees, dice = reduced_precision_agrees(self.predictor, self.modalities, self.preprocess, self.weights_sha256)
        if not agrees:
            self.precision_note = (
                f"{self.precision} changed this model's mask on the built-in probe (Dice {dice:.3f} against fp32, "
                f"below {MIN_PROBE_DICE}), so it runs in fp32; pass precision='{self.precision}' to force it."
            )
            logger.warning("mdanet-sdk: %s", self.precision_note)
            self.predictor.precision = "fp32"

    # -- settings (held by the predictor) ----------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        """The :class:`torch.device` the models run on."""
        return self.predictor.device

    @property
    def precision(self) -> str:
        """The resolved precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``."""
        return self.predictor.precision

    @property
    def batch_size(self) -> int | None:
        """Slices per forward pass: the one given, or the automatic choice for the checkpoint's model grid;
        ``None`` when automatic and the grid depends on each case (a checkpoint without a preprocessing
        ``size``). Assign ``None`` to go back to automatic."""
        if self.predictor.batch_size is None and self.preprocess.size is not None:
            side = -(-self.preprocess.size // self.preprocess.multiple) * self.preprocess.multiple
            return self.predictor.batch_for((side, side))
        return self.predictor.batch_size

    @batch_size.setter
    def batch_size(self, batch_size: int | None) -> None:
        if batch_size is not None and batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}.")
        self.predictor.batch_size = batch_size

    @property
    def channels_last(self) -> bool:
        """Whether the models run in channels_last memory order."""
        return self.predictor.channels_last

    @property
    def tta_screen(self) -> bool:
        """Whether TTA flips only the slices with a lesion candidate (see the ``tta_screen`` argument)."""
        return self.predictor.tta_screen > 0

    @property
    def results_digest(self) -> str:
        """What decides this Segmenter's masks (weights, modalities, post-processing), as each result's
        :attr:`~mdanet_sdk.report.CaseReport.made_with` names it."""
        return results_digest(self.weights_sha256, self.modalities, self.settings.to_dict())

    @property
    def settings(self) -> PostprocessConfig:
        """TTA and post-processing in use (the checkpoint's recommendation overridden by the caller's); assign a
        new one, or one setting (``seg.threshold = 0.4``), to change them; values are checked either way."""
        return self.predictor.settings

    @settings.setter
    def settings(self, settings: PostprocessConfig) -> None:
        if settings.max_adc_ratio > 0 and "adc" not in self.modalities:
            raise InputError(
                f"max_adc_ratio needs a model with an adc input; got {settings.max_adc_ratio} for a model reading "
                f"{', '.join(self.modalities)}."
            )
        self.predictor.settings = settings

    tta = _setting("tta", "Whether TTA averages the 4 in-plane flips; assign to change it.")
    threshold = _setting("threshold", "A voxel is lesion when its probability is above this; assign to change it.")
    min_size = _setting("min_size", "Lesions of fewer voxels are removed; assign to change it.")
    max_adc_ratio = _setting("max_adc_ratio", "The restricted-diffusion gate (0: off); assign to change it.")

    # -- construction ---------------------------------------------------------------------------------
    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        trust: bool = False,
        **options: Any,
    ) -> "Segmenter":
        """Load one checkpoint, or a list of fold checkpoints to ensemble.

        Args:
            path: a checkpoint file or bundled name (``"default-mri"``, ``"default-ctp"``), or a list of them.
            device: see :class:`Segmenter`.
            precision: see :class:`Segmenter`.
            trust: load a checkpoint that carries no integrity record (written by an older mdanet-sdk or by
                hand); damaged files are refused either way (:func:`~mdanet_sdk.train.checkpoint.load_checkpoint`).
            options: ``batch_size``, ``tta``, ``threshold``, ``min_size``, ``max_adc_ratio``, ``prefetch``, ``ops``,
                ``channels_last``, ``optimize``, ``compile``, ``retain_memory``, ``cuda_graphs``, ``tta_screen``.

        Raises:
            CheckpointError: a file is missing, damaged, not a checkpoint, or the folds are incompatible.
        """
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        checkpoints = [load_checkpoint(p, trust=trust) for p in paths]
        return cls(checkpoints, device=device, precision=precision, **options)

    @classmethod
    def default(cls, kind: Literal["mri", "ctp"] = "mri", **options: Any) -> "Segmenter":
        """The bundled weights: ``"mri"`` (ISLES'22 DWI+ADC, ``default-mri``) or ``"ctp"`` (ISLES'18, ``default-ctp``).

        Args:
            kind: ``"mri"`` or ``"ctp"``.
            options: as for :meth:`from_checkpoint` (``device``, ``precision``, ``batch_size``...).
        """
        if kind not in ("mri", "ctp"):
            raise InputError(f"kind must be 'mri' or 'ctp', got {kind!r}.")
        return cls.from_checkpoint(f"default-{kind}", **options)

    @classmethod
    def from_exported(
        cls,
        path: str | os.PathLike[str],
        device: str | torch.device = "auto",
        precision: str = "auto",
        *,
        trust: bool = False,
        engine: str = "torch",
        **options: Any,
    ) -> "Segmenter":
        """Run an artefact of ``mdanet-sdk export`` (TorchScript, ExportedProgram or TensorRT).

        Pre- and post-processing are those of the eager model; the model config and the preprocessing come
        from the file (:func:`mdanet_sdk.export.load_artifact`).

        Args:
            path: the ``.ts`` / ``.pt2`` artefact.
            device: see :class:`Segmenter` (TensorRT artefacts need CUDA).
            precision: ``"auto"`` or the artefact's own precision, which it always computes in.
            trust: load an artefact that carries no integrity record (see :func:`mdanet_sdk.export.load_artifact`).
            engine: ``"torch"`` (in this process) or ``"libmdanet"`` (TorchScript artefacts through the C API's
                engine, :mod:`mdanet_sdk.export.engine`: the same masks).
            options: ``batch_size``, ``tta``, ``threshold``, ``min_size``, ``max_adc_ratio``, ``prefetch``.

        Raises:
            CheckpointError: not an artefact, damaged, unsafe, or from a newer mdanet-sdk.
            BackendUnavailableError: it needs the native ops, CUDA or TensorRT, which are missing here.
            InputError: ``precision`` differs from the artefact's.
        """
        from mdanet_sdk.export.engine import open_artifact, refuse_eager_options

        refuse_eager_options(options)
        artifact = open_artifact(path, resolve_device(device), trust=trust, engine=engine)
        if precision not in ("auto", artifact.precision):
            raise InputError(
                f"{artifact.path.name} computes in {artifact.precision}; drop --precision or export it again with "
                f"--precision {precision}."
            )
        described = Checkpoint(
            artifact.model_config,
            PreprocessConfig.from_dict(artifact.preprocess),
            {},
            dict(artifact.meta.get("checkpoint", {})),
            artifact.path,
        )
        # precision fp32: no autocast around the artefact, whose dtypes are fixed inside it.
        return cls([described], device=artifact.device, precision="fp32", models=[artifact], **options)

    def __repr__(self) -> str:
        return (
            f"Segmenter({self.name!r}, modalities={self.modalities}, device={str(self.device)!r}, "
            f"precision={self.precision!r}, batch_size={self.batch_size}, channels_last={self.channels_last}, "
            f"tta={self.tta}, tta_screen={self.tta_screen})"
        )

    # -- entry points -----------------------------------------------------------------------------------
    def predict(self, case: CaseInput, *, modalities: Sequence[str] | None = None) -> SegmentationResult:
        """Segment one case.

        Args:
            case: a 4D NIfTI (volumes in the model's modality order unless ``modalities`` says otherwise), an
                ISLES'22/ISLES'18/generic case folder, a mapping modality → file, a ``CaseSource`` or a
                ``Case``.
            modalities: the order of the volumes in a 4D file (e.g. ``("adc", "dwi")``).

        Raises:
            InputError: the case cannot be read (missing modality, corrupt file, mismatched geometry...).
        """
        (result,) = self.predict_many([case], modalities=modalities)
        assert isinstance(result, SegmentationResult)
        return result

    def predict_arrays(
        self, images: Mapping[str, np.ndarray], affine: np.ndarray, *, case_id: str = "arrays"
    ) -> SegmentationResult:
        """Segment a case given as arrays, e.g. ``predict_arrays({"dwi": dwi, "adc": adc}, affine)``.

        Args:
            images: modality → ``(X, Y, Z)`` array, all of one shape, in any voxel order that ``affine``
                describes (as ``nibabel`` gives them).
            affine: 4x4 voxel-to-world matrix in mm.
            case_id: name used in the report.

        Returns:
            the result; its ``mask`` and ``probability`` have the arrays' shape and voxel order.
        """
        return self.predict(case_from_arrays(images, affine, case_id, self.modalities))

    def predict_many(
        self,
        cases: Iterable[CaseInput],
        *,
        modalities: Sequence[str] | None = None,
        errors: Literal["raise", "yield"] = "raise",
        progress: Callable[[str, str, int], None] | None = None,
    ) -> Iterator[SegmentationResult | FailedCase]:
        """Segment many cases, yielding each result as soon as it is ready, in input order.

        Slices of consecutive cases share batches; the next case is read and preprocessed in a background
        thread while the model works (at most ``prefetch`` cases ahead); ``cases`` may be a lazy iterable.

        Args:
            cases: inputs as for :meth:`predict`.
            modalities: the order of the volumes in 4D files.
            errors: ``"raise"``: the first case that cannot be read raises its error; ``"yield"``: it is
                yielded as a :class:`FailedCase` and the others go on. Either way a model that produces
                NaN/Inf raises :class:`~mdanet_sdk.errors.CheckpointError` (it would fail every case), before
                the result of any case in that batch is yielded, so no partial result of it is ever written;
                the results yielded before it are complete.
            progress: called as ``progress(event, case_id, n)`` with ``("loaded", id, n_slices)`` when a case
                reaches the model, ``("slices", id, n)`` after each batch, ``("done", id, 0)`` and
                ``("failed", id, 0)``.

        Yields:
            a :class:`SegmentationResult` per case, or a :class:`FailedCase` (``errors="yield"`` only).

        Raises:
            CheckpointError: a model produced NaN/Inf (damaged weights).
        """
        if errors not in ("raise", "yield"):
            raise InputError(f"errors must be 'raise' or 'yield', got {errors!r}.")
        notify = progress or (lambda event, case_id, n: None)
        stream = CaseStream(
            lambda item: self._prepare(item, modalities),
            self.predictor.probabilities,
            self._finish,
            self.predictor.batch_for,
            self.prefetch,
        )
        yield from stream.run(cases, errors, notify)

    # -- background loading ----------------------------------------------------------------------------
    def _load(self, item: CaseInput, modalities: Sequence[str] | None) -> Case:
        if isinstance(item, Case):
            return item
        # Labels are for train and evaluate: inference reads (and so validates) no label file.
        if isinstance(item, CaseSource):
            return item.load(label=False)
        if isinstance(item, Mapping):
            return read_case(item, modalities=self.modalities, label=False)
        refuse_single_3d(as_path(item), self.modalities, diffusion=modalities is None)
        return read_case(item, modalities=modalities or self.modalities, label=False)

    def _prepare(self, item: CaseInput, modalities: Sequence[str] | None) -> Loaded | FailedCase:
        """Background thread: read and normalise one case (its slices reach the model grid batch by batch)."""
        started = time.perf_counter()
        try:
            case = self._load(item, modalities)
            return Loaded(case, slice_stack(case.images, self.modalities, self.preprocess, case.brain_mask), started)
        except MDANetError as exc:
            return FailedCase(input_name(item), str(exc), exc)

    # -- model ---------------------------------------------------------------------------------------------
    def probabilities(self, x: torch.Tensor, *, source: str = "these slices") -> torch.Tensor:
        """Lesion probability ``(B, H, W)`` of preprocessed slices ``(B, C, H, W)``
        (:meth:`~mdanet_sdk.inference.predictor.Predictor.probabilities`)."""
        return self.predictor.probabilities(x, source)

    def postprocess(
        self,
        probability: np.ndarray,
        images: Mapping[str, np.ndarray],
        head: np.ndarray | None = None,
        parenchyma: np.ndarray | None = None,
    ) -> np.ndarray:
        """This segmenter's mask of a native-grid ``(X, Y, Z)`` probability map
        (:meth:`~mdanet_sdk.inference.predictor.Predictor.mask`)."""
        return self.predictor.mask(probability, images, head, parenchyma)

    def _finish(self, pending: Pending) -> SegmentationResult:
        """Mask and report of a case whose slices are all predicted (and restored to its native grid)."""
        loaded = pending.loaded
        geometry = loaded.geometry
        mask = self.postprocess(pending.probability, loaded.case.images, geometry.head, geometry.parenchyma)
        return finish_case(self, loaded, mask, pending.probability)


def _check_options(checkpoints: Sequence[Checkpoint], batch_size: int | None, prefetch: int, tta_screen: bool) -> None:
    """Refuse a Segmenter without checkpoints, or with a batch size, prefetch or TTA screen out of range."""
    if not checkpoints:
        raise InputError("no checkpoint given; pass at least one checkpoint path or bundled name.")
    check_run_options(batch_size, prefetch, tta_screen)
