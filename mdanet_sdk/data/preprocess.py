"""Preprocessing shared by training and inference, and its exact inverse.

One implementation serves both directions, so a checkpoint's :class:`PreprocessConfig` reproduces at inference
the slices the model was trained on:

1. **Head mask** (or the caller's brain mask) and
2. **Normalisation** per modality with statistics taken inside that mask (``"relative"`` or ``"zscore"``),
   both on the native grid: :mod:`mdanet_sdk.data.normalize`.
3. **Axial slicing** along Z: ``(X, Y, Z)`` volumes → ``(Z, C, X, Y)``; a slice ``(X, Y)`` is ``(H, W)``. Only an
   in-plane box around the head goes on: the whole slice, unless the head fills less than ``head_fill`` of the field
   of view (:func:`mdanet_sdk.pipeline.slicing.head_box`).
4. **In-plane resampling** (only when ``size`` is set) so that the box's longer in-plane side becomes ``size``,
   keeping the aspect ratio: bilinear with the pixel-area convention of :func:`scipy.ndimage.zoom`'s ``grid_mode=True``
   (pixel areas onto pixel areas, as ``align_corners=False``), linear for images, nearest for labels.
5. **Padding** (centred) to multiples of ``multiple`` (16: the network halves the grid four times), with
   each channel's lowest value (the background) for images and 0 for labels.

:func:`restore_probability` maps lesion probabilities back and sets them to 0 more than 2 voxels outside the
automatic head mask (its edge may miss dark tissue), or anywhere outside a brain mask the caller passed.

:func:`restore` undoes 5, 4 and 3 exactly: it crops the padding and resamples back to the box's native size with the
same pixel-area convention (linear for probabilities, nearest for integer labels), puts the box in its place in the
slice (0 outside it), then puts Z last. Without resampling the round trip is the identity; with it, nearest-label round
trips are exact when the grid is enlarged and lose only boundary pixels when it is shrunk.

The computations are :mod:`mdanet_sdk.pipeline` (torch, scriptable, carried by exported artefacts so that the C
API preprocesses as Python does); this module takes and returns numpy arrays and adds the checks a user sees.

Bounded memory: :func:`slice_stack` does 1-2 on the native grid and returns a :class:`SliceStack` that does 3-5 for any
range of slices (:func:`preprocess_images` takes all of them); :func:`restore_probability_into` restores a range into a
native-grid array. The Segmenter walks both a batch at a time, so a case costs O(native volume), not O(Z × model grid).
Volumes of more than :data:`MAX_SLICES` slices along Z are refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from numbers import Integral, Real
from typing import Any

import numpy as np
import torch

from mdanet_sdk.data.normalize import (
    NORMALIZATIONS,
    NOT_A_RATIO_SCALE,
    NOT_SKULL_STRIPPED,
    RELATIVE_MAX,
    head_mask,
    head_region,
    head_support,
    normalize,
    normalize_relative,
    normalize_volumes,
)
from mdanet_sdk.errors import InputError
from mdanet_sdk.pipeline import slicing

__all__ = [
    "require_modalities",
    "PreprocessConfig",
    "SliceGeometry",
    "preprocess_images",
    "slice_stack",
    "SliceStack",
    "MAX_SLICES",
    "preprocess_label",
    "preprocess_case",
    "restore",
    "restore_probability",
    "restore_probability_into",
    # from mdanet_sdk.data.normalize, importable from here as before
    "head_mask",
    "head_support",
    "normalize",
    "normalize_relative",
    "NORMALIZATIONS",
    "NOT_A_RATIO_SCALE",
    "NOT_SKULL_STRIPPED",
    "RELATIVE_MAX",
]

#: Most slices along the slicing axis (Z) a case may hold: 4-10x a whole-brain thin-slice scan; more is not
#: one head (a concatenation, a time series stored as Z) and would only cost minutes of model time.
MAX_SLICES = 2048


@dataclass(frozen=True)
class PreprocessConfig:
    """How volumes become model slices (stored in every checkpoint).

    Attributes:
        size: side of the square in-plane model grid: the longer in-plane side is resampled to it (aspect
            kept), the other padded: 16 to 1024. ``None`` keeps the native in-plane size (padding only).
        multiple: slices are padded to multiples of this (16 for the 4 poolings of the network), 1 to 256.
        clip_percentiles: ``(low, high)`` percentiles (0-100) inside the head mask to clip each modality to
            (``"zscore"`` only).
        normalization: ``"relative"`` (each modality divided by its median in the head: relative CBF, relative
            DWI, as radiologists read them; :func:`normalize_relative`) or ``"zscore"`` (median and IQR:
            :func:`normalize`). :meth:`from_dict` of a dict without the field gives ``"zscore"``: checkpoints
            written before it existed were trained on z-scores.
        head_fill: the least share (0.05 to 0.9) of the field of view's longer in-plane side that the head's
            longer extent must fill; a wider field of view is cropped around the head (never enlarged, never to
            fewer than ``size`` voxels), so the network sees heads at the scale it learnt whatever the scanner's
            field of view. Only with ``size`` set. 0: never crop, as :meth:`from_dict` of a dict without the
            field gives (checkpoints written before it).
    """

    size: int | None = None
    multiple: int = 16
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    normalization: str = "relative"
    #: 0.5: the training phantoms' heads fill at least 0.53 of their field of view (160 drawn, both kinds and
    #: domains), so the bundled weights learnt on uncropped slices, and typical scans are not cropped either.
    head_fill: float = 0.5

    #: Bounds of ``size`` and ``multiple``: a config also comes from checkpoints and export artefacts, and a
    #: model grid of 100000² would allocate terabytes; 1024² is ~4x the finest clinical in-plane matrix.
    SIZE_RANGE = (16, 1024)
    MULTIPLE_RANGE = (1, 256)

    def __post_init__(self) -> None:
        for name, (lo, hi) in (("size", self.SIZE_RANGE), ("multiple", self.MULTIPLE_RANGE)):
            value = getattr(self, name)
            if value is None and name == "size":
                continue
            # bool is an int to Python, never a grid side.
            if isinstance(value, bool) or not isinstance(value, Integral) or not lo <= int(value) <= hi:
                unset = " or None" if name == "size" else ""
                raise InputError(f"{name} must be an integer from {lo} to {hi}{unset}, got {value!r:.80}.")
            object.__setattr__(self, name, int(value))
        clip = self.clip_percentiles
        if (
            not isinstance(clip, (list, tuple))
            or len(clip) != 2
            or not all(isinstance(p, Real) and not isinstance(p, bool) for p in clip)
            or not 0.0 <= float(clip[0]) < float(clip[1]) <= 100.0
        ):
            raise InputError(f"clip_percentiles must be (low, high) with 0 <= low < high <= 100, got {clip!r:.80}.")
        object.__setattr__(self, "clip_percentiles", (float(clip[0]), float(clip[1])))
        fill = self.head_fill
        if isinstance(fill, bool) or not isinstance(fill, Real) or not (fill == 0 or 0.05 <= float(fill) <= 0.9):
            raise InputError(f"head_fill must be 0 (never crop) or a number from 0.05 to 0.9, got {fill!r:.80}.")
        object.__setattr__(self, "head_fill", float(fill))
        if not isinstance(self.normalization, str) or self.normalization not in NORMALIZATIONS:
            raise InputError(
                f"normalization must be one of {', '.join(NORMALIZATIONS)}, got {self.normalization!r:.80}."
            )

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-serialisable dict (``clip_percentiles`` as a list)."""
        d = asdict(self)
        d["clip_percentiles"] = list(self.clip_percentiles)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PreprocessConfig":
        """Inverse of :meth:`to_dict`.

        Raises:
            InputError: ``d`` has fields this version does not know (written by a newer mdanet-sdk) or
                invalid values.
        """
        if not isinstance(d, Mapping):
            raise InputError(f"the preprocessing config must be a dict of fields, got a {type(d).__name__}.")
        unknown = sorted(str(k) for k in d if k not in {f.name for f in fields(cls)})
        if unknown:
            raise InputError(
                f"preprocessing config has unknown fields {unknown}: it was written by a newer "
                "mdanet-sdk; upgrade the package to use it."
            )
        # Written before the fields existed: z-scores, no crop.
        return cls(**{"normalization": "zscore", "head_fill": 0.0, **d})


@dataclass(frozen=True)
class SliceGeometry:
    """Everything :func:`restore` needs to map model slices back to the native grid.

    Attributes:
        native_shape: ``(X, Y, Z)`` of the input volumes.
        box: ``(x0, x1, y0, y1)``: the in-plane part of the slices that goes onto the model grid
            (:func:`mdanet_sdk.pipeline.slicing.head_box`; ``(0, X, 0, Y)``: all of it).
        resampled: in-plane ``(h, w)`` of the box after resampling (its own size when nothing is resampled).
        padded: in-plane ``(H, W)`` of the model slices (multiples of ``multiple``).
        offset: ``(top, left)``: where the resampled slice starts inside the padded one.
        head: bool ``(X, Y, Z)``: where lesions may be (:func:`head_support`, or the caller's brain mask);
            :func:`restore_probability` sets the probability to 0 outside it. None: everywhere.
        parenchyma: where the normalisation and the ADC gate take tissue values (:func:`normalize_volumes`); None: head.
        warnings: one sentence per doubt about the input (e.g. it does not look skull-stripped).
    """

    native_shape: tuple[int, int, int]
    box: tuple[int, int, int, int]
    resampled: tuple[int, int]
    padded: tuple[int, int]
    offset: tuple[int, int]
    head: np.ndarray | None = field(default=None, compare=False, repr=False)
    parenchyma: np.ndarray | None = field(default=None, compare=False, repr=False)
    warnings: tuple[str, ...] = field(default=(), compare=False)
    given_mask: bool = field(default=False, compare=False)

    @property
    def resamples(self) -> bool:
        """Whether the in-plane grid is resampled (else only cropped and padded)."""
        return list(self.resampled) != slicing.box_shape(list(self.box))

    @property
    def slices_shape(self) -> tuple[int, int, int]:
        """``(Z, H, W)`` of the model slices."""
        return (self.native_shape[2], *self.padded)

    @cached_property
    def lesion_support(self) -> np.ndarray | None:
        """Where lesions may be: a given brain mask as it is; the automatic head mask grown by 2 voxels (its
        edge may miss dark tissue next to a noisy background). Bool ``(X, Y, Z)``, computed once: the
        Segmenter restores a case slice range by slice range and a 3D dilation per range would cost O(Z²)."""
        if self.head is None:
            return None
        return slicing.lesion_support(torch.from_numpy(self.head), self.given_mask).numpy()

    def to_dict(self) -> dict[str, list[int]]:
        """Plain dict of lists of the grid sizes (for logs and reports)."""
        return {k: list(getattr(self, k)) for k in ("native_shape", "box", "resampled", "padded", "offset")}

    def grid_args(self) -> tuple[list[int], list[int], list[int], list[int]]:
        """``(box, resampled, padded, offset)`` as the lists :mod:`mdanet_sdk.pipeline.slicing` takes."""
        return list(self.box), list(self.resampled), list(self.padded), list(self.offset)


def _geometry(shape: Sequence[int], cfg: PreprocessConfig, head: np.ndarray) -> SliceGeometry:
    x, y, z = (int(n) for n in shape)
    # Without resampling (size None) the network sees stored voxels whatever the field of view: nothing to crop.
    box = slicing.head_box(torch.from_numpy(head), cfg.head_fill if cfg.size else 0.0, cfg.size or 0)
    inner = slicing.box_shape(box)
    resampled, padded, offset = slicing.model_grid([inner[0], inner[1], z], cfg.size, cfg.multiple)
    pairs = [(v[0], v[1]) for v in (resampled, padded, offset)]
    return SliceGeometry((x, y, z), (box[0], box[1], box[2], box[3]), pairs[0], pairs[1], pairs[2])


class SliceStack:
    """One case's normalised volumes, served on the model grid a range of slices at a time (steps 3-5).

    The normalised volumes stay on the native grid; :meth:`chunk` slices, resamples and pads only the slices
    asked for, so a consumer that walks the stack chunk by chunk (the Segmenter) holds O(native volume +
    one chunk) instead of O(Z × model grid). Resampling leaves the slice axis alone (zoom factor 1 there), so
    chunks equal the same slices of the whole stack bit for bit.

    Attributes:
        geometry: the :class:`SliceGeometry` of the case.
        shape: ``(Z, C, H, W)`` of the whole stack on the model grid.
    """

    def __init__(self, normalised: np.ndarray, geometry: SliceGeometry) -> None:
        self._volumes = torch.from_numpy(normalised)  # (C, X, Y, Z) float32 on the native grid
        # The padding value is each channel's lowest value over the whole volume (the background), as when
        # the stack was padded in one piece: it must not depend on how the slices are cut into chunks.
        self._lowest = slicing.lowest_values(self._volumes)
        self.geometry = geometry
        self.shape: tuple[int, int, int, int] = (geometry.native_shape[2], len(normalised), *geometry.padded)

    def __len__(self) -> int:
        return self.shape[0]

    def runs(self, step: int | None = None) -> list[tuple[int, int]]:
        """The slice ranges the network must see: consecutive slices that hold any of the lesion support, cut
        into ranges of at most ``step`` slices when given (:func:`mdanet_sdk.pipeline.slicing.slice_runs`). A
        slice outside them (no head in it) has lesion probability 0 whatever the network says, so predictors
        skip it."""
        support = self.geometry.lesion_support
        return slicing.slice_runs(None if support is None else torch.from_numpy(support), len(self), step)

    def chunk(self, start: int, end: int) -> np.ndarray:
        """Slices ``start..end-1`` on the model grid: float32 ``(end - start, C, H, W)``."""
        if not 0 <= start <= end <= len(self):
            raise InputError(
                f"slice range {start}..{end} is outside this case's {len(self)} slices; ask for a range inside it."
            )
        geom = self.geometry
        return slicing.to_model_grid(self._volumes, self._lowest, start, end, *geom.grid_args()).numpy()


def require_modalities(images: Mapping[str, Any], modalities: Sequence[str]) -> None:
    """Raise :class:`InputError` naming the first of ``modalities`` that ``images`` lacks (or none requested)."""
    if not modalities:
        raise InputError("no modalities requested; name at least one, e.g. ('dwi', 'adc').")
    missing = [m for m in modalities if m not in images]
    if missing:
        raise InputError(
            f"no {missing[0]!r} image (have {', '.join(images) or 'none'}); provide every modality the model "
            f"needs: {', '.join(modalities)}."
        )


def _volumes(images: Mapping[str, np.ndarray], modalities: Sequence[str]) -> list[np.ndarray]:
    """The float32 ``(X, Y, Z)`` volumes of ``modalities``, checked to be present, 3D, on one grid and of at
    most :data:`MAX_SLICES` slices."""
    require_modalities(images, modalities)
    volumes = [np.asarray(images[m], dtype=np.float32) for m in modalities]
    shape = volumes[0].shape
    if len(shape) != 3 or any(v.shape != shape for v in volumes):
        shapes = ", ".join(f"{m} {v.shape}" for m, v in zip(modalities, volumes))
        raise InputError(f"modalities must be 3D (X, Y, Z) volumes on one grid, got {shapes}; resample them first.")
    if shape[2] > MAX_SLICES:
        raise InputError(
            f"the volume of shape {shape} holds {shape[2]} slices along its slicing axis Z, more than the "
            f"{MAX_SLICES} supported; crop or resample it to fewer slices."
        )
    return volumes


def slice_stack(
    images: Mapping[str, np.ndarray],
    modalities: Sequence[str],
    cfg: PreprocessConfig,
    brain_mask: np.ndarray | None = None,
) -> SliceStack:
    """Check and normalise the modalities of one case (steps 1-2) and return them as a lazy :class:`SliceStack`.

    Normalisation statistics are whole-volume (taken on the native grid); slicing, resampling and padding
    happen per chunk in :meth:`SliceStack.chunk`. Arguments and errors as for :func:`preprocess_images`.

    Returns:
        the stack: ``shape`` ``(Z, C, H, W)``, ``geometry`` the :class:`SliceGeometry` of the case.
    """
    volumes = _volumes(images, modalities)
    mask, warnings = head_region(volumes, brain_mask, modalities)
    normalised, notes, tissue = normalize_volumes(volumes, mask, cfg.normalization, cfg.clip_percentiles, modalities)
    geom = replace(
        _geometry(volumes[0].shape, cfg, mask),
        head=mask,
        parenchyma=tissue,
        warnings=(*warnings, *notes),
        given_mask=brain_mask is not None,
    )
    return SliceStack(normalised, geom)


def preprocess_images(
    images: Mapping[str, np.ndarray],
    modalities: Sequence[str],
    cfg: PreprocessConfig,
    brain_mask: np.ndarray | None = None,
) -> tuple[np.ndarray, SliceGeometry]:
    """Normalise, slice, resample and pad the modalities of one case (module docstring), all slices at once.

    The whole :class:`SliceStack` of :func:`slice_stack` (one implementation for both); the Segmenter walks
    the stack chunk by chunk instead, so that its memory does not grow with the number of slices.

    Args:
        images: modality → float ``(X, Y, Z)``, all on one grid.
        modalities: names in channel order, e.g. ``("dwi", "adc")``.
        cfg: the preprocessing.
        brain_mask: optional ``(X, Y, Z)`` mask (non-zero = brain) that replaces the automatic head mask:
            statistics are taken inside it and lesions are kept only there.

    Returns:
        ``(slices, geometry)``: float32 ``(Z, C, H, W)`` with ``H, W`` multiples of ``cfg.multiple``, and the
        :class:`SliceGeometry` that :func:`restore` and :func:`preprocess_label` take.

    Raises:
        InputError: a modality is missing, no modality is named, the volumes are not 3D, differ in shape or
            hold more than :data:`MAX_SLICES` slices, or the brain mask is not on their grid or empty.
    """
    stack = slice_stack(images, modalities, cfg, brain_mask)
    return stack.chunk(0, len(stack)), stack.geometry


def preprocess_label(label: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """The label on the model grid, as :func:`preprocess_images` put the images there (nearest neighbour).

    Args:
        label: integer ``(X, Y, Z)`` on the native grid of ``geom``.
        geom: from :func:`preprocess_images` of the same case.

    Returns:
        uint8 ``(Z, H, W)``.

    Raises:
        InputError: the label's shape is not ``geom.native_shape``.
    """
    label = np.asarray(label)
    if label.shape != geom.native_shape:
        raise InputError(
            f"label of shape {label.shape} does not match the images {geom.native_shape}; use the case's own label."
        )
    return slicing.label_to_model_grid(torch.from_numpy(label.astype(np.uint8)), *geom.grid_args()).numpy()


def preprocess_case(
    case: Any, modalities: Sequence[str], cfg: PreprocessConfig
) -> tuple[np.ndarray, np.ndarray | None, SliceGeometry]:
    """:func:`preprocess_images` and :func:`preprocess_label` of any object with ``.images`` and ``.label``.

    Returns:
        ``(slices (Z, C, H, W) float32, label (Z, H, W) uint8 or None, geometry)``.
    """
    slices, geom = preprocess_images(case.images, modalities, cfg)
    label = None if case.label is None else preprocess_label(case.label, geom)
    return slices, label, geom


def restore(slices: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Map model-grid slices back onto the native grid: crop the padding, resample back, Z last.

    Args:
        slices: ``(Z, H, W)``: probabilities (float: linear interpolation) or labels (integer or bool:
            nearest neighbour), on the grid ``geom`` describes.
        geom: from :func:`preprocess_images`.

    Returns:
        ``(X, Y, Z)``: float32 for float input, the input's dtype otherwise (bool as uint8).

    Raises:
        InputError: ``slices`` is not ``(Z, H, W)`` of ``geom``.
    """
    slices = np.asarray(slices)
    _check_slices(slices, geom)
    return _restore_range(slices, geom)


def _check_slices(slices: np.ndarray, geom: SliceGeometry, start: int | None = None) -> None:
    """Raise InputError unless ``slices`` is the whole ``(Z, H, W)`` stack of ``geom`` (``start`` None) or
    ``(n, H, W)`` slices ``start..start+n-1`` of it."""
    if start is None:
        fits = slices.shape == geom.slices_shape
    else:
        depth = geom.native_shape[2]
        fits = slices.ndim == 3 and slices.shape[1:] == geom.padded and 0 <= start <= start + len(slices) <= depth
    if not fits:
        where = "" if start is None else f" from slice {start}"
        raise InputError(
            f"slices of shape {slices.shape}{where} do not match the model grid {geom.slices_shape} of this case; "
            "restore each case with its own geometry."
        )


def _restore_range(slices: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """:func:`restore` of ``(n, H, W)`` slices of any range: ``(X, Y, n)``. Resampling leaves the slice axis
    alone (zoom factor 1), so a range restores exactly as the same slices of the whole stack."""
    labels = not np.issubdtype(slices.dtype, np.floating)
    if labels:
        slices = slices.astype(np.uint8) if slices.dtype == bool else slices
    else:
        slices = slices.astype(np.float32, copy=False)
    native = [geom.native_shape[0], geom.native_shape[1]]
    box, resampled, _, offset = geom.grid_args()
    restored = slicing.restore_range(torch.from_numpy(np.ascontiguousarray(slices)), native, box, resampled, offset)
    return restored.numpy()


def restore_probability(slices: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Lesion probabilities on the native grid: :func:`restore`, clipped to 0..1, and 0 outside ``geom.head``
    (no lesion outside the head or the given brain mask).

    Args:
        slices: float ``(Z, H, W)`` on the model grid of ``geom``.

    Returns:
        float32 ``(X, Y, Z)``.
    """
    slices = np.asarray(slices, dtype=np.float32)
    _check_slices(slices, geom)
    return restore_probability_into(np.empty(geom.native_shape, np.float32), slices, geom, 0)


def restore_probability_into(out: np.ndarray, slices: np.ndarray, geom: SliceGeometry, start: int) -> np.ndarray:
    """:func:`restore_probability` of slices ``start..start+n-1`` of a case, written to ``out[..., start:start+n]``.

    The Segmenter restores each batch as soon as it is predicted, so no model-grid stack of the whole case
    is ever held.

    Args:
        out: float32 ``(X, Y, Z)`` native-grid probability of the case, filled range by range.
        slices: float ``(n, H, W)`` on the model grid of ``geom``.
        geom: the case's geometry.
        start: index of the first slice.

    Returns:
        ``out``.

    Raises:
        InputError: ``slices`` is not ``(n, H, W)`` of ``geom`` or reaches past its last slice.
    """
    slices = np.asarray(slices, dtype=np.float32)
    _check_slices(slices, geom, start)
    end = start + slices.shape[0]
    support = geom.lesion_support
    box, resampled, _, offset = geom.grid_args()
    part = slicing.restore_probability_range(
        torch.from_numpy(np.ascontiguousarray(slices)),
        [geom.native_shape[0], geom.native_shape[1]],
        box,
        resampled,
        offset,
        None if support is None else torch.from_numpy(support[..., start:end]),
    )
    out[..., start:end] = part.numpy()
    return out
