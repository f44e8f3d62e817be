"""mdanet_sdk.pipeline, the one implementation of pre- and post-processing: held to SciPy / numpy / nibabel (what
the package computed with before), scriptable, and the label op's native kernel equal to its reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nibabel.orientations import apply_orientation
from nibabel.orientations import io_orientation as nib_io_orientation
from scipy import ndimage

from mdanet_sdk.ops import reference
from mdanet_sdk.pipeline import intensity, lesions, morphology, orientation, slicing, stats

RNG = np.random.default_rng(0)
MASKS = [
    ndimage.binary_opening(RNG.random((40, 50, 12)) < 0.5),
    RNG.random((30, 30, 30)) < 0.7,
    ndimage.binary_opening(RNG.random((64, 64, 20)) < 0.3),
    RNG.random((1, 5, 1)) < 0.5,
    RNG.random((7, 1, 3)) < 0.9,
]


@pytest.mark.parametrize("n", [1, 2, 5, 1000, 10001])
def test_quantiles_are_numpys(n):
    values = RNG.normal(size=n).astype(np.float32)
    got = stats.quantiles(torch.from_numpy(values), [0.005, 0.25, 0.5, 0.75, 0.995])
    assert np.allclose(got, np.percentile(values, [0.5, 25, 50, 75, 99.5]), rtol=1e-6, atol=1e-7)
    assert stats.median(torch.from_numpy(values)) == pytest.approx(float(np.median(values)), abs=1e-6)
    # One or two at a time (selection; near the top through topk), also with ties.
    ties = np.round(values * 2) / 2
    for data in (values, ties):
        for qs in ([0.999], [0.96, 0.5], [0.0], [1.0], [0.95, 0.05]):
            got = stats.quantiles(torch.from_numpy(data), qs)
            assert np.allclose(got, np.percentile(data, [100 * q for q in qs]), rtol=1e-6, atol=1e-7), qs


@pytest.mark.parametrize("index", range(len(MASKS)))
@pytest.mark.parametrize("full", [False, True])
def test_components_are_scipys(index, full):
    mask = MASKS[index]
    expected, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(3, 3 if full else 1))
    got = morphology.label(torch.from_numpy(mask), full=full).numpy()
    pairs = set(zip(expected[mask].tolist(), got[mask].tolist()))
    assert len(pairs) == n == len(set(got[mask].tolist()))  # the same partition
    assert (got[~mask] == 0).all()
    # the native union-find and the reference give the very same labels, planar or not
    for planar in (False, True):
        reference_labels = reference.label_components(torch.from_numpy(mask), full, planar)
        assert torch.equal(torch.ops.mdanet.label_components(torch.from_numpy(mask), full, planar), reference_labels)


@pytest.mark.parametrize("index", range(len(MASKS)))
def test_fill_holes_and_dilation_are_scipys(index):
    mask = MASKS[index]
    filled = np.stack([ndimage.binary_fill_holes(mask[..., z]) for z in range(mask.shape[2])], axis=-1)
    assert np.array_equal(morphology.fill_holes_planar(torch.from_numpy(mask)).numpy(), filled)
    assert np.array_equal(
        morphology.dilate(torch.from_numpy(mask), 2).numpy(), ndimage.binary_dilation(mask, iterations=2)
    )


def test_label_op_is_registered_and_labels_one_component():
    assert hasattr(torch.ops.mdanet, "label_components")
    labels = torch.ops.mdanet.label_components(torch.ones(3, 3, 3, dtype=torch.bool), False, False)
    assert labels.unique().tolist() == [1]


def test_orientation_is_nibabels():
    x = RNG.random((5, 6, 7, 2))
    for i in range(100):
        m = np.zeros((3, 3))
        perm, sign = RNG.permutation(3), RNG.choice([-1, 1], 3)
        m[perm, range(3)] = sign * RNG.uniform(0.5, 3, 3)
        if i % 2:  # oblique: a small rotation
            a = RNG.normal(size=3) * 0.2
            rx = np.array([[1, 0, 0], [0, np.cos(a[0]), -np.sin(a[0])], [0, np.sin(a[0]), np.cos(a[0])]])
            m = rx @ m
        affine = np.eye(4)
        affine[:3, :3], affine[:3, 3] = m, RNG.normal(size=3)
        ornt = orientation.io_orientation(torch.from_numpy(affine))
        assert ornt == nib_io_orientation(affine).astype(int).tolist()
        canonical = orientation.to_canonical(torch.from_numpy(x), ornt).numpy()
        assert np.array_equal(canonical, apply_orientation(x, np.array(ornt)))
        assert np.array_equal(orientation.from_canonical(torch.from_numpy(canonical), ornt).numpy(), x)


@pytest.mark.parametrize("shape", [(197, 233), (100, 90), (64, 64), (255, 255)])
def test_zoom_is_scipys(shape):
    stack = RNG.random((3, *shape)).astype(np.float32)
    target = [128, 128] if shape != (100, 90) else [37, 33]
    factors = (1, target[0] / shape[0], target[1] / shape[1])
    expected = ndimage.zoom(stack, factors, order=1, mode="nearest", grid_mode=True)
    assert np.abs(slicing.zoom(torch.from_numpy(stack), target).numpy() - expected).max() < 2e-5


def test_postprocess_is_what_scipy_computes():
    prob = ndimage.gaussian_filter(RNG.random((60, 50, 20)), 2).astype(np.float32)
    prob = (prob - prob.min()) / (prob.max() - prob.min())
    adc = (RNG.random((60, 50, 20)) * 2).astype(np.float32)
    for min_size, ratio in ((0, 0.0), (5, 0.0), (30, 0.8), (1, 1.0)):
        got = lesions.postprocess(torch.from_numpy(prob), 0.6, min_size, torch.from_numpy(adc), ratio).numpy()
        labels, n = ndimage.label(prob > 0.6, structure=np.ones((3, 3, 3)))
        sizes = np.bincount(labels.ravel())
        keep = sizes >= max(min_size, 1)
        keep[0] = False
        if ratio > 0:
            values = adc[adc > 0]
            tissue = np.median(values[values <= 1.5 * np.median(values)])
            medians = np.asarray(ndimage.median(adc, labels, np.arange(1, n + 1)))
            keep[1:] &= medians / tissue <= ratio
        assert np.array_equal(got, keep[labels].astype(np.uint8)), (min_size, ratio)


def test_head_mask_keeps_the_head_and_fills_its_holes():
    x, y, z = np.meshgrid(np.arange(60), np.arange(50), np.arange(16), indexing="ij")
    head = ((x - 30) ** 2 + (y - 25) ** 2) < 20**2
    volume = np.where(head, 100.0, 0.0).astype(np.float32)
    volume[28:33, 23:28] = 0.0  # CSF-like hole inside the head
    volume[2, 2, 2] = 100.0  # a speck far away
    mask, noisy = intensity.head_support([torch.from_numpy(volume)])
    assert not noisy and mask[30, 25, 5] and not mask[2, 2, 2]
    assert mask.numpy().sum() == head.sum()


def test_every_function_scripts():
    for module in (stats, morphology, intensity, slicing, lesions, orientation):
        for name in module.__all__:
            function = getattr(module, name)
            if callable(function):
                torch.jit.script(function)


def test_slice_runs_are_the_slices_with_support():
    support = torch.zeros(4, 3, 10, dtype=torch.bool)
    support[1, 2, [0, 1, 4, 7, 8, 9]] = True
    expected = [(0, 2), (4, 5), (7, 10)]
    assert slicing.slice_runs(support, 10) == expected
    assert torch.jit.script(slicing.slice_runs)(support, 10) == expected
    assert slicing.slice_runs(torch.zeros(4, 3, 10, dtype=torch.bool), 10) == []
    assert slicing.slice_runs(None, 10) == [(0, 10)] and slicing.slice_runs(None, 0) == []
    # cut into forward passes of at most `step` slices, never across a gap
    assert slicing.slice_runs(support, 10, 2) == [(0, 2), (4, 5), (7, 9), (9, 10)]
    assert torch.jit.script(slicing.slice_runs)(support, 10, 2) == [(0, 2), (4, 5), (7, 9), (9, 10)]
    assert slicing.slice_runs(None, 5, 2) == [(0, 2), (2, 4), (4, 5)]


def test_head_box_crops_a_wide_field_of_view_around_the_head_only():
    head = torch.zeros(200, 180, 6, dtype=torch.bool)
    head[50:90, 60:100, 2] = True  # 40 x 40 voxels: a fifth of the field of view
    head[70, 80, 4] = True
    box = slicing.head_box(head, 0.5)
    assert box == [30, 110, 40, 120]  # side ceil(40 / 0.5) = 80, centred on the head
    assert torch.jit.script(slicing.head_box)(head, 0.5) == box
    assert slicing.box_shape(box) == [80, 80]
    assert slicing.head_box(head, 0.0) == [0, 200, 0, 180]  # 0: never crop
    assert torch.jit.script(slicing.head_box)(head, 1e-17) == [0, 200, 0, 180]  # no overflow for a tiny fill
    assert slicing.head_box(head, 0.1) == [0, 200, 0, 180]  # the head fills a tenth already: nothing to crop
    assert slicing.head_box(head, 0.5, 96) == [22, 118, 32, 128]  # never fewer voxels than the model grid's side
    assert slicing.head_box(head, 0.5, 256) == [0, 200, 0, 180]
    assert slicing.head_box(torch.zeros(8, 8, 2, dtype=torch.bool), 0.5) == [0, 8, 0, 8]  # no head
    corner = torch.zeros(200, 180, 6, dtype=torch.bool)
    corner[0:10, 170:180, 1] = True  # at the edge: the box moves inside the slice, the head stays in it
    assert slicing.head_box(corner, 0.5) == [0, 20, 160, 180]
    tall = torch.zeros(64, 300, 3, dtype=torch.bool)
    tall[20:40, 100:160, 0] = True  # the box side exceeds the short axis: that axis is kept whole
    assert slicing.head_box(tall, 0.5) == [0, 64, 70, 190]
