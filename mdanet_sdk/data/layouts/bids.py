"""ISLES'22 (BIDS) datasets: ``rawdata/sub-X/ses-Y/dwi/sub-X_ses-Y_dwi.nii.gz`` and ``..._adc.nii.gz``, lesion
labels in ``derivatives/sub-X/ses-Y/sub-X_ses-Y_msk.nii.gz``.

Files are found by their BIDS suffix (``_dwi``, ``_adc``, ``_msk``; any other suffix such as ``_flair`` on
request) anywhere under the subject (or session) folder, so images directly in ``ses-Y/`` work too. A brain
mask (``*_desc-brain_mask``, ``*_brainmask``...) under the subject is the case's brain mask. Entry points: the
dataset root (holding ``rawdata/`` or the ``sub-*`` folders themselves), ``rawdata/``, one ``sub-*`` folder or
one of its ``ses-*`` folders; the label is looked for in ``derivatives/<subject>`` beside the subject folder or
one level up, and a subject with one session never takes another session's label (under another ``ses-*``
folder or named with another ``ses`` entity). A subject without a label there (``sub-*`` case folders that are
not a BIDS dataset) takes one stored with its images: ``*_msk`` or a lesion label name of the generic layout
(``label``, ``lesion``, ``*_lesion_mask``...), never another session's. Linked folders (a session stored
elsewhere) are followed.

Case ids: a subject with one session (or none) is one case, ``sub-X``; a subject with several ``ses-*``
folders gives one case per session, ``sub-X_ses-Y``, its label from ``derivatives/sub-X/ses-Y``.
"""

from __future__ import annotations

import os
from pathlib import Path

from mdanet_sdk.data.cases import BRAIN_MASK_KEY, LABEL_KEY, CaseSource
from mdanet_sdk.data.layouts._common import drop_outputs, is_image, make_source, role, sub_folders
from mdanet_sdk.data.nifti import nifti_stem

_LABEL = "msk"


def _suffix(path: Path) -> str:
    return nifti_stem(path).rsplit("_", 1)[-1].lower()


def _files(folder: Path) -> list[Path]:
    """The image files at any depth under ``folder``, hidden ones left out; linked folders are followed (a
    session stored elsewhere and linked in), each real folder once, so a link loop ends."""
    found, seen, root = [], set(), os.path.realpath(folder)
    for top, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(top)
        if real in seen or os.path.commonpath([root, real]) == real != root:  # visited, or a link up to an ancestor
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [p for p in (Path(top) / f for f in files) if is_image(p)]
    return sorted(found)


def _entity(path: Path, key: str) -> str | None:
    """The value of a BIDS entity in a file name (``ses`` of ``sub-1_ses-2_msk.nii.gz`` is ``"ses-2"``)."""
    return next((part for part in nifti_stem(path).split("_") if part.startswith(f"{key}-")), None)


def _of_session(path: Path, top: Path, session: str | None, only: bool) -> bool:
    """Whether a label under ``top`` belongs to ``session`` (None: the subject has no session): neither a ``ses-*``
    folder on its way nor its name's ``ses`` entity names another session; a label that names no session
    belongs to the subject's ``only`` session, never to one of several."""
    if session is None:
        return True
    named = [part for part in path.relative_to(top).parts[:-1] if part.startswith("ses-")]
    named += [e for e in (_entity(path, "ses"),) if e is not None]
    return all(part == session for part in named) and (only or bool(named))


def _sessions(subject: Path) -> list[Path]:
    return [p for p in sub_folders(subject) if p.name.startswith("ses-")]


#: BIDS datatype folders inside a session (``sub-X/ses-Y/dwi``): given as a case, they mean their session.
_DATATYPES = ("dwi", "anat", "perf", "func", "fmap")


def _entry(root: Path) -> Path:
    """``root``, or the session or subject folder of a BIDS datatype folder given instead."""
    parent = root.parent.name
    if root.name in _DATATYPES and (parent.startswith("ses-") or parent.startswith("sub-")):
        return root.parent
    return root


def isles22_subjects(root: Path) -> list[Path]:
    """The ``sub-*`` folders at or under ``root`` (the folder itself, its ``rawdata/``, or itself listed)."""
    root = _entry(root)
    if root.name.startswith("sub-"):
        return [root]
    if root.name.startswith("ses-") and root.parent.name.startswith("sub-"):
        return [root.parent]
    base = root / "rawdata" if (root / "rawdata").is_dir() else root
    return [p for p in sub_folders(base) if p.name.startswith("sub-")]


def _units(root: Path, subject: Path) -> list[tuple[str, Path, tuple[str, ...]]]:
    """(case id, folder to search, path of its labels under derivatives/) of each case of ``subject``: a subject
    with one session keeps that session in the path, so that it takes its own session's label."""
    sessions = _sessions(subject)
    if len(sessions) <= 1:
        return [(subject.name, subject, (subject.name, *(s.name for s in sessions)))]
    if root.name.startswith("ses-"):  # one session asked for
        sessions = [s for s in sessions if s.name == root.name]
    return [(f"{subject.name}_{s.name}", s, (subject.name, s.name)) for s in sessions]


def _labels(subject: Path, where: tuple[str, ...]) -> list[Path]:
    """The ``*_msk`` files of one case in ``derivatives/`` beside the subject folder or one level up: under
    ``derivatives/sub-X/ses-Y`` for a session, else anywhere under ``derivatives/sub-X`` but another session's."""
    session, only = (where[1] if len(where) > 1 else None), len(_sessions(subject)) <= 1
    for derivatives in (subject.parent / "derivatives", subject.parent.parent / "derivatives"):
        top = derivatives / where[0]
        if top.is_dir():
            labels = [p for p in _files(top) if _suffix(p) == _LABEL and _of_session(p, top, session, only)]
            if labels:
                return labels
    return []


def _found(case_id: str, folder: Path, subject: Path, where: tuple[str, ...], labels: bool) -> dict[str, list[Path]]:
    """BIDS suffix (or brain mask) -> files of one case."""
    found: dict[str, list[Path]] = {}
    beside: list[Path] = []  # lesion labels stored with the images (sub-X/lesion.nii.gz, sub-X_msk.nii.gz)
    for path in _files(folder):
        meaning = role(nifti_stem(path), ())
        if _suffix(path) == _LABEL or (meaning is not None and meaning[0] == LABEL_KEY):
            beside.append(path)
            continue
        key = BRAIN_MASK_KEY if meaning is not None and meaning[0] == BRAIN_MASK_KEY else _suffix(path)
        found.setdefault(key, []).append(path)
    if labels:  # ISLES'22 keeps labels in derivatives/; a subject folder without them may hold its own
        session, only = (where[1] if len(where) > 1 else None), len(_sessions(subject)) <= 1
        found[_LABEL] = _labels(subject, where) or [p for p in beside if _of_session(p, subject, session, only)]
    return drop_outputs(found, {case_id, subject.name, folder.name})


def find_isles22(root: Path, modalities: tuple[str, ...], labels: bool) -> list[CaseSource]:
    """Every ISLES'22 case at or under ``root`` (module doc); ``labels``: take ``derivatives/*_msk`` labels."""
    sources, root = [], _entry(root)
    for subject in isles22_subjects(root):
        for case_id, folder, where in _units(root, subject):
            found = _found(case_id, folder, subject, where, labels)
            expected = lambda name: f"*_{name}.nii(.gz)"  # noqa: E731
            sources.append(make_source(case_id, modalities, found, folder, expected, _LABEL if labels else None))
    return sources
