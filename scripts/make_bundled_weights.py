"""Regenerate the bundled demo weights ``default-mri`` and ``default-ctp`` (synthetic phantoms only).

    python scripts/make_bundled_weights.py [--work DIR] [--kinds mri,ctp] [--from-stage N | --ship-only | --reseal]

Each kind: write a phantom dataset in its ISLES layout with the project's own ``synth`` code, train the
``small`` preset with the project's own trainer (fold 0 of the recipe's folds); each further stage fine-tunes
the previous stage's checkpoint (``--init``) on a fresh phantom set: MRI at a finer model grid (192), then both
kinds on domain-randomised phantoms (:mod:`mdanet_sdk.data.phantom.domain`) with intensity augmentation, back
on the native grid (128) whose bottleneck is the GCFB's node grid. Ship the last
stage's best fold-0 checkpoint with its weights stored as float16 where they fit its range (half the size;
loading casts them back to float32), a note that the weights are synthetic and not for clinical use, and the
post-processing (TTA, threshold, minimum lesion size, for MRI the restricted-diffusion gate) chosen on held-out
phantoms (case seeds 8000-8035, alternately classic and randomised) in ``meta["inference"]``, which the
Segmenter uses unless told otherwise, sealed by ``save_checkpoint`` with an integrity record (``--reseal`` only
re-seals the shipped files, with the preprocessing fields added since). The training phantoms use dataset seeds
that the tests never use for held-out evaluation (tests draw unseen cases from seed 9000+).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch

from mdanet_sdk._files import atomic_write
from mdanet_sdk.data.phantom import make_phantom, write_dataset
from mdanet_sdk.data.preprocess import PreprocessConfig, slice_stack
from mdanet_sdk.inference import PostprocessConfig, Segmenter, adc_in_head, choose_postprocessing
from mdanet_sdk.train.checkpoint import BUNDLED, load_checkpoint, save_checkpoint
from mdanet_sdk.train.trainer import TrainConfig, train

NOTE = "Demo weights trained on synthetic phantoms only (scripts/make_bundled_weights.py). NOT FOR CLINICAL USE."


class Stage(NamedTuple):
    seed: int  # dataset seed (case i has seed ``seed * 1000 + i``)
    cases: int
    folds: int  # fold 0 of these is the validation split
    size: int  # model grid
    steps: int  # optimizer steps per epoch
    epochs: int
    lesion_fraction: float
    lr: float
    train_seed: int
    domain: str = "classic"  # phantom domain (mdanet_sdk.data.phantom.domain)
    init: str | None = None  # the first stage's starting weights (later stages start from the previous one)
    dice: str = "batch"  # TrainConfig.dice: "slice" weighs small lesions' slices as much as large ones'
    inner_fraction: float = 0.15  # share of the training cases that picks the best epoch
    precision: str = "auto"  # TrainConfig.precision ("bf16" trains ~2x faster on CPUs with AMX)


class Recipe(NamedTuple):
    layout: str
    stages: tuple[Stage, ...]  # each after the first starts from the previous stage's best fold-0 checkpoint


#: MRI first trains on the native ~2 mm grid (128) and then fine-tunes at 192 (about 1.5-2x the native
#: matrix): its embolic and lacunar lesions are a few voxels across and the network's four halvings blur them
#: on a coarse grid. 192 from the start would cost ~2.5x the CPU time. More folds keep the per-epoch
#: validation short on a CPU.
RECIPES = {
    "mri": Recipe(
        "isles22",
        (
            Stage(103, 72, 12, 128, 40, 96, 0.6, 1e-3, 103),
            Stage(105, 108, 9, 192, 40, 14, 0.6, 3e-4, 107),
            Stage(111, 96, 12, 128, 40, 30, 0.6, 3e-4, 111, "randomised"),
            Stage(
                151, 240, 40, 128, 40, 30, 0.6, 1e-4, 152, "mixed", dice="slice", inner_fraction=0.03, precision="bf16"
            ),
        ),
    ),
    "ctp": Recipe(
        "isles18",
        (Stage(202, 36, 5, 128, 40, 24, 0.5, 1e-3, 202), Stage(211, 60, 10, 128, 40, 24, 0.5, 3e-4, 211, "randomised")),
    ),
}
#: MRI stage 4 fine-tunes on many more fresh phantoms, classic and randomised alternately, with the per-slice Dice
#: (a lacune's slices weigh as much as a territorial infarct's); 40 folds and a 3 % inner split keep the per-epoch
#: validation of 240 cases short on a CPU.
#: ``--from-stage N`` starts at stage N (1-based) from the weights that the stages before it shipped in the release
#: named here (kind -> 0-based stage -> git revision), so a machine with two cores does not repeat hours of
#: training and a rerun does not fine-tune its own output again.
RELEASES = {"mri": {2: "e9c8b36", 3: "83bb8af"}, "ctp": {1: "e9c8b36"}}


#: Phantoms (case seeds) that choose the post-processing; held out from training and from the tests (9000+):
#: half classic, half domain-randomised, so the choice holds beyond one generator.
TUNING_SEEDS = range(8000, 8036)
TUNING_DOMAINS = ("classic", "randomised")


def run_dir(kind: str, work: Path, stage: int) -> Path:
    """The training run of ``stage`` (0-based): ``work/run-KIND`` for the first, ``work/run-KIND-2`` ..."""
    return work / (f"run-{kind}" if stage == 0 else f"run-{kind}-{stage + 1}")


def _previous(kind: str, work: Path, stage: int) -> str:
    """The bundled ``default-KIND`` that the stages before ``stage`` (0-based) made, extracted from the git
    revision :data:`RELEASES` names into ``work``."""
    revision = RELEASES[kind][stage]
    path = work / f"default-{kind}-{revision}.pt"
    if not path.is_file():
        blob = subprocess.run(
            ["git", "show", f"{revision}:mdanet_sdk/weights/default-{kind}.pt"],
            cwd=Path(__file__).resolve().parents[1],
            capture_output=True,
            check=True,
        ).stdout
        work.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_bytes(blob))
        # Early releases predate integrity records: trust the file from our own git history and seal it, so the
        # trainer's --init loads it like any checkpoint (tensors unchanged).
        old = load_checkpoint(path, trust=True)
        save_checkpoint(path, old.state_dict, old.model_config, old.preprocess, old.meta)
    return str(path)


def _start(kind: str, work: Path, i: int, first: int) -> str | None:
    """The weights stage ``i`` starts from: the previous stage's best, or, when a run starts at ``first``
    without it, the released ones (:data:`RELEASES`)."""
    if i == 0:
        return None
    previous = run_dir(kind, work, i - 1) / "fold_0" / "best.pt"
    if i == first and not previous.is_file():
        return _previous(kind, work, i)
    return str(previous)


def stage_config(kind: str, st: Stage, data: Path, out: Path, init: str | None, **runtime: Any) -> TrainConfig:
    """The training run of stage ``st`` (fold 0, the ``small`` preset, batch 16, no early stopping) on the dataset
    ``data``, into ``out``, from ``init``; ``runtime``: further :class:`TrainConfig` fields (device, workers,
    resume)."""
    return TrainConfig(
        data_dir=str(data),
        out_dir=str(out),
        layout=RECIPES[kind].layout,
        kind=kind,
        preset="small",
        size=st.size,
        folds=st.folds,
        fold=0,
        epochs=st.epochs,
        steps_per_epoch=st.steps,
        batch_size=16,
        lr=st.lr,
        patience=0,
        lesion_fraction=st.lesion_fraction,
        dice=st.dice,
        inner_fraction=st.inner_fraction,
        precision=st.precision,
        seed=st.train_seed,
        init=init,
        **runtime,
    )


def make(kind: str, work: Path, first: int = 0) -> Path:
    r = RECIPES[kind]
    for i, st in enumerate(r.stages):
        if i < first:
            continue
        data = work / f"data-{kind}-{st.seed}"
        if not (data / "phantoms.json").is_file():  # written last: a dataset cut short is written again
            write_dataset(data, r.layout, st.cases, st.seed, workers=os.cpu_count() or 1, domain=st.domain)
        results = train(stage_config(kind, st, data, run_dir(kind, work, i), _start(kind, work, i, first), resume=True))
        print(f"default-{kind} stage {i + 1}: {results.to_dict().get('summary', '')}")
    return ship(kind, work)


def _compact(tensor: torch.Tensor) -> torch.Tensor:
    """float16 when the values fit its range, else as they are: a BatchNorm running variance can exceed
    65504 and would become inf (that channel's output then collapses to 0)."""
    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if torch.isfinite(half).all() else tensor


def tune(kind: str, path: Path | str) -> tuple[PostprocessConfig, float]:
    """Post-processing (TTA, threshold, minimum lesion size, for MRI the ADC gate) for ``path``, chosen on the
    held-out tuning phantoms."""
    segmenters = {tta: Segmenter.from_checkpoint(path, device="cpu", tta=tta) for tta in (False, True)}
    probabilities: dict[bool, list] = {tta: [] for tta in segmenters}
    labels, adc, parenchyma = [], [], []
    for k, seed in enumerate(TUNING_SEEDS):
        phantom = make_phantom(RECIPES[kind].layout, seed, domain=TUNING_DOMAINS[k % 2])
        labels.append(phantom.label)
        if kind == "mri":  # the gate reads the tissue ADC where the Segmenter's does: in its head or parenchyma
            geometry = slice_stack(phantom.images, ("dwi", "adc"), segmenters[False].preprocess).geometry
            assert geometry.head is not None
            adc.append(adc_in_head(phantom.images["adc"], geometry.head))
            parenchyma.append(geometry.parenchyma)
        for tta, segmenter in segmenters.items():
            probabilities[tta].append(segmenter.predict(phantom).probability_canonical)
    if kind != "mri":
        return choose_postprocessing(probabilities, labels)
    return choose_postprocessing(probabilities, labels, adc=adc, parenchyma=parenchyma)


def ship(kind: str, work: Path) -> Path:
    """Copy the last stage's best fold-0 checkpoint into the package, compacted, labelled synthetic, with the
    post-processing :func:`tune` chose."""
    r = RECIPES[kind]
    best = run_dir(kind, work, len(r.stages) - 1) / "fold_0" / "best.pt"
    ckpt = load_checkpoint(best)
    inference, score = tune(kind, best)
    meta = {
        **ckpt.meta,
        "note": NOTE,
        "name": f"default-{kind}",
        "training_data": " then ".join(
            f"{st.cases} synthetic {st.domain} {r.layout} phantoms (dataset seed {st.seed}, grid {st.size})"
            for st in r.stages
        ),
        "inference": inference.to_dict(),
        "inference_tuning": f"chosen on {len(TUNING_SEEDS)} held-out phantoms (seeds "
        f"{TUNING_SEEDS[0]}-{TUNING_SEEDS[-1]}): mean DSC {score:.3f}",
    }
    weights = {k: _compact(v) for k, v in ckpt.state_dict.items()}
    # save_checkpoint seals the file with its integrity record, which load_checkpoint requires.
    out = save_checkpoint(BUNDLED[f"default-{kind}"], weights, ckpt.model_config, ckpt.preprocess, meta)
    print(
        f"default-{kind}: epoch {ckpt.meta.get('epoch')}, fold-0 validation DSC "
        f"{ckpt.meta.get('val_dsc')}, post-processing {inference} (tuning DSC {score:.3f}) -> {out}"
    )
    return out


def reseal(kind: str) -> Path:
    """Re-save the bundled ``default-KIND`` with an integrity record (files shipped before records existed) and
    the preprocessing the recipe trains with now: the same tensors (dtypes and bytes), model config and
    metadata. ``head_fill`` (added after the weights were trained) crops only heads that fill less than half
    their field of view, which no training phantom's does, so the weights saw the same slices either way."""
    old = load_checkpoint(f"default-{kind}", trust=True)
    preprocess = replace(old.preprocess, head_fill=PreprocessConfig().head_fill)
    out = save_checkpoint(BUNDLED[f"default-{kind}"], old.state_dict, old.model_config, preprocess, old.meta)
    print(f"default-{kind}: sealed -> {out}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("build/bundled-weights"))
    parser.add_argument("--kinds", default="mri,ctp")
    parser.add_argument("--ship-only", action="store_true", help="Ship the best checkpoint of an existing run.")
    parser.add_argument(
        "--reseal",
        action="store_true",
        help="Only re-save the bundled weights with an integrity record and today's preprocessing fields (tensors unchanged).",
    )
    parser.add_argument(
        "--from-stage",
        type=int,
        default=1,
        help="Start at this stage (1-based) from the bundled weights of the previous release.",
    )
    args = parser.parse_args()
    for kind in args.kinds.split(","):
        start = time.time()
        if args.reseal:
            reseal(kind)
        elif args.ship_only:
            ship(kind, args.work)
        else:
            make(kind, args.work, min(args.from_stage, len(RECIPES[kind].stages)) - 1)
        print(f"default-{kind} done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
