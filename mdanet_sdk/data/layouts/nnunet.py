"""nnU-Net raw datasets: ``imagesTr/CASE_0000.nii.gz``, ``CASE_0001.nii.gz``... (likewise ``imagesTs``), one
file per channel, labels ``labelsTr/CASE.nii.gz`` beside the images folder.

Entry points: the dataset root (holding ``dataset.json`` and ``images*/`` folders) or an images folder itself
(any folder whose image files are all named ``<CASE>_<4 digits>`` with a ``_0000``). Case id: ``CASE`` (when
``imagesTr`` and ``imagesTs`` hold the same id, ``imagesTr_CASE`` / ``imagesTs_CASE``).

Channel names come from ``dataset.json`` beside (or in) the images folder: nnU-Net v2 ``channel_names``
(``{"0": "DWI", "1": "ADC"}``) or v1 ``modality``, lowercased into this SDK's modality names (``b1000`` ->
``dwi``, ``TMAX`` -> ``tmax``...; other names stay as lowercased text). ``modalities`` then chooses channels by
name. Without ``dataset.json``, ``modalities`` gives the channel order (channel ``_000i`` is ``modalities[i]``).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

from mdanet_sdk.data.cases import LABEL_KEY, CaseSource
from mdanet_sdk.data.layouts._common import drop_outputs, image_files, make_source, sub_folders
from mdanet_sdk.data.nifti import OUTPUT_SUFFIXES, nifti_stem
from mdanet_sdk.errors import InputError

_CHANNEL = re.compile(r"^(.+)_(\d{4})$")
# Spellings of channel names (lowercased, without spaces, "-" and "_") -> this SDK's modality names.
_ALIASES = {
    "dwi": "dwi",
    "b1000": "dwi",
    "dwib1000": "dwi",
    "trace": "dwi",
    "adc": "adc",
    "cbf": "cbf",
    "cbv": "cbv",
    "mtt": "mtt",
    "tmax": "tmax",
    "flair": "flair",
}
_MAX_JSON_BYTES = 16 * 2**20


def channel_name(text: str) -> str:
    """A channel name of ``dataset.json`` as a modality name: ``"DWI"`` -> ``"dwi"``, ``"T-max"`` -> ``"tmax"``."""
    lower = str(text).strip().lower()
    return _ALIASES.get(re.sub(r"[\s_\-]", "", lower), lower)


def _is_channel_folder(folder: Path) -> bool:
    """Whether ``folder``'s image files are all ``<CASE>_<4 digits>`` (our outputs aside), one a ``_0000``."""
    stems = [nifti_stem(p) for p in image_files(folder)]
    stems = [s for s in stems if not s.lower().endswith(tuple(OUTPUT_SUFFIXES.values()))]
    return bool(stems) and all(_CHANNEL.match(s) for s in stems) and any(s.endswith("_0000") for s in stems)


def image_folders(root: Path) -> list[Path]:
    """The nnU-Net images folders at ``root``: the folder itself, or its ``images*`` folders."""
    if _is_channel_folder(root):
        return [root]
    return [p for p in sub_folders(root) if p.name.lower().startswith("images") and _is_channel_folder(p)]


def _channels_from_json(folder: Path) -> dict[int, str] | None:
    """Channel index -> modality name from the ``dataset.json`` beside or in ``folder``, or None if none."""
    for path in (folder / "dataset.json", folder.parent / "dataset.json"):
        if not path.is_file():
            continue
        try:
            if path.stat().st_size > _MAX_JSON_BYTES:
                raise ValueError(f"larger than {_MAX_JSON_BYTES} bytes")
            meta = json.loads(path.read_text(encoding="utf-8"))
            names = meta.get("channel_names") or meta.get("modality") if isinstance(meta, dict) else None
            if names is None:
                continue
            channels = {int(k): channel_name(v) for k, v in dict(names).items()}
        except (OSError, ValueError, TypeError) as exc:
            raise InputError(
                f"{path} is not a readable nnU-Net dataset.json ({exc}); fix it, or remove it and give the "
                "channel order with --modalities."
            ) from exc
        if len(set(channels.values())) != len(channels):
            raise InputError(f"{path} names one channel twice ({channels}); give each channel its own name.")
        return channels
    return None


def channels_named(root: Path) -> bool:
    """Whether a ``dataset.json`` names the channels of every nnU-Net images folder at ``root`` (if not, the
    channel order must come from the user, never silently from a model's modalities)."""
    folders = image_folders(root)
    return bool(folders) and all(_channels_from_json(folder) is not None for folder in folders)


def _channel_map(folder: Path, modalities: tuple[str, ...] | None) -> tuple[dict[str, int], bool]:
    """(modality -> channel index of the files to read, whether the channels were named by dataset.json)."""
    channels = _channels_from_json(folder)
    if channels is None:
        if modalities is None:
            raise InputError(
                f"{folder} is an nnU-Net folder without dataset.json; give its channel order with --modalities "
                "(Python: modalities=), e.g. --modalities dwi,adc for CASE_0000 = DWI, CASE_0001 = ADC."
            )
        return {name: i for i, name in enumerate(modalities)}, False
    index = {name: i for i, name in sorted(channels.items())}
    if modalities is None:
        return index, True
    missing = [m for m in modalities if m not in index]
    if missing:
        raise InputError(
            f"the dataset.json of {folder} names the channels {', '.join(index)}, not {', '.join(missing)}; "
            "choose --modalities among them."
        )
    return {m: index[m] for m in modalities}, True


def _label(folder: Path, case_id: str) -> list[Path]:
    """``labelsTr/<CASE>.*`` beside ``imagesTr`` (``labelsTs`` beside ``imagesTs``...)."""
    if not folder.name.lower().startswith("images"):
        return []
    labels = folder.parent / ("labels" + folder.name[len("images") :])
    return [p for p in image_files(labels) if nifti_stem(p) == case_id] if labels.is_dir() else []


def _folder_cases(folder: Path, modalities: tuple[str, ...] | None, labels: bool) -> list[CaseSource]:
    wanted, named = _channel_map(folder, modalities)
    files: dict[str, dict[int, list[Path]]] = {}
    for path in image_files(folder):
        match = _CHANNEL.match(nifti_stem(path))
        if match:
            files.setdefault(match.group(1), {}).setdefault(int(match.group(2)), []).append(path)
    sources = []
    for case_id, channels in files.items():
        found = {name: channels.get(i, []) for name, i in wanted.items()}
        found[LABEL_KEY] = _label(folder, case_id) if labels else []
        found = drop_outputs(found, {case_id})
        expected = lambda name: f"{case_id}_{wanted[name]:04d}.nii.gz"  # noqa: E731
        source = make_source(case_id, tuple(wanted), found, folder, expected, LABEL_KEY if labels else None)
        extra = sorted(set(channels) - set(wanted.values()))
        if extra and not named and source.problem is None:
            problem = (
                f"case {case_id}: {folder} holds channel {extra[0]:04d} but {len(wanted)} modalities were named "
                f"({', '.join(wanted)}); name every channel in order with --modalities."
            )
            source = replace(source, problem=problem)
        sources.append(source)
    return sources


def find_nnunet(root: Path, modalities: tuple[str, ...] | None, labels: bool) -> list[CaseSource]:
    """Every nnU-Net case at ``root`` (module doc)."""
    per_folder = [(folder, _folder_cases(folder, modalities, labels)) for folder in image_folders(root)]
    ids = Counter(s.case_id for _, sources in per_folder for s in sources)
    repeated = {i for i, n in ids.items() if n > 1}
    return [
        replace(s, case_id=f"{folder.name}_{s.case_id}") if s.case_id in repeated else s
        for folder, sources in per_folder
        for s in sources
    ]
