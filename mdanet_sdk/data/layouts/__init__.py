"""Dataset layouts: finding the cases of a dataset folder, as :class:`~mdanet_sdk.data.cases.CaseSource` s,
without reading any voxel.

Layouts understood by :func:`find_cases` (and :func:`~mdanet_sdk.data.cases.read_case`), one module each:

- ``"isles22"`` (:mod:`.bids`): BIDS ``rawdata/sub-X[/ses-Y]/...``, labels in ``derivatives/``; a subject with
  several sessions gives one case per session (``sub-X_ses-Y``).
- ``"isles18"`` (:mod:`.isles18`): ``TRAINING/case_N/SMIR...CT_CBF...nii``, label ``OT``.
- ``"nnunet"`` (:mod:`.nnunet`): ``imagesTr/CASE_0000.nii.gz``..., channel names from ``dataset.json`` (else
  ``modalities``), labels ``labelsTr/CASE.nii.gz``.
- ``"generic"`` (:mod:`.generic`): a 4D file, a case folder with one file per modality (``dwi.nii.gz``,
  ``case7_adc.mha``, a ``dwi/`` DICOM folder...), or a folder of case folders; ``"flat"``: a folder of many
  cases' files grouped by prefix (``sub01_dwi.nii.gz``, ``sub02_dwi.nii.gz``...).
- ``"auto"``: ISLES'22 if the folder is a ``sub-*`` (or its ``ses-*``) folder or holds ``rawdata/`` or
  ``sub-*`` folders; ISLES'18 if it holds ``TRAINING``/``TESTING``, SMIR case folders or SMIR files; nnU-Net if
  it is or holds an images folder of ``CASE_0000`` files; flat if its files have two or more case prefixes;
  else generic.

Images may be NIfTI, MetaImage or NRRD (``.mha``, ``.mhd``, ``.nrrd``, ``.nhdr``) and, in generic case folders,
DICOM series folders (:mod:`mdanet_sdk.data.formats`). Lesion labels are taken only from names that mean
one: BIDS ``derivatives/*_msk``, ISLES'18 ``OT``, nnU-Net ``labelsTr``/``labelsTs``, generic ``label``/
``lesion``, or ``label_pattern``. Brain masks of skull-stripping tools (``*_brain_mask``, ``*_brainmask``,
``*_bet_mask``, ``*_mask``) are each case's ``brain_mask_path``, never a label or a modality.

Default modalities and their order follow the model's groups (:data:`LAYOUT_GROUPS`, from
:data:`mdanet_sdk.config.MODALITY_GROUPS`): ISLES'22 ``dwi | adc``, ISLES'18 ``cbf, cbv | mtt, tmax``.

A case that lacks a modality, or holds a modality, label or brain mask twice, is found with ``problem`` set
(its ``load()`` raises it), so one broken case fails alone. A FIFO or device named like a modality is found,
so that loading that case (not finding) refuses it. The SDK's own outputs (``<case>_seg``/``<case>_prob``, or
any file :func:`~mdanet_sdk.data.nifti.save_like` marked) are never taken as a label or a modality; finding
reads their headers, never their voxels. Hidden files and folders are ignored.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mdanet_sdk.data.cases import CaseSource
from mdanet_sdk.data.layouts._common import (
    KIND_LAYOUT,
    LAYOUT_GROUPS,
    LAYOUT_KIND,
    LAYOUT_MODALITIES,
    apply_label_pattern,
    natural_key,
)
from mdanet_sdk.data.layouts.bids import find_isles22, isles22_subjects
from mdanet_sdk.data.layouts.generic import find_generic, flat_case_count
from mdanet_sdk.data.layouts.isles18 import find_isles18, isles18_cases
from mdanet_sdk.data.layouts.nnunet import find_nnunet, image_folders
from mdanet_sdk.errors import InputError

__all__ = [
    "find_cases",
    "detect_layout",
    "modality_names",
    "LAYOUTS",
    "KIND_LAYOUT",
    "LAYOUT_KIND",
    "LAYOUT_GROUPS",
    "LAYOUT_MODALITIES",
]

LAYOUTS = ("auto", "isles22", "isles18", "nnunet", "generic", "flat")


def detect_layout(root: str | os.PathLike[str]) -> str:
    """Guess the layout of a file or folder: ``"isles22"``, ``"isles18"``, ``"nnunet"``, ``"flat"`` or
    ``"generic"`` (module doc)."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{root} does not exist; check the path.")
    if not root.is_dir():
        return "generic"
    if isles22_subjects(root):
        return "isles22"
    if isles18_cases(root):
        return "isles18"
    if image_folders(root):
        return "nnunet"
    return "flat" if flat_case_count(root) > 1 else "generic"


def modality_names(layout: str, modalities: Sequence[str] | None) -> tuple[str, ...] | None:
    """The modalities to read from a ``layout`` dataset: ``modalities`` lowercased, or the layout's defaults
    (:data:`LAYOUT_MODALITIES`; None for the layouts that find them by file name or ``dataset.json``).

    Raises:
        InputError: ``modalities`` is empty or names one modality twice.
    """
    if modalities is None:
        return LAYOUT_MODALITIES.get(layout)
    names = tuple(str(m).lower() for m in modalities)
    if not names or len(set(names)) != len(names):
        raise InputError(f"modalities must be distinct names, at least one, got {list(modalities)!r}.")
    return names


def _find(root: Path, layout: str, names: tuple[str, ...] | None, labels: bool) -> list[CaseSource]:
    if layout in ("isles22", "isles18"):
        assert names is not None  # LAYOUT_MODALITIES holds the isles22 and isles18 defaults
        return (find_isles22 if layout == "isles22" else find_isles18)(root, names, labels)
    if layout == "nnunet":
        return find_nnunet(root, names, labels)
    return find_generic(root, names, labels, flat=layout == "flat")


def find_cases(
    root: str | os.PathLike[str],
    layout: str = "auto",
    modalities: Sequence[str] | None = None,
    *,
    label_pattern: str | None = None,
) -> list[CaseSource]:
    """Find every case of a dataset without reading any voxel.

    Args:
        root: dataset root, a split/rawdata/images folder, one case folder, or a 4D file (module docstring).
        layout: one of :data:`LAYOUTS` (default ``"auto"``: :func:`detect_layout`).
        modalities: names to read, in channel order; default: the layout's (:data:`LAYOUT_MODALITIES`), the
            channels of an nnU-Net ``dataset.json``, or those found by file name. Required for a generic 4D file
            and an nnU-Net folder without ``dataset.json``.
        label_pattern: where each case's lesion label is, instead of the layout's own label names: a glob
            relative to the case folder (the subject or session folder, ISLES'18 case folder, nnU-Net images
            folder, or the folder of a flat dataset) in which ``{case}`` stands for the case id, e.g.
            ``"*_seg.nii.gz"`` or ``"../labels/{case}.nii.gz"``. A case it matches no file of has no label.

    Returns:
        one :class:`CaseSource` per case, sorted by case id (numbers in natural order); a case that cannot be
        used carries its ``problem``.

    Raises:
        InputError: unknown layout, a missing path, nothing found, or an nnU-Net folder whose channels are
            unknown (no ``dataset.json`` and no ``modalities``).
    """
    root = Path(root)
    if root.name in ("", ".", ".."):  # "." or "..": the folder's own name names its case
        root = Path(os.path.abspath(root))
    if layout not in LAYOUTS:
        raise InputError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}.")
    if layout == "auto":
        layout = detect_layout(root)
    elif not root.exists():
        raise InputError(f"{root} does not exist; check the path.")
    if layout != "generic" and not root.is_dir():
        raise InputError(f"{root} is not a folder; an {layout} dataset is read from its folder.")
    names = modality_names(layout, modalities)
    sources = _find(root, layout, names, labels=label_pattern is None)
    if not sources and names and layout == "generic":
        raise InputError(
            f"no case with {', '.join(names)} found in {root} (the model reads those); give files named after "
            "those modalities, or the checkpoint made for the modalities you have."
        )
    if not sources:
        raise InputError(
            f"no {layout} cases found in {root}; expected an ISLES'22 (rawdata/sub-*/...), ISLES'18 "
            "(TRAINING/case_N/SMIR...nii) or nnU-Net (imagesTr/CASE_0000.nii.gz) dataset, a 4D image, or files "
            "named after their modality (dwi.nii.gz, sub01_adc.nii.gz, ...); check the path or pass layout= and "
            "modalities=."
        )
    if label_pattern is not None:
        sources = [apply_label_pattern(s, label_pattern) for s in sources]
    return sorted(sources, key=lambda s: natural_key(s.case_id))
