"""The paper's published figures (5-fold cross-validation) to print beside ours: the comparisons of Tables 1
(ISLES 2018) and 2 (ISLES 2022) and the ablations of Tables 3-6 (ISLES 2018).

Copied from the paper's tables as printed: percent (mean ± std over the folds) for DSC, precision and recall,
F1 (Eq. 16) as a fraction with no std, parameters in millions and FLOPs in G for Tables 1, 2 and 5 (the paper
does not say at which input size it counted them). Keys are the variants of :mod:`mdanet_sdk.train.ablation`;
a figure the paper's table does not give is absent. Table 1's rows of methods not implemented here
(OctopusNet, Abulnaga et al., Pool-UNet, Perf-UNet) are not copied.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_FIGURES", "paper_figure"]


def _row(
    dsc: tuple[float, float],
    precision: tuple[float, float],
    recall: tuple[float, float],
    f1: float,
    params_m: float,
    gflops: float,
) -> dict[str, Any]:
    """A row of Tables 1-2, in their column order."""
    return {"dsc": dsc, "precision": precision, "recall": recall, "f1": f1, "params_m": params_m, "gflops": gflops}


#: table → variant → figure → value: ``"dsc"``, ``"precision"``, ``"recall"`` as (mean, std) in percent,
#: ``"f1"`` a fraction, ``"params_m"`` in M, ``"gflops"`` in G.
PAPER_FIGURES: dict[str, dict[str, dict[str, Any]]] = {
    "1": {
        "unet": _row((53.34, 0.85), (57.09, 3.99), (56.90, 3.40), 0.5680, 30.0, 10.81),
        "attention-unet": _row((54.37, 2.36), (54.61, 4.32), (62.41, 2.23), 0.5817, 29.9, 9.92),
        "unetpp": _row((55.04, 2.61), (55.96, 5.03), (62.47, 3.06), 0.5886, 35.0, 26.69),
        "msnet": _row((54.99, 2.72), (55.23, 4.43), (63.36, 1.96), 0.5891, 20.3, 6.96),
        "transunet": _row((52.34, 3.73), (53.42, 6.64), (59.05, 5.11), 0.5571, 175.3, 19.19),
        "swin-unet": _row((48.50, 3.85), (51.42, 5.01), (55.25, 8.27), 0.5275, 106.0, 6.14),
        "mdanet": _row((58.34, 2.11), (60.22, 3.69), (64.03, 2.89), 0.6195, 25.3, 11.22),
    },
    "2": {
        "unet": _row((63.93, 3.26), (74.55, 1.98), (62.11, 5.07), 0.6764, 30.0, 2.69),
        "attention-unet": _row((68.20, 0.86), (72.95, 2.47), (70.65, 2.01), 0.7173, 29.9, 2.47),
        "unetpp": _row((69.57, 1.24), (74.94, 1.19), (70.91, 1.53), 0.7286, 35.0, 6.66),
        "msnet": _row((68.66, 1.30), (74.59, 2.65), (69.42, 2.69), 0.7184, 20.3, 1.73),
        "transunet": _row((69.75, 1.23), (75.03, 2.11), (69.80, 1.90), 0.7228, 175.3, 4.61),
        "swin-unet": _row((55.08, 3.02), (56.36, 4.00), (65.40, 3.69), 0.6039, 105.4, 6.10),
        "mdanet": _row((70.44, 0.97), (75.30, 2.71), (72.22, 1.63), 0.7368, 25.3, 3.57),
    },
    "3": {
        "unet": {"dsc": (53.34, 0.85), "precision": (57.09, 3.99), "recall": (56.90, 3.40), "f1": 0.5680},
        "dasc": {"dsc": (55.31, 3.36), "precision": (57.53, 4.81), "recall": (59.89, 3.64), "f1": 0.5869},
        "dasc-msc": {"dsc": (56.64, 1.99), "precision": (57.39, 2.83), "recall": (62.57, 5.40), "f1": 0.5987},
        "dasc-msc-gcfb": {"dsc": (57.50, 2.32), "precision": (60.19, 4.77), "recall": (59.54, 2.96), "f1": 0.5986},
        "mdanet": {"dsc": (58.34, 2.11), "precision": (60.22, 3.69), "recall": (64.03, 2.89), "f1": 0.6195},
    },
    "4": {
        "skip-add": {"dsc": (56.22, 1.27), "precision": (58.32, 2.71), "recall": (60.06, 0.50)},
        "skip-concat": {"dsc": (57.72, 2.90), "precision": (60.01, 2.27), "recall": (59.71, 5.87)},
        "mdanet": {"dsc": (58.34, 2.11), "precision": (60.22, 3.69), "recall": (64.03, 2.89)},
    },
    "5": {
        "bottleneck-none": {"dsc": (56.32, 1.87), "params_m": 22.5, "gflops": 10.88},
        "bottleneck-nonlocal": {"dsc": (56.98, 1.60), "params_m": 27.6, "gflops": 11.22},
        "bottleneck-transformer": {"dsc": (57.14, 1.48), "params_m": 61.7, "gflops": 15.83},
        "mdanet": {"dsc": (58.34, 2.11), "params_m": 25.3, "gflops": 11.22},
    },
    "6": {
        "dasc-msc-gcfb": {"dsc": (57.50, 2.32), "precision": (60.19, 4.77), "recall": (59.54, 2.96), "f1": 0.5986},
        "lambda-0.25": {"dsc": (58.19, 2.38), "precision": (61.67, 4.80), "recall": (61.16, 2.88), "f1": 0.6142},
        "lambda-0.5": {"dsc": (58.11, 1.87), "precision": (61.31, 2.42), "recall": (60.80, 3.54), "f1": 0.6095},
        "lambda-0.75": {"dsc": (58.25, 2.21), "precision": (61.54, 3.96), "recall": (63.20, 3.36), "f1": 0.6236},
        "mdanet": {"dsc": (58.34, 2.11), "precision": (60.22, 3.69), "recall": (64.03, 2.89), "f1": 0.6195},
    },
}


def paper_figure(table: str, variant: str, figure: str) -> Any:
    """The paper's ``figure`` for ``variant`` in ``table``, or ``None`` where its table has none."""
    return PAPER_FIGURES.get(table, {}).get(variant, {}).get(figure)
