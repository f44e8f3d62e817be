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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mdanet_sdk.errors import CheckpointError

if TYPE_CHECKING:
    from mdanet_sdk.train.checkpoint import Checkpoint

__all__ = ["SYNTHETIC_NOTICE", "WeightsOrigin", "file_sha256", "trained_on_synthetic"]

#: The notice of weights trained on synthetic phantoms, shown in the terminal table and stored in the report.
SYNTHETIC_NOTICE = "trained on synthetic phantoms, not for clinical use"

_CHUNK = 1 << 20  # 1 MiB: the file is streamed, never held whole in memory
_SYNTHETIC_WORD = re.compile(r"\bsynthetic\b", re.IGNORECASE)


@dataclass(frozen=True)
class WeightsOrigin:
    """Where a Segmenter's weights come from, as its reports name them.

    Attributes:
        names: one name per checkpoint (``"default-mri"``, a file name without ``.pt``).
        model_version: the package version that wrote the first checkpoint (``""`` if it does not say).
        weights_sha256: the SHA-256 of each checkpoint's file (``None`` for weights built in memory).
        notice: :data:`SYNTHETIC_NOTICE` when any of them was trained on synthetic data, else ``""``.
    """

    names: list[str]
    model_version: str
    weights_sha256: list[str | None]
    notice: str

    @classmethod
    def of(cls, checkpoints: Sequence[Checkpoint]) -> WeightsOrigin:
        """The origin of ``checkpoints`` (one, or a fold ensemble), hashing each file once."""
        from mdanet_sdk.inference.ensemble import checkpoint_name

        synthetic = any(trained_on_synthetic(c.meta, c.path) for c in checkpoints)
        return cls(
            names=[checkpoint_name(c) for c in checkpoints],
            model_version=str(checkpoints[0].meta.get("package_version", "")),
            weights_sha256=[file_sha256(c.path) if c.path is not None else None for c in checkpoints],
            notice=SYNTHETIC_NOTICE if synthetic else "",
        )

    @property
    def name(self) -> str:
        """The models' names joined by ``+`` (e.g. ``"fold0+fold1"``)."""
        return "+".join(self.names)


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
