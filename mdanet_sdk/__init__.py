"""mdanet-sdk: MDANet for brain-stroke lesion segmentation (Zhang et al., BSPC 2024)."""

from __future__ import annotations

__version__ = "0.1.0"

from mdanet_sdk.config import MDANetConfig
from mdanet_sdk.errors import MDANetError

__all__ = ["__version__", "MDANetConfig", "MDANetError"]
