"""Phantoms on disk: :func:`write_dataset` lays them out as real NIfTI files like the ISLES'22 and ISLES'18
datasets, stored in the orientations those datasets use."""

from __future__ import annotations

import json
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np

from mdanet_sdk._files import remove_stale_temps, signals_deferred, temp_prefix, write_json
from mdanet_sdk.data.nifti import atomic_save
from mdanet_sdk.data.phantom.generate import (
    PHANTOM_MODALITIES,
    Phantom,
    case_name,
    case_seed,
    check_options,
    make_phantom,
)
from mdanet_sdk.errors import InputError

__all__ = ["write_dataset"]

# ISLES'18 file tokens (SMIR.Brain.XX.O.<token>.<id>.nii).
_SMIR_TOKENS = {"cbf": "CT_CBF", "cbv": "CT_CBV", "mtt": "CT_MTT", "tmax": "CT_Tmax", "ct": "CT", "label": "OT"}
# Stored voxel axis codes -> which canonical axes are flipped.
_FLIPS = {"RAS": (False, False, False), "LAS": (True, False, False), "LPS": (True, True, False)}
# The generator named in phantoms.json and dataset_description.json (kept: the files stay as they were).
_GENERATOR = "mdanet_sdk.data.phantom"
#: What :func:`write_dataset` puts at a dataset's root: only a folder holding nothing else is replaced.
_OWN_ENTRIES = {"rawdata", "derivatives", "TRAINING", "dataset_description.json", "phantoms.json"}


def _stored(array: np.ndarray, affine: np.ndarray, orientation: str) -> tuple[np.ndarray, np.ndarray]:
    """Canonical RAS array and affine → the same image stored with voxel axes ``orientation`` (exact flips)."""
    flip = np.eye(4)
    for axis, flipped in enumerate(_FLIPS[orientation]):
        if flipped:
            array = array[(slice(None),) * axis + (slice(None, None, -1),)]
            flip[axis, axis], flip[axis, 3] = -1.0, array.shape[axis] - 1
    return np.ascontiguousarray(array), affine @ flip


def _save(array: np.ndarray, phantom: Phantom, dtype: str, path: Path, qform_code: int) -> None:
    data, affine = _stored(array, phantom.affine, phantom.info["orientation"])
    img = nib.Nifti1Image(data.astype(dtype), affine)
    img.header.set_qform(affine, code=qform_code)
    img.header.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    atomic_save(img, path)


def _write_isles22(out: Path, ph: Phantom, name: str) -> None:
    stem = f"{name}_ses-0001"
    for modality in PHANTOM_MODALITIES["isles22"]:
        path = out / "rawdata" / name / "ses-0001" / "dwi" / f"{stem}_{modality}.nii.gz"
        _save(ph.images[modality], ph, ph.info["dtypes"][modality], path, qform_code=2)
    assert ph.label is not None  # make_phantom always draws the label
    _save(ph.label, ph, "uint8", out / "derivatives" / name / "ses-0001" / f"{stem}_msk.nii.gz", qform_code=2)


def _write_isles18(out: Path, ph: Phantom, name: str, index: int) -> None:
    for k, modality in enumerate((*PHANTOM_MODALITIES["isles18"], "label")):
        file = f"SMIR.Brain.XX.O.{_SMIR_TOKENS[modality]}.{300000 + 10 * index + k}"
        array, dtype = (
            (ph.label, "uint8") if modality == "label" else (ph.images[modality], ph.info["dtypes"][modality])
        )
        assert array is not None  # make_phantom always draws the label
        _save(array, ph, dtype, out / "TRAINING" / name / file / f"{file}.nii", qform_code=1)


def write_dataset(
    out_dir: str | os.PathLike[str],
    layout: str = "isles22",
    n_cases: int = 10,
    seed: int = 0,
    *,
    workers: int = 1,
    **options: Any,
) -> Path:
    """Write ``n_cases`` phantoms as real NIfTI files in the folder layout of the real dataset.

    Layouts (case ``i`` is ``make_phantom(layout, case_seed(seed, i), **options)``, see :func:`case_name`):

    - ``"isles22"``: ``rawdata/sub-strokecaseXXXX/ses-0001/dwi/sub-strokecaseXXXX_ses-0001_{dwi,adc}.nii.gz``
      and ``derivatives/sub-strokecaseXXXX/ses-0001/sub-strokecaseXXXX_ses-0001_msk.nii.gz``, plus
      ``dataset_description.json``; stored LAS or RAS, qform code 2, sform code 1.
    - ``"isles18"``: ``TRAINING/case_N/SMIR.Brain.XX.O.{CT_CBF,CT_CBV,CT_MTT,CT_Tmax,CT,OT}.NNNNNN/`` each with
      one same-named ``.nii``; stored LPS, LAS or RAS.

    ``phantoms.json`` at the root records each case's id, seed and :attr:`Phantom.info`. The dataset is written
    into a hidden folder inside ``out_dir`` and its entries are moved into place when complete (``phantoms.json``
    last), so an interrupted run leaves no half dataset that would read as real data; an earlier synthetic
    dataset there is replaced.

    Args:
        out_dir: dataset root: a new or empty folder, or one that ``write_dataset`` wrote before (every case folder
            in it listed in its ``phantoms.json``).
        layout: ``"isles22"`` or ``"isles18"`` (:data:`KIND_LAYOUT` maps a modality kind to it).
        n_cases: number of cases (>= 1).
        seed: dataset seed (>= 0).
        workers: processes that draw and write cases in parallel (the files do not depend on it).
        **options: passed to :func:`make_phantom` (``shape``, ``spacing``, ``pattern``, ``n_lesions``, ``domain``).

    Returns:
        ``out_dir`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: ``n_cases < 1``, ``workers < 1``, a negative seed, ``out_dir`` is a file or holds anything
            but an earlier synthetic dataset (real data is never replaced), or an invalid phantom option.
    """
    out = Path(out_dir)
    if n_cases < 1 or workers < 1 or int(seed) < 0:
        raise InputError(
            f"n_cases and workers must be at least 1 and seed 0 or more, got {n_cases}, {workers}, {seed}."
        )
    check_options(
        layout, options.get("shape"), options.get("pattern"), options.get("n_lesions"), options.get("domain", "classic")
    )
    _check_target(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / "dataset"  # names this process's hidden work folder inside ``out`` (see _files.temp_prefix)
    remove_stale_temps(marker)  # work folders that killed runs left
    partial = out / f"{temp_prefix(marker)}synth.tmp"
    try:
        partial.mkdir()
        jobs = [(partial, layout, seed, i, options) for i in range(n_cases)]
        if workers == 1 or n_cases == 1:
            records = [_write_case(*job) for job in jobs]
        else:  # each case is drawn from its own seed, so the files are the same as written one by one
            with ProcessPoolExecutor(min(workers, n_cases)) as pool:
                records = list(pool.map(_write_case, *zip(*jobs), chunksize=max(1, n_cases // (4 * workers))))
        _write_index(partial, layout, seed, records)
        _check_target(out)  # again: nothing foreign may have arrived meanwhile
        _move_into_place(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def _check_target(out: Path) -> None:
    """Refuse a target that is a file, or a folder holding anything but a dataset :func:`write_dataset` wrote:
    top-level entries of its own, and under them only the case folders its ``phantoms.json`` lists."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file; give a folder to write the dataset into.")
    if not out.is_dir():
        return
    entries = {p.name for p in out.iterdir() if not p.name.startswith(".")}
    foreign = sorted(entries - _OWN_ENTRIES) if (out / "phantoms.json").is_file() else sorted(entries)
    if not foreign and entries:
        try:
            listed = {str(c["case_id"]) for c in json.loads((out / "phantoms.json").read_text())["cases"]}
        except (OSError, ValueError, KeyError, TypeError):
            listed = set()
        top = [out / name for name in ("rawdata", "derivatives", "TRAINING") if (out / name).is_dir()]
        foreign = sorted(
            str(p.relative_to(out)) for d in top for p in d.iterdir() if p.name not in listed and p.name[0] != "."
        )
    if foreign:
        raise InputError(
            f"{out} holds files that mdanet-sdk synth did not write ({', '.join(foreign[:3])}); synth replaces "
            "a dataset it wrote, so give a new or empty folder."
        )


def _move_into_place(partial: Path, out: Path) -> None:
    """Replace an earlier synthetic dataset in ``out`` (checked) by the finished one in ``partial``, entry by entry
    (``out`` itself may be the working folder, a mount point or a link): the old entries are renamed into a
    hidden folder and the new ones in, ``phantoms.json`` last, with Ctrl-C held meanwhile, so the folder holds
    one whole dataset or the other."""
    old = partial.with_name(partial.name.replace("synth.tmp", "old.tmp"))
    old.mkdir()
    try:
        with signals_deferred():
            for name in sorted(_OWN_ENTRIES, key=lambda n: n != "phantoms.json"):
                if os.path.lexists(out / name):
                    os.rename(out / name, old / name)
            for entry in sorted(partial.iterdir(), key=lambda p: p.name == "phantoms.json"):
                os.rename(entry, out / entry.name)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _write_case(out: Path, layout: str, seed: int, index: int, options: dict[str, Any]) -> dict[str, Any]:
    """Draw and write case ``index`` of the dataset; its ``phantoms.json`` record."""
    name, case_s = case_name(layout, index), case_seed(seed, index)
    ph = make_phantom(layout, case_s, case_id=name, **options)
    if layout == "isles22":
        _write_isles22(out, ph, name)
    else:
        _write_isles18(out, ph, name, index)
    return {"case_id": name, "seed": case_s, "info": ph.info}


def _write_index(out: Path, layout: str, seed: int, records: list[dict[str, Any]]) -> None:
    """Write the dataset's JSON files: ``phantoms.json`` (``records``: each case's id, seed and info) and, for
    ISLES'22, the BIDS ``dataset_description.json``."""
    if layout == "isles22":
        write_json(
            out / "dataset_description.json",
            {
                "Name": "mdanet-sdk synthetic ISLES'22-like phantoms",
                "BIDSVersion": "1.7.0",
                "DatasetType": "raw",
                "GeneratedBy": [{"Name": _GENERATOR}],
            },
        )
    # "kind" holds the layout: the key is kept so that phantoms.json files stay as they were.
    write_json(
        out / "phantoms.json",
        {
            "generator": _GENERATOR,
            "kind": layout,
            "seed": int(seed),
            "case_seed": "seed * 1000 + index",
            "cases": records,
        },
    )
