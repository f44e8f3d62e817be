"""mdanet-sdk: MDANet for brain-stroke lesion segmentation (Zhang et al., BSPC 2024)."""

from __future__ import annotations

__version__ = "0.1.0"

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import MDANetError

__all__ = ["__version__", "MDANetConfig", "MDANetError", "Segmenter", "segment"]


def __getattr__(name: str) -> object:
    # Lazy: `import mdanet_sdk` stays light (no torch import) until the Segmenter is used.
    if name == "Segmenter":
        from mdanet_sdk.inference import Segmenter

        return Segmenter
    if name == "segment":
        from mdanet_sdk.inference.batch import segment

        return segment
    raise AttributeError(f"module 'mdanet_sdk' has no attribute {name!r}")
