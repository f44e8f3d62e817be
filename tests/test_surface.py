"""mdanet_sdk.surface: HD95 and ASD in mm on shapes with known distances, and against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from mdanet_sdk.errors import InputError
from mdanet_sdk.surface import asd, hd95, surface, surface_distances, surface_metrics


def _cubes(offset: int, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two 6³ cubes in a 16³ volume, the second shifted by ``offset`` voxels along ``axis``."""
    a = np.zeros((16, 16, 16), bool)
    a[2:8, 2:8, 2:8] = True
    return a, np.roll(a, offset, axis=axis)


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of mask voxels with a face neighbour outside the mask or outside the array."""
    padded = np.pad(mask, 1)
    points = []
    for idx in zip(*np.nonzero(mask), strict=True):
        p = tuple(i + 1 for i in idx)
        for axis, step in itertools.product(range(mask.ndim), (-1, 1)):
            q = list(p)
            q[axis] += step
            if not padded[tuple(q)]:
                points.append(idx)
                break
    return np.array(points, dtype=float).reshape(-1, mask.ndim)


def _brute(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, ...]) -> tuple[float, float]:
    sp, sg = _brute_surface(pred) * spacing, _brute_surface(gt) * spacing
    d = cdist(sp, sg)
    p2g, g2p = d.min(axis=1), d.min(axis=0)
    hd = max(np.percentile(p2g, 95), np.percentile(g2p, 95))
    return float(hd), float((p2g.sum() + g2p.sum()) / (p2g.size + g2p.size))


def test_cubes_offset_by_3_voxels_of_2_mm_are_6_mm_apart() -> None:
    a, b = _cubes(3, axis=0)
    assert hd95(a, b, (2.0, 1.0, 1.0)) == pytest.approx(6.0)
    # The spacing of the other axes does not matter: the farthest faces are 3 voxels apart along axis 0.
    assert hd95(a, b, (2.0, 0.5, 0.3)) == pytest.approx(6.0)
    # Anisotropic: the same shift along an axis of 0.5 mm voxels is 1.5 mm.
    a, b = _cubes(3, axis=1)
    assert hd95(a, b, (2.0, 0.5, 1.0)) == pytest.approx(1.5)
    assert hd95(a, b) == pytest.approx(3.0)  # default spacing: voxels


def test_asd_of_shifted_cubes_counted_by_hand() -> None:
    # A 6³ cube has 6³ - 4³ = 152 surface voxels. Shifted by one voxel along axis 0, each cube has 52 of
    # them 1 voxel from the other's surface: its outer face (36) and the 4×4 inside of its other face, which
    # lies inside the other cube; the rest lie on the other's surface -> ASD = (52 + 52) / (152 + 152).
    a, b = _cubes(1, axis=0)
    assert asd(a, b) == pytest.approx(104 / 304)
    # Coarser voxels across the shift change nothing: every nearest surface voxel is still 1 mm away along
    # axis 0 (the side faces are now 2 mm away).
    assert asd(a, b, (1.0, 2.0, 2.0)) == pytest.approx(104 / 304)


def test_a_mask_against_itself_is_0() -> None:
    a, _ = _cubes(0)
    assert surface_metrics(a, a, (1.0, 2.0, 3.0)) == {"hd95_mm": 0.0, "asd_mm": 0.0}


def test_empty_mask_conventions() -> None:
    a, _ = _cubes(0)
    empty = np.zeros_like(a)
    assert surface_metrics(empty, empty) == {"hd95_mm": 0.0, "asd_mm": 0.0}
    for pred, gt in ((a, empty), (empty, a)):
        d = surface_distances(pred, gt)
        assert d.pred_to_gt is None and np.isnan(d.hd95) and np.isnan(d.asd)


@pytest.mark.parametrize("seed", range(6))
def test_matches_brute_force_on_random_masks(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = tuple(int(n) for n in rng.integers(4, 9, size=3))
    pred, gt = rng.random(shape) < 0.3, rng.random(shape) < 0.2
    pred[0, 0, 0] = gt[-1, -1, -1] = True  # never empty; one touches each corner of the array
    spacing = tuple(float(s) for s in rng.uniform(0.4, 3.0, size=3))
    d = surface_distances(pred, gt, spacing)
    assert (d.hd95, d.asd) == pytest.approx(_brute(pred, gt, spacing))


def test_small_lesion_in_a_large_volume_and_2d() -> None:
    # The crop to both masks' bounding box keeps distances exact when the lesions are far apart.
    pred, gt = np.zeros((60, 50, 40), bool), np.zeros((60, 50, 40), bool)
    pred[5:7, 5:7, 5:7] = True
    gt[50:53, 40:43, 30:33] = True
    spacing = (0.9, 1.1, 2.5)
    assert (hd95(pred, gt, spacing), asd(pred, gt, spacing)) == pytest.approx(_brute(pred, gt, spacing))
    square = np.zeros((8, 8), bool)
    square[2:6, 2:6] = True
    assert surface(square).sum() == 12  # 16 voxels minus the 2×2 inside
    assert hd95(square, np.roll(square, 2, axis=1), (1.0, 0.5)) == pytest.approx(1.0)


def test_bad_inputs_are_refused() -> None:
    a, _ = _cubes(0)
    with pytest.raises(InputError, match="same shape"):
        hd95(a, a[:-1])
    with pytest.raises(InputError, match="spacing"):
        hd95(a, a, (1.0, 1.0))
    with pytest.raises(InputError, match="spacing"):
        asd(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(InputError, match="threshold"):
        hd95(a * 0.5, a)
