"""``mdanet-sdk summary``: parameter count and FLOPs of a preset."""
