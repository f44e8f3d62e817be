"""The exceptions a user of the SDK can see.

Every error a user can cause (a bad file, a missing modality, an incompatible checkpoint) is raised as
:class:`MDANetError` or one of its subclasses, with a message that says what is wrong and what to do.
The CLI prints that message on one line and exits non-zero.
"""

from __future__ import annotations

__all__ = ["MDANetError", "InputError", "CheckpointError", "BackendUnavailableError", "ExportError"]


class MDANetError(Exception):
    """Base class of every user-facing error of mdanet-sdk."""


class InputError(MDANetError, ValueError):
    """An input volume, case folder or argument is unusable (missing modality, bad geometry, not NIfTI...)."""


class CheckpointError(MDANetError):
    """A checkpoint is missing, corrupt, from a newer format or incompatible with the requested model."""


class BackendUnavailableError(MDANetError, RuntimeError):
    """A requested backend (CUDA, native ops, TensorRT) is not available on this machine."""


class ExportError(MDANetError):
    """A model could not be exported, or the exported artefact does not reproduce the eager model."""
