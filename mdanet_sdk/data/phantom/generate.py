"""One phantom from one seed: :func:`make_phantom`, the :class:`Phantom` it returns, and the names of the
layouts, patterns and images it knows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np

from mdanet_sdk.data.cases import LAYOUT_MODALITIES, Case
from mdanet_sdk.data.layouts import KIND_LAYOUT
from mdanet_sdk.data.nifti import Volume
from mdanet_sdk.data.phantom.anatomy import Anatomy, affine, build_anatomy, geometry
from mdanet_sdk.data.phantom.ctp import ctp_background, ctp_images
from mdanet_sdk.data.phantom.domain import DOMAINS, Domain
from mdanet_sdk.data.phantom.lesions import Effects, ctp_lesions, mri_lesions
from mdanet_sdk.data.phantom.mri import mri_images
from mdanet_sdk.data.phantom.tables import MRI, PATTERN_P, PERFUSION
from mdanet_sdk.errors import InputError

__all__ = [
    "Phantom",
    "make_phantom",
    "check_options",
    "case_seed",
    "case_name",
    "PHANTOM_LAYOUTS",
    "KINDS",
    "KIND_LAYOUT",
    "PATTERNS",
    "PHANTOM_MODALITIES",
]

#: Dataset layouts a phantom can imitate (``layout`` of :func:`make_phantom` and :func:`write_dataset`).
PHANTOM_LAYOUTS = ("isles22", "isles18")
#: The former name of :data:`PHANTOM_LAYOUTS` (the phantom API called the layout ``kind``).
KINDS = PHANTOM_LAYOUTS
#: Lesion patterns of each layout (``pattern=`` of :func:`make_phantom`; default: drawn per case).
PATTERNS: dict[str, tuple[str, ...]] = {
    "isles22": ("territorial", "lacunar", "embolic", "multiple"),
    "isles18": ("core",),
}
#: Images of each layout, model modalities first (``"ct"`` is the plain CT of ISLES'18).
PHANTOM_MODALITIES: dict[str, tuple[str, ...]] = {
    "isles22": LAYOUT_MODALITIES["isles22"],
    "isles18": LAYOUT_MODALITIES["isles18"] + ("ct",),
}


def case_seed(seed: int, index: int) -> int:
    """Seed of case ``index`` (0-based) of a dataset written with ``seed``: ``seed * 1000 + index``."""
    return int(seed) * 1000 + int(index)


def case_name(layout: str, index: int) -> str:
    """Case id of case ``index`` (0-based): ``sub-strokecase0001`` (isles22) or ``case_1`` (isles18)."""
    return f"sub-strokecase{index + 1:04d}" if layout == "isles22" else f"case_{index + 1}"


@dataclass
class Phantom(Case):
    """A synthetic case: a :class:`~mdanet_sdk.data.cases.Case` plus what the generator knows.

    Attributes:
        layout: ``"isles22"`` or ``"isles18"``.
        masks: ground truth of the anatomy, bool ``(X, Y, Z)``: ``"brain"``, ``"csf"`` (CSF fraction > 0.5),
            ``"mimic"`` (lesion look-alikes flagged by one modality group only: T2 shine-through, chronic
            infarcts, susceptibility; CTP: penumbra and vessels), ISLES'18 also ``"head"``.
        info: JSON-serialisable description: seed, spacing, units, gains, orientation and dtypes used by
            :func:`write_dataset`, and one entry per lesion and confounder. Its ``"kind"`` entry holds the
            layout (the name is kept so that ``phantoms.json`` files stay as they were).
    """

    layout: str = "isles22"
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def affine(self) -> np.ndarray:
        """4x4 voxel-to-world (mm) matrix of the canonical arrays."""
        return self.reference.affine


#: The largest side of a phantom: 1024³ float32 volumes are already 4 GiB each, beyond any scanner's matrix.
MAX_SIDE = 1024


def check_options(layout: str, shape, pattern: str | None, n_lesions: int | None, domain: str = "classic") -> None:
    """Raise :class:`InputError` for an option :func:`make_phantom` cannot honour."""
    if domain not in (*DOMAINS, "mixed"):
        raise InputError(f"domain must be one of {', '.join(DOMAINS)}, mixed; got {domain!r}.")
    if layout not in PHANTOM_LAYOUTS:
        raise InputError(f"layout must be one of {', '.join(PHANTOM_LAYOUTS)}, got {layout!r}.")
    if shape is not None and (
        len(shape) != 3 or any(s is not None and not m <= int(s) <= MAX_SIDE for s, m in zip(shape, (16, 16, 1)))
    ):
        raise InputError(
            f"shape must be (X, Y, Z) with 16 <= X, Y <= {MAX_SIDE} and 1 <= Z <= {MAX_SIDE} (None keeps a "
            f"default), got {shape!r}."
        )
    if pattern is not None and pattern not in PATTERNS[layout]:
        raise InputError(f"pattern for {layout} must be one of {', '.join(PATTERNS[layout])}, got {pattern!r}.")
    if n_lesions is not None and n_lesions < 1:
        raise InputError(f"n_lesions must be at least 1, got {n_lesions}.")


def _mri_case(rng, anat: Anatomy, pattern: str, n_lesions: int | None, dom: Domain):
    """Lesions and images of an ISLES'22-like case: ``(effects, images, head mask, info)``."""
    fx = mri_lesions(rng, anat, pattern, n_lesions, dom)
    images, extra = mri_images(rng, anat, fx, dom)
    per_mille = bool(rng.random() < MRI.per_mille_p)  # ADC in 1e-6 mm²/s, stored as integers like many scanners
    if per_mille:
        images["adc"] = np.round(images["adc"] * 1000.0)
    extra["units"] = {"adc": "1e-6 mm^2/s" if per_mille else "1e-3 mm^2/s", "dwi": "arbitrary"}
    extra["dtypes"] = {"dwi": "float32", "adc": "int16" if per_mille else "float32"}
    extra["orientation"] = str(rng.choice(MRI.orientations))
    return fx, images, anat.brain, extra


def _ctp_case(rng, anat: Anatomy, n_lesions: int | None, rim: float, background: str, dom: Domain):
    """Lesions and images of an ISLES'18-like case: ``(effects, images, head mask, info)``."""
    fx = ctp_lesions(rng, anat, n_lesions)
    head = anat.depth > -rim
    skull = (anat.depth < -rim * rng.uniform(*PERFUSION.skull_inner)) & (
        anat.depth > -rim * rng.uniform(*PERFUSION.skull_outer)
    )
    images, extra = ctp_images(rng, anat, fx, head, skull, dom)
    ctp_background(rng, images, head, background)
    images["ct"] = np.round(images["ct"])
    extra["background"] = background
    extra["units"] = {
        "cbf": "ml/100g/min x gain",
        "cbv": "ml/100g x gain",
        "mtt": "s x gain",
        "tmax": "s x gain",
        "ct": "HU",
    }
    extra["dtypes"] = {**{m: "float32" for m in LAYOUT_MODALITIES["isles18"]}, "ct": "int16"}
    extra["orientation"] = str(rng.choice(PERFUSION.orientations))
    return fx, images, head, extra


def make_phantom(
    layout: str = "isles22",
    seed: int = 0,
    *,
    shape: Sequence[int | None] | None = None,
    spacing: float | Sequence[float] | None = None,
    pattern: str | None = None,
    n_lesions: int | None = None,
    case_id: str | None = None,
    domain: str = "classic",
) -> Phantom:
    """Generate one synthetic stroke case (package docstring: anatomy, lesions, physics, variability).

    Args:
        layout: ``"isles22"`` (DWI + ADC, modality kind ``mri``) or ``"isles18"`` (CBF, CBV, MTT, Tmax + CT,
            kind ``ctp``).
        seed: the same seed gives the same case, bit for bit.
        shape: grid ``(X, Y, Z)``; an entry ``None`` keeps its random default (ISLES'22: 96-128 in-plane,
            40-80 slices; ISLES'18: 256×256, 2-8 slices).
        spacing: minimum voxel size in mm (scalar or per axis; default ~2 mm, or ~0.9×0.9×5 mm). Axes grow
            beyond it when the grid is too small to hold the head.
        pattern: lesion pattern (:data:`PATTERNS`); default drawn per case.
        n_lesions: number of lesions of the pattern (default random).
        case_id: the case's id (default ``phantom-<seed>``).
        domain: ``"classic"``, ``"randomised"`` (:mod:`mdanet_sdk.data.phantom.domain`: wider contrast,
            noise, bias, background, resolution and unit ranges, for training models that generalise) or
            ``"mixed"`` (classic for even seeds, randomised for odd ones).

    Returns:
        a :class:`Phantom` (a :class:`~mdanet_sdk.data.cases.Case`): float32 ``(X, Y, Z)`` images in canonical
        RAS+ order, uint8 label with at least one lesion voxel, ``affine``, ``masks`` and ``info``.

    Raises:
        InputError: unknown layout or pattern, a grid smaller than 16×16×1, ``n_lesions < 1``.
    """
    check_options(layout, shape, pattern, n_lesions, domain)
    domain = _seed_domain(domain, seed)
    dom = DOMAINS[domain]
    rng = np.random.default_rng(seed)
    background = dom.choice(rng, dom.ctp_backgrounds) if layout == "isles18" else None
    rim_mm = 0.0 if background == "zero" else None
    shape, voxel_mm, dims, centre_w, rim = geometry(rng, layout, shape, spacing, dom, rim_mm)
    anat = build_anatomy(rng, shape, voxel_mm, dims, centre_w)
    pattern = pattern or str(rng.choice(PATTERNS[layout], p=PATTERN_P[layout]))
    info = _base_info(layout, seed, domain, pattern, shape, voxel_mm)
    if layout == "isles22":
        fx, images, head, extra = _mri_case(rng, anat, pattern, n_lesions, dom)
    else:
        fx, images, head, extra = _ctp_case(rng, anat, n_lesions, rim, str(background), dom)
    label = ((fx.core >= 0.5) & anat.brain & (anat.csf < 0.5)).astype(np.uint8)
    images = {m: np.ascontiguousarray(images[m], dtype=np.float32) for m in PHANTOM_MODALITIES[layout]}
    grid_affine = affine(rng, shape, voxel_mm, oblique=layout == "isles22")
    info.update(extra, lesions=fx.lesions, mimics=fx.mimics, lesion_voxels=int(label.sum()))
    masks = _masks(anat, fx, label, head, layout)
    reference = _reference(images[PHANTOM_MODALITIES[layout][0]], grid_affine, shape)
    return Phantom(case_id or f"phantom-{seed}", images, label, reference, layout=layout, masks=masks, info=info)


def _seed_domain(domain: str, seed: int) -> str:
    """The domain of the case with ``seed``: ``"mixed"`` is classic for even seeds and randomised for odd ones
    (half the seeds each: the randomised world keeps its classic centre in view); others are kept."""
    if domain == "mixed":
        domain = "classic" if seed % 2 == 0 else "randomised"
    return domain


def _base_info(layout: str, seed: int, domain: str, pattern: str, shape, voxel_mm: np.ndarray) -> dict[str, Any]:
    """The start of :attr:`Phantom.info`: layout (under ``"kind"``), seed, domain, pattern and the grid."""
    return {
        "kind": layout,
        "seed": int(seed),
        "domain": domain,
        "pattern": pattern,
        "shape": list(shape),
        "spacing_mm": [round(float(s), 4) for s in voxel_mm],
    }


def _reference(image: np.ndarray, grid_affine: np.ndarray, shape) -> Volume:
    """The reference grid of a phantom (:attr:`Phantom.reference`): canonical RAS+ ``image`` with ``grid_affine``
    as both its affine and its original one, in the header nibabel makes for it."""
    header = nib.Nifti1Image(image, grid_affine).header
    return Volume(image, grid_affine, header, grid_affine, tuple(shape), ("R", "A", "S"))


def _masks(anat: Anatomy, fx: Effects, label: np.ndarray, head: np.ndarray, layout: str) -> dict[str, np.ndarray]:
    """The anatomy's ground truth (:attr:`Phantom.masks`)."""
    masks = {"brain": anat.brain, "csf": anat.csf > 0.5, "mimic": (fx.mimic >= 0.5) & (label == 0) & anat.brain}
    if layout == "isles18":
        masks.update(head=head, mimic=masks["mimic"] | ((fx.penumbra >= 0.5) & (label == 0)))
    return masks
