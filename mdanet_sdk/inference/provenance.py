"""What produced a segmentation: the SHA-256 of each weights file, and whether the weights were trained on
synthetic phantoms (:data:`SYNTHETIC_NOTICE`, which every report of theirs then carries).

A checkpoint counts as trained on synthetic data when it is a bundled file (``default-mri``, ``default-ctp``:
:data:`~mdanet_sdk.train.checkpoint.BUNDLED`), or when its ``meta["training_data"]`` says ``synthetic`` (the
bundled weights record ``"72 synthetic classic isles22 phantoms ..."`` there, so a copy of them elsewhere, or an
export artefact made from them, which keeps the checkpoint's metadata, is recognised too).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mdanet_sdk.errors import CheckpointError

__all__ = ["SYNTHETIC_NOTICE", "file_sha256", "trained_on_synthetic"]

#: The notice of weights trained on synthetic phantoms, shown in the terminal table and stored in the report.
SYNTHETIC_NOTICE = "trained on synthetic phantoms, not for clinical use"

_CHUNK = 1 << 20  # 1 MiB: the file is streamed, never held whole in memory
_SYNTHETIC_WORD = re.compile(r"\bsynthetic\b", re.IGNORECASE)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB chunks.

    Raises:
        CheckpointError: the file cannot be read (e.g. removed since it was loaded).
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise CheckpointError(
            f"{path} could not be read to record its SHA-256 ({exc.strerror or exc}); keep the weights file in "
            "place while the Segmenter loads it."
        ) from None
    return digest.hexdigest()


def trained_on_synthetic(meta: Mapping[str, Any], path: str | os.PathLike[str] | None) -> bool:
    """Whether the weights of ``path`` (with checkpoint metadata ``meta``) were trained on synthetic data.

    Args:
        meta: the checkpoint's metadata (an export artefact's ``meta["checkpoint"]``).
        path: the file the weights were read from, or ``None`` for weights built in memory.
    """
    from mdanet_sdk.train.checkpoint import BUNDLED  # read at call time: tests point the names elsewhere

    if path is not None and _same_file(Path(path), BUNDLED.values()):
        return True
    training_data = meta.get("training_data")
    return isinstance(training_data, str) and _SYNTHETIC_WORD.search(training_data) is not None


def _same_file(path: Path, candidates: Any) -> bool:
    """Whether ``path`` is one of ``candidates`` (same file on disk, so links and relative paths count)."""
    for candidate in candidates:
        try:
            if path.samefile(candidate):
                return True
        except OSError:  # a bundled file missing from this installation
            continue
    return False
