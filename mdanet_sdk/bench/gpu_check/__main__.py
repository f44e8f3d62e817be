"""``python -m mdanet_sdk.bench.gpu_check``: the GPU check (:func:`~mdanet_sdk.bench.gpu_check.cli.main`)."""

from __future__ import annotations

import sys

from mdanet_sdk.bench.gpu_check.cli import main

sys.exit(main())
