"""The ``mdanet-sdk`` command line: a thin Typer layer over the Python API.

Each command lives in its own module and registers itself on :data:`app`; our errors are printed on one
line and turn into a non-zero exit code.
"""

from __future__ import annotations


from mdanet_sdk.cli._app import app, main  # noqa: F401

# One import per command module (each registers its command on `app`).
from mdanet_sdk.cli import summary  # noqa: E402,F401
from mdanet_sdk.cli import info  # noqa: E402,F401
from mdanet_sdk.cli import evaluate  # noqa: E402,F401
from mdanet_sdk.cli import train  # noqa: E402,F401
from mdanet_sdk.cli import ablate  # noqa: E402,F401
from mdanet_sdk.cli import export  # noqa: E402,F401
from mdanet_sdk.cli import benchmark  # noqa: E402,F401
from mdanet_sdk.cli import segment  # noqa: E402,F401
from mdanet_sdk.cli import demo  # noqa: E402,F401
from mdanet_sdk.cli import synth  # noqa: E402,F401

__all__ = ["app", "main"]
