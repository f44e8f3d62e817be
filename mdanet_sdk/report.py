"""What a segmentation found, for people: lesion volumes and counts, a JSON report, a table, an overlay PNG.

Everything here works on arrays in canonical RAS+ voxel order ``(X, Y, Z)`` (see :mod:`mdanet_sdk.data`),
so that "slice" always means an axial slice: slice numbers are counted along Z from the inferior end of the
volume, which is the file's own slice number for the usual axial scans stored with a ``..S`` orientation
(RAS, LAS, LPS...).

The overlay is drawn with matplotlib's object API on the Agg canvas (no pyplot, no display, thread-safe), in
radiological convention: the patient's right is on the left of each panel, anterior at the top.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from mdanet_sdk import __version__
from mdanet_sdk._files import atomic_write, write_json
from mdanet_sdk._text import printable
from mdanet_sdk.data.targets import check_picture_file
from mdanet_sdk.errors import InputError
from mdanet_sdk.metrics import label_lesions

__all__ = [
    "CaseReport",
    "report_document",
    "REPORT_SCHEMA_VERSION",
    "lesion_stats",
    "results_digest",
    "format_slices",
    "write_json_report",
    "report_table",
    "save_overlay",
    "OVERLAY_MODALITIES",
]

#: Modalities on which a lesion outline is easiest to read, best first (DWI for MRI; Tmax, then CBF for CTP).
OVERLAY_MODALITIES = ("dwi", "tmax", "cbf")


@dataclass
class CaseReport:
    """The summary of one segmented case.

    Attributes:
        case_id: the case's id.
        lesion_volume_ml: total lesion volume in mL (voxel count × voxel volume).
        n_lesions: connected lesions (26-connectivity) after post-processing.
        largest_lesion_ml: volume of the largest lesion in mL (0 without lesion).
        slices: axial slice indices (canonical Z, inferior → superior) holding lesion voxels.
        shape: the input's stored voxel shape.
        voxel_size_mm: the input's voxel sizes in mm (canonical X, Y, Z).
        runtime_s: wall time from the start of loading to the finished result.
        device: where the model ran, e.g. ``"cpu"`` or ``"cuda:0"``.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        model: checkpoint name(s), e.g. ``"default-mri"`` or ``"fold0.pt+fold1.pt"``.
        model_version: version recorded in the checkpoint (package version at training time, or ``""``).
        modalities: the model's input modalities in channel order.
        threshold: probability above which a voxel is lesion.
        min_size: smallest lesion kept, in voxels.
        max_adc_ratio: lesions with a median ADC above this multiple of the parenchymal ADC were removed
            (0: no such gate).
        gate_removed_lesions, gate_removed_ml: the lesions (count and mL) that the network marked and that gate
            removed (0 without a gate; None in a case read from a report of schema 3 or older, which did not say).
        tta: whether flip test-time augmentation was used.
        tta_screen: whether the flips ran only on the slices with a lesion candidate (the others' probability is
            their un-flipped pass).
        warnings: sentences about repaired input problems.
        weights_sha256: the SHA-256 (hex) of each weights file, in the order of ``model`` (checkpoint files of an
            ensemble, the export artefact, or the bundled file); ``None`` for weights that came from no file.
        package_version: the mdanet-sdk version that produced the result.
        notice: :data:`~mdanet_sdk.inference.provenance.SYNTHETIC_NOTICE` when the weights were trained on
            synthetic phantoms, else ``""``.
    """

    case_id: str
    lesion_volume_ml: float
    n_lesions: int
    largest_lesion_ml: float
    slices: list[int]
    shape: tuple[int, ...]
    voxel_size_mm: tuple[float, float, float]
    runtime_s: float
    device: str
    precision: str
    model: str
    model_version: str
    modalities: tuple[str, ...]
    threshold: float
    min_size: int
    tta: bool
    max_adc_ratio: float = 0.0
    gate_removed_lesions: int | None = None
    gate_removed_ml: float | None = None
    tta_screen: bool = False
    warnings: list[str] = field(default_factory=list)
    weights_sha256: list[str | None] = field(default_factory=list)
    package_version: str = __version__
    notice: str = ""

    @property
    def postprocess(self) -> dict[str, Any]:
        """The post-processing used, as :meth:`PostprocessConfig.to_dict` gives it."""
        return {
            "tta": self.tta,
            "threshold": self.threshold,
            "min_size": self.min_size,
            "max_adc_ratio": self.max_adc_ratio,
        }

    @property
    def made_with(self) -> str:
        """:func:`results_digest` of the weights, inputs and post-processing that made this result."""
        return results_digest(self.weights_sha256, self.modalities, self.postprocess)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CaseReport":
        """A case of an earlier run's report (:meth:`to_dict`; keys it does not know are ignored).

        Raises:
            InputError: ``d`` is not such a case.
        """
        values = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        wrong = [f.name for f in fields(cls) if f.name in values and not _of_type(str(f.type), values[f.name])]
        if wrong:
            raise InputError(f"not a case of an mdanet-sdk report: its {wrong[0]} is {values[wrong[0]]!r:.60}.")
        try:
            for key in ("shape", "voxel_size_mm", "modalities"):
                values[key] = tuple(values[key])
            return cls(**values)
        except (TypeError, KeyError, ValueError) as exc:
            raise InputError(f"not a case of an mdanet-sdk report ({type(exc).__name__}: {exc}).") from None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists instead of tuples, volumes rounded to 0.001 mL), with the post-processing
        also grouped under ``"postprocess"`` (the flat keys stay for readers of schema 1)."""
        d = asdict(self)
        d["postprocess"] = self.postprocess
        for key in ("lesion_volume_ml", "largest_lesion_ml", "gate_removed_ml"):
            d[key] = None if d[key] is None else round(d[key], 3)
        d["runtime_s"] = round(d["runtime_s"], 3)
        d["shape"], d["voxel_size_mm"], d["modalities"] = (
            list(self.shape),
            list(self.voxel_size_mm),
            list(self.modalities),
        )
        return d


def _of_type(annotation: str, value: Any) -> bool:
    """Whether a JSON ``value`` is what a :class:`CaseReport` field of type ``annotation`` holds."""
    if annotation.startswith(("list[", "tuple[")):
        inner = annotation[annotation.index("[") + 1 : -1].split(", ")
        fixed = annotation.startswith("tuple[") and inner[-1] != "..."  # tuple[float, float, float]: 3 items
        if not isinstance(value, list) or (fixed and len(value) != len(inner)):
            return False
        return all(_of_type(inner[0], item) for item in value)
    if annotation.endswith(" | None"):
        return value is None or _of_type(annotation[: -len(" | None")], value)
    if annotation in ("int", "bool"):
        return type(value).__name__ == annotation
    if annotation == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, str)


def results_digest(
    weights_sha256: Sequence[str | None], modalities: Sequence[str], postprocess: Mapping[str, Any]
) -> str:
    """16 hex digits naming what decides a mask: the weights files' digests, the modalities and the
    post-processing. Written into each output's header, so ``--skip-existing`` keeps a mask only when the
    same weights and settings would make it again (device and precision are left out)."""
    text = json.dumps([list(weights_sha256), list(modalities), dict(postprocess)], sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def lesion_stats(mask: np.ndarray, voxel_volume_ml: float) -> dict[str, Any]:
    """Volume, count, largest lesion and axial slices of a binary mask.

    Args:
        mask: ``(X, Y, Z)`` binary mask in canonical order (non-zero = lesion).
        voxel_volume_ml: volume of one voxel in mL.

    Returns:
        ``{"lesion_volume_ml", "n_lesions", "largest_lesion_ml", "slices"}`` with lesions counted with
        26-connectivity and ``slices`` the sorted Z indices that hold lesion.
    """
    if mask.ndim != 3:
        raise InputError(f"a lesion mask must be 3D (X, Y, Z), got shape {mask.shape}.")
    labels, n = label_lesions(mask)
    sizes = np.bincount(labels.ravel())[1:]
    return {
        "lesion_volume_ml": float(sizes.sum()) * voxel_volume_ml,
        "n_lesions": n,
        "largest_lesion_ml": float(sizes.max(initial=0)) * voxel_volume_ml,
        "slices": np.flatnonzero(mask.any(axis=(0, 1))).tolist(),
    }


def format_slices(slices: Sequence[int]) -> str:
    """Runs of consecutive indices, e.g. ``[3, 4, 5, 9]`` → ``"3-5, 9"``; ``"none"`` when empty."""
    runs: list[list[int]] = []
    for s in slices:
        if runs and s == runs[-1][1] + 1:
            runs[-1][1] = s
        else:
            runs.append([s, s])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs) or "none"


#: Version of the JSON report's layout: 2 added ``schema_version``, ``notices`` and, per case,
#: ``weights_sha256``, ``package_version``, ``postprocess`` and ``notice`` (schema 1 keys are all kept); 3 added,
#: per case, ``tta_screen`` (TTA flipped only the slices with a lesion candidate); 4 added, per case,
#: ``gate_removed_lesions`` and ``gate_removed_ml`` (what the ADC gate removed).
REPORT_SCHEMA_VERSION = 4
_DOCUMENT_KEYS = ("schema_version", "mdanet_sdk_version", "notices", "cases", "failed")


def report_document(
    reports: Sequence[CaseReport],
    failed: Mapping[str, str] | None = None,
    run: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON report of a run.

    ``{"schema_version", "mdanet_sdk_version", "notices", "cases": [...], "failed": [{"case", "error"}], **run}``,
    where ``notices`` lists each distinct :attr:`CaseReport.notice` of the cases (e.g. that the weights were
    trained on synthetic phantoms), so that a reader of the run's header sees it.

    Args:
        reports: one report per segmented case.
        failed: case id → the one-line reason, for cases that could not be segmented.
        run: run-level extras merged into the top level (e.g. ``{"skipped": [...]}``).

    Raises:
        ValueError: ``run`` names one of the keys above.
    """
    clash = sorted(set(run or {}) & set(_DOCUMENT_KEYS))
    if clash:
        raise ValueError(f"run-level extras may not replace the report's own keys {clash}.")
    return {
        "schema_version": REPORT_SCHEMA_VERSION,
        "mdanet_sdk_version": __version__,
        "notices": list(dict.fromkeys(r.notice for r in reports if r.notice)),
        "cases": [r.to_dict() for r in reports],
        "failed": [{"case": case, "error": error} for case, error in (failed or {}).items()],
        **dict(run or {}),
    }


def write_json_report(
    reports: Sequence[CaseReport],
    path: str | os.PathLike[str],
    failed: Mapping[str, str] | None = None,
    run: Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`report_document` to ``path`` atomically.

    Args:
        reports: one report per segmented case.
        path: the JSON file to write.
        failed: case id → the one-line reason, for cases that could not be segmented.
        run: run-level extras merged into the top level (JSON-ready values), e.g. ``{"skipped": [...]}``.
    """
    return write_json(path, report_document(reports, failed, run), names_as_text=True)


def report_table(reports: Sequence[CaseReport]) -> Any:
    """A short :class:`rich.table.Table`: one row per case; the caption names the model (version, weights
    SHA-256 prefix), device, precision, post-processing and package version, and below it any notice the cases
    carry (e.g. that the weights were trained on synthetic phantoms, not for clinical use)."""
    from rich.table import Table
    from rich.text import Text

    lines = [printable(line) for line in _caption(reports)]  # escaped line by line: ids and names are data
    # As wide as a notice, so that a narrow table does not break it over two lines (where the terminal allows).
    table = Table(
        title="mdanet-sdk segment", caption=Text("\n".join(lines)), min_width=max(map(len, lines[1:]), default=None)
    )
    for name, justify in (
        ("case", "left"),
        ("lesion mL", "right"),
        ("lesions", "right"),
        ("largest mL", "right"),
        ("slices", "left"),
        ("time s", "right"),
    ):
        table.add_column(name, justify=justify)  # type: ignore[arg-type]
    for r in reports:
        table.add_row(
            Text(printable(r.case_id)),  # plain text: ids and names are data, never rich markup
            f"{r.lesion_volume_ml:.2f}",
            str(r.n_lesions),
            f"{r.largest_lesion_ml:.2f}",
            format_slices(r.slices),
            f"{r.runtime_s:.1f}",
        )
    return table


def _caption(reports: Sequence[CaseReport]) -> list[str]:
    """The caption's lines: the model, device and post-processing of the first report; then each distinct notice."""
    if not reports:
        return []
    r = reports[0]
    version = f" ({r.model_version})" if r.model_version else ""
    # The first 12 hex digits name the weights file unambiguously enough to compare with a full digest by eye.
    digests = "+".join((d or "none")[:12] for d in r.weights_sha256)
    weights = f", sha256 {digests}" if digests else ""
    tta = ", flip TTA" if r.tta else ""
    min_size = f", lesions >= {r.min_size} voxels" if r.min_size > 1 else ""
    gate = f", lesion ADC <= {r.max_adc_ratio:g}x tissue" if r.max_adc_ratio > 0 else ""
    return [
        f"model {r.model}{version}{weights} on {r.device}, {r.precision}; threshold {r.threshold:g}{min_size}"
        f"{gate}{tta}; mdanet-sdk {r.package_version}",
        *dict.fromkeys(f"Weights {r.notice}." for r in reports if r.notice),
    ]


def _pick_slices(mask: np.ndarray, max_slices: int) -> list[int]:
    """Up to ``max_slices`` axial indices spread evenly over the lesion, or over the middle third if none."""
    depth = mask.shape[2]
    candidates = np.flatnonzero(mask.any(axis=(0, 1)))
    if candidates.size == 0:
        candidates = np.arange(depth // 3, max(depth - depth // 3, depth // 3 + 1))
    if candidates.size <= max_slices:
        return candidates.tolist()
    picks = np.linspace(0, candidates.size - 1, max_slices).round().astype(int)
    return candidates[np.unique(picks)].tolist()


def _bounding_box(foreground: np.ndarray, margin: int = 3) -> tuple[slice, slice]:
    """In-plane ``(X, Y)`` slices around the foreground of any axial slice, ``margin`` voxels wider."""
    box = []
    for axis in (0, 1):
        hits = np.flatnonzero(foreground.any(axis=tuple(a for a in range(3) if a != axis)))
        if hits.size == 0:
            return slice(None), slice(None)
        box.append(slice(max(hits[0] - margin, 0), hits[-1] + margin + 1))
    return box[0], box[1]


def _window(image: np.ndarray) -> tuple[float, float]:
    """Display range: 1st-99th percentile of the non-zero voxels (the background is mostly exact zeros)."""
    values = image[image != 0]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, (1, 99))
    return float(lo), float(hi if hi > lo else lo + 1)


def save_overlay(
    image: np.ndarray,
    mask: np.ndarray,
    path: str | os.PathLike[str],
    *,
    zooms: Sequence[float] = (1.0, 1.0, 1.0),
    title: str = "",
    max_slices: int = 12,
    columns: int = 4,
) -> Path:
    """Write a PNG montage of axial slices with the mask's outline over the image.

    The slices shown are those with lesion (spread evenly when there are more than ``max_slices``), or the
    middle slices when the mask is empty. Each panel is labelled with its axial index.

    Args:
        image: ``(X, Y, Z)`` background image in canonical order (e.g. DWI or Tmax).
        mask: ``(X, Y, Z)`` binary mask on the same grid.
        path: the PNG file to write (atomically).
        zooms: voxel sizes in mm, for the pixel aspect ratio.
        title: figure title (e.g. the case id and lesion volume).
        max_slices: most panels in the montage.
        columns: panels per row.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if image.shape != mask.shape or image.ndim != 3:
        raise InputError(f"overlay image {image.shape} and mask {mask.shape} must be two equal 3D shapes.")
    path = check_picture_file(path, "overlay")
    slices = _pick_slices(mask, max_slices)
    cols = min(columns, len(slices))
    rows = -(-len(slices) // cols)
    lo, hi = _window(image)
    # Crop every panel to the head (non-zero voxels of any slice, and the mask) so the brain fills it.
    box = _bounding_box((image != 0) | (mask != 0))
    # Transpose so that Y (anterior) runs up with origin="lower"; flip X for radiological convention.
    image, mask = image[box][::-1], mask[box][::-1].astype(np.float32)
    aspect = zooms[1] / zooms[0]  # rows of the transposed slice are Y, columns X
    fig = Figure(figsize=(3 * cols, 3 * rows * aspect * mask.shape[1] / mask.shape[0] + 0.6), facecolor="black")
    FigureCanvasAgg(fig)
    for k, z in enumerate(slices):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(image[:, :, z].T, cmap="gray", vmin=lo, vmax=hi, origin="lower", aspect=aspect)
        if mask[:, :, z].any():
            ax.contour(mask[:, :, z].T, levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(f"z={z}", color="white", fontsize=9)
        ax.text(0.02, 0.5, "R", color="yellow", fontsize=8, transform=ax.transAxes, va="center")
        ax.text(0.98, 0.5, "L", color="yellow", fontsize=8, transform=ax.transAxes, va="center", ha="right")
        ax.set_axis_off()
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, facecolor="black"))
