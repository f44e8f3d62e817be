"""Data: NIfTI IO, ISLES case readers, the synthetic phantom, preprocessing and the slice dataset.

This package knows nothing about the model.
"""
