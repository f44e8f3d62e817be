"""Lesion labels that no case found claims: cases whose images are missing, or named in a way no layout reads.

A dataset reader finds cases by their images, so a case with a label and no readable image is not a case to
it: training would run on a smaller dataset and evaluation would say its prediction has no ground truth.
:func:`orphan_labels` lists such labels (training refuses them; evaluation scores them, since scoring needs no
image); :func:`orphan_case_id` names the case of one.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from mdanet_sdk._files import file_key
from mdanet_sdk.data.cases import LABEL_KEY, CaseSource
from mdanet_sdk.data.layouts._common import KNOWN_MODALITIES, is_image, role
from mdanet_sdk.data.nifti import is_prediction, nifti_stem

__all__ = ["orphan_case_id", "orphan_labels"]

#: Files looked at before giving up (a dataset root of millions of files is not walked to its end).
MAX_FILES = 200_000


def _is_label(path: Path) -> bool:
    """Whether a file is named as a lesion label by one of the layouts: a label word (``lesion.nii.gz``,
    ``case7_label``), an ISLES'22 ``derivatives/sub-X/..._msk`` (not a pipeline's ``derivatives/<tool>/``), an
    ISLES'18 ``.OT.`` file, or nnU-Net ``labelsTr/``."""
    if not is_image(path):
        return False
    stem = nifti_stem(path)
    if "derivatives" in path.parts[:-1]:  # BIDS: derivatives/sub-X/... are labels, derivatives/<tool>/ outputs
        after = path.parts[len(path.parts) - path.parts[::-1].index("derivatives") :]  # below the last one
        if not (len(after) > 1 and after[0].startswith("sub-")):
            return False
        if stem.lower().endswith("_msk"):
            return True
    meaning = role(stem, KNOWN_MODALITIES)
    if meaning is not None and meaning[0] == LABEL_KEY:
        return True
    return "ot" in stem.lower().split(".") or path.parent.name.lower().startswith("labels")


def orphan_labels(root: str | os.PathLike[str], sources: Sequence[CaseSource]) -> list[Path]:
    """Label files under ``root`` that are neither a found case's label nor one of its images, sorted.

    Left out: files in a found case's own folders (``case2/manual_v1/lesion.nii.gz`` is a second label of case
    2, not a case) but for a folder that holds several cases' images (a flat folder: there ``case7_lesion`` of no
    found case is one), predictions (files carrying the SDK's mark) and hidden folders; symlinked folders are not
    followed (a linked case is found by its reader, or not at all).
    """
    claimed = {file_key(p) for s in sources for p in (s.label_path, *s.paths.values()) if p is not None}
    cases_in: dict[str, set[str]] = {}  # folder -> the cases whose images (or case folder) it is
    for source in sources:
        for where in {*(p.parent for p in source.paths.values()), *([source.folder] if source.folder else [])}:
            cases_in.setdefault(os.path.realpath(where), set()).add(source.case_id)
    orphans: list[Path] = []
    seen = 0
    for folder, subfolders, files in os.walk(root):
        cases = cases_in.get(os.path.realpath(folder), set())
        # A case's own folder and what is under it belong to that case; a flat folder's subfolders too.
        subfolders[:] = [] if cases else sorted(d for d in subfolders if not d.startswith("."))
        if len(cases) == 1:
            continue
        for name in files:
            seen += 1
            if seen > MAX_FILES:
                return sorted(orphans)
            path = Path(folder, name)
            if _is_label(path) and file_key(path) not in claimed and not is_prediction(path):
                if not cases or _prefix(path) not in cases | {""}:
                    orphans.append(path)
    return sorted(orphans)


def _prefix(path: Path) -> str:
    """The case prefix before a label word (``case7`` of ``case7_lesion.nii.gz``), else ``""``."""
    meaning = role(nifti_stem(path), KNOWN_MODALITIES)
    return meaning[1] if meaning is not None else ""


def orphan_case_id(path: Path) -> str:
    """The case an orphan label belongs to: its ``sub-*`` folder (ISLES'22; ``sub-X_ses-Y`` when the subject has
    several sessions, as the reader names them), its name in ``labelsTr/`` (nnU-Net), its case folder (ISLES'18
    ``OT``), the prefix before its label word (``case7_lesion``), else its folder's name."""
    index = next((i for i in range(len(path.parts) - 2, -1, -1) if path.parts[i].startswith("sub-")), None)
    if index is not None:
        subject = Path(*path.parts[: index + 1])
        session = path.parts[index + 1] if index + 2 < len(path.parts) else ""
        sessions = [p for p in subject.iterdir() if p.is_dir() and p.name.startswith("ses-")]
        several = session.startswith("ses-") and len(sessions) > 1
        return f"{path.parts[index]}_{session}" if several else path.parts[index]
    stem = nifti_stem(path)
    if path.parent.name.lower().startswith("labels"):
        return stem
    if "ot" in stem.lower().split("."):  # ISLES'18: case_N/SMIR.Brain.XX.O.OT.N/SMIR...OT.N.nii
        return path.parent.parent.name
    meaning = role(stem, KNOWN_MODALITIES)
    return meaning[1] if meaning is not None and meaning[1] else path.parent.name
