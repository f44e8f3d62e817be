"""Whole numbers from the environment (torchrun's ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), read one way."""

from __future__ import annotations

import os

from mdanet_sdk.errors import InputError

__all__ = ["env_int"]


def env_int(name: str, default: int) -> int:
    """The environment variable ``name`` as an int, ``default`` when it is not set.

    Raises:
        InputError: it is set but not a whole number (a launcher's mistake, said in one sentence).
    """
    text = os.environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise InputError(
            f"the environment variable {name}={text!r:.40} is not a whole number; start the job with torchrun, "
            "or unset it."
        ) from None
