"""Training: the losses of the paper (section 3.4), checkpoints and the fit loop.

Import what you need from the submodules, e.g. ``from mdanet_sdk.train.losses import MDANetLoss``; this
package imports nothing itself, so the light modules stay usable without the heavy ones.
"""
