"""``python -m mdanet_sdk.bench SPEC``: the many section's child process (:func:`~mdanet_sdk.bench.many.many_child`).

One JSON spec in argv, one JSON result line on stdout.
"""

from __future__ import annotations

import json
import sys

from mdanet_sdk.bench.many import many_child

print(json.dumps(many_child(json.loads(sys.argv[1]))))
