"""Box utilities against the lesson's `jaccard` / `actn_to_bb` / `hw2corners` and by hand."""

import numpy as np

import random_inputs
import pytest
import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import (
    activations_to_boxes,
    box_area,
    centers_to_corners,
    corners_to_centers,
    jaccard,
    validate_boxes,
)


def random_boxes(rng, n):
    """n relative yxyx boxes of varied size inside the image."""
    return random_inputs.random_boxes(rng, n, hw=(0.01, 0.6))


@pytest.fixture
def lt():
    pytest.importorskip("torch", reason="the lesson's reference needs torch (requirements-test.txt)")
    from ssd_keras.reference import lesson as lesson_torch

    return lesson_torch


def test_jaccard_equals_lesson(lt):
    import torch

    rng = np.random.default_rng(1)
    a, b = random_boxes(rng, 30), random_boxes(rng, 40)
    b[:5] = a[:5]  # some identical pairs
    ours = np.asarray(jaccard(a, b))
    ref = lt.jaccard(torch.from_numpy(a), torch.from_numpy(b)).numpy()
    assert ours.shape == (30, 40)
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)
    anchors = AnchorConfig()
    ours = np.asarray(jaccard(a, anchors.corners))
    ref = lt.jaccard(torch.from_numpy(a), torch.from_numpy(anchors.corners)).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-6, atol=0)


def test_jaccard_batched():
    rng = np.random.default_rng(2)
    a = random_boxes(rng, 3 * 5).reshape(3, 5, 4)
    b = random_boxes(rng, 7)
    batched = np.asarray(jaccard(a, b))
    assert batched.shape == (3, 5, 7)
    for i in range(3):
        np.testing.assert_array_equal(batched[i], np.asarray(jaccard(a[i], b)))


@pytest.mark.parametrize(
    "a, b, iou",
    [
        ([0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], 0.0),  # touching at a corner
        ([0.0, 0.0, 0.5, 0.5], [0.0, 0.5, 0.5, 1.0], 0.0),  # touching along an edge
        ([0.0, 0.0, 0.2, 0.2], [0.6, 0.6, 1.0, 1.0], 0.0),  # disjoint
        ([0.0, 0.0, 1.0, 1.0], [0.25, 0.25, 0.75, 0.75], 0.25),  # contained
        ([0.1, 0.2, 0.4, 0.8], [0.1, 0.2, 0.4, 0.8], 1.0),  # identical
        ([0.0, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.0], 0.25 / 0.75),  # inter .25, union .75
        ([0.3, 0.3, 0.3, 0.3], [0.3, 0.3, 0.3, 0.3], 0.0),  # two zero-area boxes: 0, not NaN
        ([0.3, 0.3, 0.3, 0.6], [0.0, 0.0, 1.0, 1.0], 0.0),  # zero-area inside a box
    ],
)
def test_jaccard_by_hand(a, b, iou):
    got = np.asarray(jaccard([a], [b]))
    assert got.shape == (1, 1)
    assert not np.isnan(got[0, 0])
    np.testing.assert_allclose(got[0, 0], iou, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(jaccard([b], [a]))[0, 0], iou, rtol=1e-6, atol=1e-7)


def test_box_area():
    np.testing.assert_allclose(np.asarray(box_area([[0.1, 0.2, 0.5, 0.6], [0, 0, 1, 1]])), [0.16, 1.0], rtol=1e-6)


@pytest.mark.parametrize("config", [{}, dict(grids=(4,), zooms=(1.0,), ratios=((1.0, 1.0),))])
def test_activations_to_boxes_equals_lesson(lt, config):
    import torch

    anchors = AnchorConfig(**config)
    ref_anc = lt.make_anchors(*[v for v in (config.get("grids"), config.get("zooms"), config.get("ratios")) if v])
    rng = np.random.default_rng(3)
    acts = rng.normal(scale=2.0, size=(2, anchors.num_anchors, 4)).astype(np.float32)
    ours = activations_to_boxes(acts, anchors).numpy()
    for i in range(2):
        ref = lt.actn_to_bb(torch.from_numpy(acts[i]), ref_anc.anchors, ref_anc.grid_sizes).numpy()
        np.testing.assert_allclose(ours[i], ref, rtol=1e-6, atol=1e-7)
        # [A, 4] works too and gives the same.
        np.testing.assert_array_equal(activations_to_boxes(acts[i], anchors).numpy(), ours[i])


def test_activations_to_boxes_by_hand():
    anchors = AnchorConfig.single_grid(4)
    zero = activations_to_boxes(np.zeros((16, 4), np.float32), anchors).numpy()
    np.testing.assert_array_equal(zero, anchors.corners)  # zero activation = the anchor
    big = np.full((16, 4), 50.0, np.float32)  # tanh -> 1: centre +half a cell, size x1.5
    got = activations_to_boxes(big, anchors).numpy()[0]
    ctr, hw = 0.125 + 0.125, 0.25 * 1.5
    np.testing.assert_allclose(got, [ctr - hw / 2, ctr - hw / 2, ctr + hw / 2, ctr + hw / 2], rtol=1e-6)


def test_centers_corners_round_trip():
    rng = np.random.default_rng(4)
    boxes = random_boxes(rng, 10)
    np.testing.assert_allclose(centers_to_corners(corners_to_centers(boxes)), boxes, atol=1e-7)
    tf_boxes = tf.constant(boxes)
    np.testing.assert_allclose(
        centers_to_corners(corners_to_centers(tf_boxes)).numpy(), boxes, atol=1e-7
    )
    np.testing.assert_allclose(corners_to_centers(np.array([[0.1, 0.2, 0.5, 0.8]])),
                               [[0.3, 0.5, 0.4, 0.6]], atol=1e-7)


def test_lesson_hw2corners_same(lt):
    import torch

    c = AnchorConfig().centers
    ref = lt.hw2corners(torch.from_numpy(c[:, :2]), torch.from_numpy(c[:, 2:])).numpy()
    np.testing.assert_array_equal(centers_to_corners(c), ref)
    np.testing.assert_array_equal(centers_to_corners(tf.constant(c)).numpy(), ref)


@pytest.mark.parametrize(
    "boxes, match",
    [
        ([[0.5, 0.1, 0.2, 0.3]], "degenerate boxes"),
        ([[0.1, 0.1, 0.1, 0.3]], "degenerate boxes"),
        ([[0.1, 0.1, 1.2, 0.3]], r"outside \[0, 1\]"),
        ([[np.nan, 0.1, 0.2, 0.3]], "NaN"),
    ],
)
def test_validate_boxes_errors(boxes, match):
    with pytest.raises(ValueError, match=match):
        validate_boxes(boxes, name="train.json")
    with pytest.raises(ValueError, match="train.json"):
        validate_boxes(boxes, name="train.json")


def test_validate_boxes_clip():
    got = validate_boxes([[-0.1, 0.2, 1.3, 0.5]], clip=True)
    np.testing.assert_array_equal(got, np.array([[0.0, 0.2, 1.0, 0.5]], np.float32))


def test_jaccard_numpy_in_numpy_out_in_its_dtype_equals_tf():
    rng = np.random.default_rng(5)
    a, b = random_inputs.random_boxes(rng, 7), random_inputs.random_boxes(rng, 9)
    as_tf = jaccard(tf.constant(a), tf.constant(b))
    assert isinstance(as_tf, tf.Tensor)
    np.testing.assert_array_equal(jaccard(a, b), as_tf.numpy())  # float32: the same IEEE ops
    wide = jaccard(a.astype(np.float64), b.astype(np.float64))
    assert isinstance(wide, np.ndarray) and wide.dtype == np.float64
    np.testing.assert_allclose(wide, as_tf.numpy(), rtol=1e-6)
