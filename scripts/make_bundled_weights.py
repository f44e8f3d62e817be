"""Regenerate the bundled demo weights ``default-mri`` and ``default-ctp`` (synthetic phantoms only).

    python scripts/make_bundled_weights.py [--work DIR] [--kinds mri,ctp]

Each kind: write a phantom dataset in its ISLES layout with the project's own ``synth`` code, train the
``small`` preset with the project's own trainer (fold 0 of the recipe's folds), and ship fold 0's best
checkpoint with its weights stored as float16 where they fit its range (half the size; loading casts them
back to float32), a note that the weights are synthetic and not for clinical use, and the post-processing
(TTA, threshold, minimum lesion size) chosen on held-out phantoms (case seeds 8000-8035) in ``meta["inference"]``,
which the Segmenter uses unless told otherwise. The training phantoms use dataset seeds that the tests never
use for held-out evaluation (tests draw unseen cases from seed 9000+).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import NamedTuple

import torch

from mdanet_sdk._files import atomic_write
from mdanet_sdk.data.phantom import make_phantom, write_dataset
from mdanet_sdk.inference import Segmenter, choose_postprocessing
from mdanet_sdk.train.checkpoint import BUNDLED
from mdanet_sdk.train.trainer import TrainConfig, train

NOTE = (
    "Demo weights trained on synthetic phantoms only (scripts/make_bundled_weights.py). "
    "NOT FOR CLINICAL USE."
)


class Recipe(NamedTuple):
    layout: str
    seed: int  # dataset seed (case i has seed ``seed * 1000 + i``)
    cases: int
    folds: int  # fold 0 of these is the validation split
    size: int  # model grid
    steps: int  # optimizer steps per epoch
    epochs: int
    lesion_fraction: float


#: MRI trains on the native ~2 mm grid (128): its embolic and lacunar lesions are a few voxels across and
#: vanish when the grid is shrunk. More folds keep the per-epoch validation short on a CPU.
RECIPES = {
    "mri": Recipe("isles22", 103, 72, 12, 128, 40, 96, 0.6),
    "ctp": Recipe("isles18", 202, 36, 5, 128, 40, 24, 0.5),
}


#: Phantoms (case seeds) that choose the post-processing; held out from training and from the tests (9000+).
TUNING_SEEDS = range(8000, 8036)


def make(kind: str, work: Path) -> Path:
    r = RECIPES[kind]
    data = work / f"data-{kind}"
    if not data.exists():
        write_dataset(data, r.layout, r.cases, r.seed)
    run = work / f"run-{kind}"
    results = train(
        TrainConfig(
            data_dir=str(data), out_dir=str(run), layout=r.layout, kind=kind, preset="small", size=r.size,
            folds=r.folds, fold=0, epochs=r.epochs, steps_per_epoch=r.steps, batch_size=16, patience=0,
            lesion_fraction=r.lesion_fraction, seed=r.seed, resume=True,
        )
    )
    print(f"default-{kind}: {results.to_dict().get('summary', '')}")
    return ship(kind, work)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """float16 when the values fit its range, else as they are: a BatchNorm running variance can exceed
    65504 and would become inf (that channel's output then collapses to 0)."""
    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if torch.isfinite(half).all() else tensor


def tune(kind: str, path: Path) -> tuple[dict, float]:
    """Post-processing (TTA, threshold, minimum lesion size, for MRI the ADC gate) for ``path``, chosen on the
    held-out tuning phantoms."""
    segmenters = {tta: Segmenter.from_checkpoint(path, device="cpu", tta=tta) for tta in (False, True)}
    probabilities: dict[bool, list] = {tta: [] for tta in segmenters}
    labels, adc = [], []
    for seed in TUNING_SEEDS:
        phantom = make_phantom(RECIPES[kind].layout, seed)
        labels.append(phantom.label)
        adc.append(phantom.images.get("adc"))
        for tta, segmenter in segmenters.items():
            probabilities[tta].append(segmenter.predict(phantom).probability_canonical)
    return choose_postprocessing(probabilities, labels, adc=adc if kind == "mri" else None)


def ship(kind: str, work: Path) -> Path:
    """Copy fold 0's best checkpoint of ``work/run-KIND`` into the package, compacted, labelled synthetic, with
    the post-processing :func:`tune` chose."""
    r = RECIPES[kind]
    best = work / f"run-{kind}" / "fold_0" / "best.pt"
    ckpt = torch.load(best, weights_only=True)
    inference, score = tune(kind, best)
    bundled = {k: ckpt[k] for k in ("format", "format_version", "model_config", "preprocess", "meta")}
    bundled["state_dict"] = {k: _compact(v) for k, v in ckpt["state_dict"].items()}
    bundled["meta"] = {**ckpt["meta"], "note": NOTE, "name": f"default-{kind}",
                       "training_data": f"{r.cases} synthetic {r.layout} phantoms, dataset seed {r.seed}",
                       "inference": inference,
                       "inference_tuning": f"chosen on {len(TUNING_SEEDS)} held-out phantoms (seeds "
                                           f"{TUNING_SEEDS[0]}-{TUNING_SEEDS[-1]}): mean DSC {score:.3f}"}
    out = atomic_write(BUNDLED[f"default-{kind}"], lambda tmp: torch.save(bundled, tmp))
    print(f"default-{kind}: epoch {ckpt['meta'].get('epoch')}, fold-0 validation DSC "
          f"{ckpt['meta'].get('val_dsc')}, post-processing {inference} (tuning DSC {score:.3f}) -> {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bundled-weights"))
    parser.add_argument("--kinds", default="mri,ctp")
    parser.add_argument("--ship-only", action="store_true", help="Ship the best checkpoint of an existing run.")
    args = parser.parse_args()
    for kind in args.kinds.split(","):
        start = time.time()
        (ship if args.ship_only else make)(kind, args.work)
        print(f"default-{kind} done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
