"""The paper's published ablation figures (Tables 3-6, ISLES 2018, 5-fold cross-validation), to print beside ours.

Copied from the paper's tables as printed: percent (mean ± std over the folds) for DSC, precision and recall,
F1 (Eq. 16) as a fraction with no std, parameters in millions and FLOPs in G for Table 5 (the paper does not
say at which input size it counted them). Keys are the ablation variants of :mod:`mdanet_sdk.train.ablation`;
a figure the paper's table does not give is absent.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PAPER_FIGURES", "paper_figure"]

#: table → variant → figure → value: ``"dsc"``, ``"precision"``, ``"recall"`` as (mean, std) in percent,
#: ``"f1"`` a fraction, ``"params_m"`` in M, ``"gflops"`` in G.
PAPER_FIGURES: dict[str, dict[str, dict[str, Any]]] = {
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
