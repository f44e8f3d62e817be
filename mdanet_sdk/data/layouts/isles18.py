"""ISLES'18 (SMIR) datasets: ``TRAINING/case_N/SMIR.Brain.XX.O.CT_CBF.NNNNN/SMIR.Brain.XX.O.CT_CBF.NNNNN.nii``.

Likewise ``CT_CBV``, ``CT_MTT``, ``CT_Tmax`` (and ``CT``, ``CT_4DPWI`` on request as ``ct``, ``pwi``), the
lesion label ``OT``. Entry points: the dataset root (holding ``TRAINING/`` and/or ``TESTING/``), one of those,
or one ``case_N`` folder. Case id: ``case_N``; when the root holds both splits, ``training_case_N`` /
``testing_case_N`` so that ids stay unique.
"""

from __future__ import annotations

from pathlib import Path

from mdanet_sdk.data.cases import LABEL_KEY, CaseSource
from mdanet_sdk.data.layouts._common import drop_outputs, group, image_files, make_source, sub_folders
from mdanet_sdk.data.nifti import nifti_stem

# Modality -> token of its SMIR file name ("SMIR.Brain.XX.O.CT_Tmax.12345.nii"), and back (lowercase).
_NAMES = {
    "cbf": "CT_CBF",
    "cbv": "CT_CBV",
    "mtt": "CT_MTT",
    "tmax": "CT_Tmax",
    "ct": "CT",
    "pwi": "CT_4DPWI",
    LABEL_KEY: "OT",
}
_TOKENS = {token.lower(): name for name, token in _NAMES.items()}


def _modality(path: Path) -> str | None:
    for token in nifti_stem(path).split("."):
        if token.lower() in _TOKENS:
            return _TOKENS[token.lower()]
    return None


def _smir_files(folder: Path) -> list[Path]:
    # Each image sits one folder down (SMIR.Brain.XX.O.CT_CBF.N/SMIR...nii). Looking exactly that deep keeps
    # a split folder (TRAINING/case_N/SMIR.../...nii, two levels further) from passing for a case.
    return [p for sub in sub_folders(folder) for p in image_files(sub) if _modality(p)]


def isles18_cases(root: Path) -> list[tuple[str, Path]]:
    """(case id, folder) of every ISLES'18 case at or under ``root``."""
    if _smir_files(root):
        return [(root.name, root)]
    splits = [p for p in sub_folders(root) if p.name.upper() in ("TRAINING", "TESTING")] or [root]
    return [
        (f"{split.name.lower()}_{case.name}" if len(splits) > 1 else case.name, case)
        for split in splits
        for case in sub_folders(split)
        if _smir_files(case)
    ]


def find_isles18(root: Path, modalities: tuple[str, ...], labels: bool) -> list[CaseSource]:
    """Every ISLES'18 case at or under ``root`` (module doc); ``labels``: take ``OT`` as the label."""
    sources = []
    for case_id, folder in isles18_cases(root):
        found = drop_outputs(group(_smir_files(folder), _modality), {case_id, folder.name})
        expected = lambda name: f"SMIR.*.{_NAMES.get(name, name)}.*.nii"  # noqa: E731
        sources.append(make_source(case_id, modalities, found, folder, expected, LABEL_KEY if labels else None))
    return sources
