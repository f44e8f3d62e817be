#!/usr/bin/env python
"""Score a model on out-of-distribution (OOD) phantoms and, for MRI, on the real ISLES'22 example case.

The OOD phantoms (``tests/ood_phantoms.py``) come from a generator that shares nothing with the training
phantoms (:mod:`mdanet_sdk.data.phantom`), so these scores measure generalisation, not fit. Cases are the
seeds ``0 .. N-1``; each is segmented in memory with :meth:`Segmenter.predict_arrays` and scored with
:func:`mdanet_sdk.metrics.case_metrics` (Dice, ISLES'22 lesion-wise F1, volumes in mL).

Usage (from the repository root)::

    .venv/bin/python scripts/eval_generalization.py                      # both kinds, 12 cases each
    .venv/bin/python scripts/eval_generalization.py --kind mri --cases 4 --json ood.json
    .venv/bin/python scripts/eval_generalization.py --kind ctp --checkpoint runs/x/fold_0/best.pt
    .venv/bin/python scripts/eval_generalization.py --kind mri --checkpoint cand.pt --tune --own 24

``--checkpoint`` (a file or bundled name) replaces the bundled weights of the one ``--kind`` evaluated.
``--tune`` first chooses its post-processing on the held-out tuning phantoms, as
``scripts/make_bundled_weights.py`` does before shipping (for a candidate that carries none). ``--own N`` also
scores the held-out phantoms of the project's own generator: the tuning seeds 8000-8035 (classic and randomised
alternately) and the test seeds 9000 .. 9000+N-1 in each domain, so candidates are judged on many cases of every
kind before anyone looks at the real case.
The real case is read from ``--real`` (default ``../shared/data/isles22-example`` beside the repository)
with the package's ISLES'22 reader; it is skipped, with a note, when absent or unlabelled.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from mdanet_sdk.data.cases import read_case
from mdanet_sdk.data.phantom import KIND_LAYOUT, make_phantom
from mdanet_sdk.inference import Segmenter
from mdanet_sdk.metrics import case_metrics

from make_bundled_weights import TUNING_DOMAINS, TUNING_SEEDS, tune

REPO = Path(__file__).resolve().parents[1]
DEFAULT_REAL = REPO.parent / "shared" / "data" / "isles22-example"


def _ood_case(kind: str, seed: int):
    """The OOD generator lives with the tests (it is test-only); import it from there."""
    tests = str(REPO / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)
    from ood_phantoms import ood_case

    return ood_case(kind, seed)


def _score(pred: np.ndarray, truth: np.ndarray, voxel_ml: float) -> dict[str, float]:
    """The numbers reported per case (a subset of ``case_metrics``, renamed for the table)."""
    m = case_metrics(pred, truth, voxel_ml)
    return {
        "dice": m["dsc"],
        "lesion_f1": m["lesion_f1"],
        "volume_pred_ml": m["volume_pred_ml"],
        "volume_true_ml": m["volume_gt_ml"],
        "n_lesions_pred": int(m["n_lesions_pred"]),
        "n_lesions_true": int(m["n_lesions_gt"]),
    }


def _variant(info: dict[str, Any]) -> str:
    """A short description of the case's drawn variant, to see which variants fail."""
    if info["kind"] == "mri":
        skull = " skull" if info["skull"] else ""
        return (
            f"{info['brain_shape']} bg={info['background']} adc={info['adc_unit']:g} "
            f"dwi={info['dwi_tissue']:.3g}{skull} {info['spacing_mm'][0]:.1f}x{info['spacing_mm'][2]:.1f}mm"
        )
    return (
        f"cbf x{info['cbf_gain']:.3g} cbv x{info['cbv_gain']:.3g} mtt[{info['mtt_unit']}] "
        f"tmax[{info['tmax_unit']}] {len(info['cores'])} core(s)"
    )


def eval_phantoms(segmenter, kind: str, n: int) -> list[dict[str, Any]]:
    """Segment and score OOD phantoms of seeds ``0 .. n-1``."""
    rows = []
    for seed in range(n):
        case = _ood_case(kind, seed)
        start = time.perf_counter()
        result = segmenter.predict_arrays(case.images, case.affine, case_id=case.case_id)
        row = {"case": case.case_id, "seed": seed, **_score(result.mask, case.label, case.voxel_volume_ml)}
        row.update(seconds=time.perf_counter() - start, variant=_variant(case.info))
        rows.append(row)
        _print_row(row)
    return rows


def eval_real(segmenter, root: Path) -> dict[str, Any] | None:
    """Segment and score the real ISLES'22 case under ``root``; ``None`` (with a note) when unavailable."""
    if not root.is_dir():
        print(f"  real case: {root} not found, skipped")
        return None
    case = read_case(root, layout="isles22")
    if case.label is None:
        print(f"  real case: {case.case_id} has no label, skipped")
        return None
    start = time.perf_counter()
    result = segmenter.predict(case)
    row = {"case": case.case_id, **_score(result.mask_canonical, case.label, case.reference.voxel_volume_ml)}
    row.update(seconds=time.perf_counter() - start, variant="real ISLES'22")
    _print_row(row)
    return row


def _print_row(row: dict[str, Any]) -> None:
    print(
        f"  {row['case']:<20} {row['dice']:6.3f} {row['lesion_f1']:6.3f} {row['volume_pred_ml']:9.2f} "
        f"{row['volume_true_ml']:9.2f} {row['n_lesions_pred']:4d}/{row['n_lesions_true']:<3d} "
        f"{row['seconds']:6.1f}  {row['variant']}",
        flush=True,
    )


def _mean(rows: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("dice", "lesion_f1", "volume_pred_ml", "volume_true_ml")
    return {k: float(np.mean([r[k] for r in rows])) for k in keys} if rows else {}


def own_sets(n: int) -> dict[str, list[tuple[int, str]]]:
    """The held-out own phantoms, ``(seed, domain)`` per set: the tuning seeds and ``n`` test seeds per domain."""
    tuning = [(seed, TUNING_DOMAINS[k % 2]) for k, seed in enumerate(TUNING_SEEDS)]
    return {"tuning": tuning, **{f"own {d}": [(9000 + i, d) for i in range(n)] for d in TUNING_DOMAINS}}


def eval_own(segmenter, kind: str, n: int) -> dict[str, Any]:
    """Segment and score every held-out own phantom of :func:`own_sets`; per set the rows and their mean."""
    out: dict[str, dict[str, Any]] = {}
    for name, cases in own_sets(n).items():
        rows = []
        for seed, domain in cases:
            case = make_phantom(KIND_LAYOUT[kind], seed, domain=domain)
            assert case.label is not None  # phantoms always carry their label
            start = time.perf_counter()
            result = segmenter.predict(case)
            row = {
                "case": f"{domain[:4]}-{seed}",
                "seed": seed,
                **_score(result.mask_canonical, case.label, case.reference.voxel_volume_ml),
            }
            row.update(seconds=time.perf_counter() - start, variant=f"{name}: {case.info['pattern']}")
            rows.append(row)
            _print_row(row)
        out[name] = {"rows": rows, "mean": _mean(rows)}
        print(f"  {'mean (' + name + ')':<20} {out[name]['mean']['dice']:6.3f} {out[name]['mean']['lesion_f1']:6.3f}")
    return out


def _segmenter(kind: str, checkpoint: str | None, tune_first: bool, device: str) -> tuple[Segmenter, dict | None]:
    """The model to score; with ``tune_first`` its post-processing chosen on the tuning phantoms."""
    path = checkpoint or f"default-{kind}"
    if not tune_first:
        return Segmenter.from_checkpoint(path, device=device), None
    inference, score = tune(kind, path)
    print(f"\n{kind.upper()}: post-processing chosen on the tuning phantoms: {inference} (DSC {score:.3f})")
    return Segmenter.from_checkpoint(path, device=device, **inference.to_dict()), {**inference.to_dict(), "dsc": score}


def evaluate_kind(
    kind: str, checkpoint: str | None, n: int, real: Path, device: str, tune_first: bool = False, own: int = 0
) -> dict[str, Any]:
    """Everything for one kind: the model, its phantom scores and means, and the real case (MRI)."""
    segmenter, tuned = _segmenter(kind, checkpoint, tune_first, device)
    print(f"\n{kind.upper()}: {segmenter.name} on {segmenter.device}, {n} OOD phantoms")
    print(f"  {'case':<20} {'dice':>6} {'lesF1':>6} {'pred mL':>9} {'true mL':>9} {'les p/t':>8} {'sec':>6}  variant")
    out: dict[str, Any] = {"model": segmenter.name, "tuned": tuned}
    if own:
        out["own"] = eval_own(segmenter, kind, own)
    rows = eval_phantoms(segmenter, kind, n)
    mean = _mean(rows)
    if mean:
        print(
            f"  {'mean (phantoms)':<20} {mean['dice']:6.3f} {mean['lesion_f1']:6.3f} "
            f"{mean['volume_pred_ml']:9.2f} {mean['volume_true_ml']:9.2f}"
        )
    out.update(phantoms=rows, mean=mean)
    if kind == "mri":
        out["real"] = eval_real(segmenter, real)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=("mri", "ctp", "both"), default="both")
    parser.add_argument("--cases", type=int, default=12, help="OOD phantoms per kind (seeds 0..N-1)")
    parser.add_argument("--checkpoint", help="checkpoint file or bundled name (default: the bundled weights)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL, help="ISLES'22 dataset folder (MRI only)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--json", type=Path, help="write every number to this JSON file")
    parser.add_argument("--tune", action="store_true", help="choose the post-processing on the tuning phantoms first")
    parser.add_argument("--own", type=int, default=0, help="also score the tuning and N test own phantoms per domain")
    args = parser.parse_args(argv)
    if args.checkpoint and args.kind == "both":
        parser.error("--checkpoint is one model: choose --kind mri or --kind ctp with it.")
    if args.cases < 0 or args.own < 0:
        parser.error("--cases and --own must be >= 0.")
    start = time.perf_counter()
    kinds = ("mri", "ctp") if args.kind == "both" else (args.kind,)
    report: dict[str, Any] = {
        k: evaluate_kind(k, args.checkpoint, args.cases, args.real, args.device, args.tune, args.own) for k in kinds
    }
    report["runtime_s"] = time.perf_counter() - start
    print(f"\ntotal {report['runtime_s']:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
