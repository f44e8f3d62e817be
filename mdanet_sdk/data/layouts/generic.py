"""Generic datasets: a 4D file, case folders with one file per modality, and flat folders of many cases.

- A 4D image whose last axis holds ``modalities`` in that order (case id: its name without the ending).
- A case folder with one file per modality named after it (``dwi.nii.gz``, ``case7_adc.mha``...) or a
  DICOM series folder so named (``dwi/``); optionally a lesion label named ``label``/``lesion`` (or
  ``*_label``, ``*_lesion``, ``*_lesion_mask``) and a brain mask named as skull-stripping tools name them
  (``*_brain_mask``, ``*_brainmask``, ``*_bet_mask``, ``brainmask``, other ``*_mask``). A bare ``mask``,
  ``msk`` or ``seg`` is neither label nor brain mask (it could be either): give it with a label pattern or as
  the brain mask explicitly. Case id: the folder's name.
- A flat folder of many cases (``sub01_dwi.nii.gz sub01_adc.nii.gz sub02_dwi.nii.gz``...): files are grouped
  by the prefix before their last ``_<modality>`` (labels and brain masks by theirs), each prefix a case whose
  id is that prefix. A folder whose files share one prefix (files without one, ``dwi.nii.gz``, aside) is one
  case, the folder's, as above.
- A folder of such case folders (or flat folders).

Without ``modalities``, each case reads the layout whose modalities are all there (``dwi, adc`` or ``cbf, cbv,
mtt, tmax``), else the one with most of them (the case is then broken: ``problem`` names the missing one).
"""

from __future__ import annotations

from pathlib import Path

from mdanet_sdk.data.cases import BRAIN_MASK_KEY, FOURD_KEY, LABEL_KEY, CaseSource
from mdanet_sdk.data.layouts._common import (
    KNOWN_MODALITIES,
    LAYOUT_MODALITIES,
    drop_outputs,
    entry_role,
    is_image,
    list_dir,
    make_source,
    sub_folders,
)
from mdanet_sdk.data.nifti import nifti_stem
from mdanet_sdk.errors import InputError

_EXPECTED = "{name}.nii(.gz) or *_{name}.nii(.gz)"
_OTHER_ROLES = (LABEL_KEY, BRAIN_MASK_KEY)
Grouped = dict[str, dict[str, list[Path]]]


def _by_prefix(folder: Path, names: tuple[str, ...]) -> Grouped:
    """prefix -> role -> files (or DICOM folders) directly in ``folder``."""
    grouped: Grouped = {}
    for path in list_dir(folder):
        meaning = entry_role(path, names)
        if meaning is not None:
            kind, prefix = meaning
            grouped.setdefault(prefix, {}).setdefault(kind, []).append(path)
    return grouped


def _case_prefixes(grouped: Grouped) -> list[str]:
    """The prefixes holding a modality image (a label or mask alone is no case)."""
    return [prefix for prefix, roles in grouped.items() if set(roles) - set(_OTHER_ROLES)]


def flat_case_count(folder: Path, modalities: tuple[str, ...] | None = None) -> int:
    """How many case prefixes of modality files ``folder`` holds directly (2 or more: a flat folder of cases;
    files without a prefix, ``dwi.nii.gz``, are the folder's own and count for none)."""
    return len([p for p in _case_prefixes(_by_prefix(folder, modalities or KNOWN_MODALITIES)) if p])


def _case(
    case_id: str, found: dict[str, list[Path]], folder: Path, modalities: tuple[str, ...] | None, labels: bool
) -> CaseSource:
    """The case of the files ``found`` (role -> files), reading ``modalities`` or the best-fitting layout's."""
    found = drop_outputs(found, {case_id, folder.name})
    if modalities is None:  # the layout whose modalities are all there, else the one with most of them (broken)
        modalities = max(LAYOUT_MODALITIES.values(), key=lambda m: (set(m) <= set(found), len(set(m) & set(found))))
    found = {k: v for k, v in found.items() if k in modalities or k in _OTHER_ROLES}
    expected = lambda name: _EXPECTED.format(name=name)  # noqa: E731
    return make_source(case_id, modalities, found, folder, expected, LABEL_KEY if labels else None)


def _folder_cases(folder: Path, modalities: tuple[str, ...] | None, labels: bool, flat: bool) -> list[CaseSource]:
    """The cases held directly in ``folder``: one (the folder's) or, for a flat folder, one per prefix."""
    grouped = _by_prefix(folder, modalities or KNOWN_MODALITIES)
    prefixes = _case_prefixes(grouped)
    if not prefixes:
        return []
    if len([p for p in prefixes if p]) <= 1 and not flat:  # one case: every file of the folder is its
        found: dict[str, list[Path]] = {}
        for roles in grouped.values():
            for kind, paths in roles.items():
                found.setdefault(kind, []).extend(paths)
        return [_case(folder.name, found, folder, modalities, labels)]
    return [_case(prefix or folder.name, grouped[prefix], folder, modalities, labels) for prefix in prefixes]


def find_generic(root: Path, modalities: tuple[str, ...] | None, labels: bool, flat: bool = False) -> list[CaseSource]:
    """Every generic case at ``root`` (module doc); ``flat``: one case per prefix even if there is one."""
    if not root.is_dir():  # a file, or a FIFO/device that loading will refuse (never iterdir() it)
        if not is_image(root):
            raise InputError(
                f"{root} is not a .nii, .nii.gz, .mha, .mhd, .nrrd or .nhdr file; give an image or a case folder."
            )
        return [CaseSource(nifti_stem(root), {FOURD_KEY: root}, None, modalities, folder=root.parent)]
    own = _folder_cases(root, modalities, labels, flat)
    if own:
        return own
    return [case for sub in sub_folders(root) for case in _folder_cases(sub, modalities, labels, flat)]
