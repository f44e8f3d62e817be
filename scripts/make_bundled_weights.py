"""Regenerate the bundled demo weights ``default-mri`` and ``default-ctp`` (synthetic phantoms only).

    python scripts/make_bundled_weights.py [--work DIR] [--kinds mri,ctp]

Each kind: write a phantom dataset in its ISLES layout with the project's own ``synth`` code, train the
``small`` preset with the project's own trainer (fold 0 of 5), and ship fold 0's best checkpoint with its
weights stored as float16 (half the size; loading casts them back to the model's float32) and a note that
the weights are synthetic and not for clinical use. The phantoms use dataset seeds that the tests never use
for held-out evaluation (tests draw unseen cases from seed 9000+).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from mdanet_sdk._files import atomic_write
from mdanet_sdk.data.phantom import write_dataset
from mdanet_sdk.train.checkpoint import BUNDLED
from mdanet_sdk.train.trainer import TrainConfig, train

NOTE = (
    "Demo weights trained on synthetic phantoms only (scripts/make_bundled_weights.py). "
    "NOT FOR CLINICAL USE."
)

#: kind → (layout, dataset seed, cases, model grid, optimizer steps per epoch, epochs)
RECIPES = {
    "mri": ("isles22", 101, 36, 96, 40, 30),
    "ctp": ("isles18", 202, 36, 128, 40, 24),
}


def make(kind: str, work: Path) -> Path:
    layout, seed, cases, size, steps, epochs = RECIPES[kind]
    data = work / f"data-{kind}"
    if not data.exists():
        write_dataset(data, "isles22" if kind == "mri" else "isles18", cases, seed)
    run = work / f"run-{kind}"
    results = train(
        TrainConfig(
            data_dir=str(data), out_dir=str(run), layout=layout, kind=kind, preset="small", size=size,
            fold=0, epochs=epochs, steps_per_epoch=steps, batch_size=16, patience=0, lesion_fraction=0.5,
            seed=seed, resume=True,
        )
    )
    print(f"default-{kind}: {results.to_dict().get('summary', '')}")
    return ship(kind, work)


def ship(kind: str, work: Path) -> Path:
    """Copy fold 0's best checkpoint of ``work/run-KIND`` into the package, float16, labelled synthetic."""
    layout, seed, cases, *_ = RECIPES[kind]
    ckpt = torch.load(work / f"run-{kind}" / "fold_0" / "best.pt", weights_only=True)
    bundled = {k: ckpt[k] for k in ("format", "format_version", "model_config", "preprocess", "meta")}
    bundled["state_dict"] = {
        k: v.half() if v.is_floating_point() else v for k, v in ckpt["state_dict"].items()
    }
    bundled["meta"] = {**ckpt["meta"], "note": NOTE, "name": f"default-{kind}",
                       "training_data": f"{cases} synthetic {layout} phantoms, dataset seed {seed}"}
    out = atomic_write(BUNDLED[f"default-{kind}"], lambda tmp: torch.save(bundled, tmp))
    print(f"default-{kind}: epoch {ckpt['meta'].get('epoch')}, fold-0 validation DSC "
          f"{ckpt['meta'].get('val_dsc')} -> {out}")
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
