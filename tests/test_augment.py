"""Augmentation geometry, checked exactly."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.data.augment import (
    RandomFlip,
    RandomLighting,
    RandomRotate,
    apply_augmentations,
    clip_and_filter,
    deserialize_augmentations,
    lesson_augmentations,
    rotate_boxes,
    rotate_image,
    serialize_augmentations,
)

SEED = tf.constant([1, 2], tf.int64)
BOXES = tf.constant([[0.1, 0.2, 0.3, 0.6], [0.5, 0.0, 1.0, 0.25]], tf.float32)
CLASSES = tf.constant([3, 7], tf.int32)


def _image_with_box(size=32):
    img = np.zeros((size, size, 3), np.float32)
    img[8:16, 4:12] = 255.0  # rows 8..15, cols 4..11: relative yxyx (0.25, 0.125, 0.5, 0.375)
    return tf.constant(img), tf.constant([[0.25, 0.125, 0.5, 0.375]])


def test_flip_maps_x_to_one_minus_x():
    image, _ = _image_with_box()
    out, b, c = RandomFlip(p=1.0)(image, BOXES, CLASSES, SEED)
    np.testing.assert_allclose(b, [[0.1, 0.4, 0.3, 0.8], [0.5, 0.75, 1.0, 1.0]], atol=1e-7)
    np.testing.assert_array_equal(out.numpy(), image.numpy()[:, ::-1])
    np.testing.assert_array_equal(c, CLASSES)
    # The flipped white block sits exactly in the flipped box.
    ys, xs = np.nonzero(out.numpy()[..., 0])
    np.testing.assert_allclose([ys.min() / 32, xs.min() / 32, (ys.max() + 1) / 32, (xs.max() + 1) / 32],
                               [0.25, 1 - 0.375, 0.5, 1 - 0.125])
    same = RandomFlip(p=0.0)(image, BOXES, CLASSES, SEED)
    np.testing.assert_array_equal(same[1], BOXES)


def test_flip_agrees_with_keras_layer():
    import keras

    layer = keras.layers.RandomFlip("horizontal", bounding_box_format="rel_yxyx")
    image, _ = _image_with_box()
    data = {"images": image[None], "bounding_boxes": {"boxes": BOXES[None], "labels": tf.cast(CLASSES, tf.float32)[None]}}
    t = {"flips": tf.constant([[True]]), "input_shape": tf.shape(image[None])}
    kb = layer.transform_bounding_boxes(data["bounding_boxes"], t, training=True)["boxes"][0]
    ours = RandomFlip(p=1.0)(image, BOXES, CLASSES, SEED)[1]
    np.testing.assert_allclose(ours, kb, atol=1e-6)


def test_rotate_90_known_box():
    # Counter-clockwise 90 degrees about the centre, hand-computed: x' = y, y' = 1 - x.
    got = rotate_boxes(tf.constant([[0.1, 0.2, 0.3, 0.6]]), 90.0, 100, 100)
    np.testing.assert_allclose(got, [[0.4, 0.1, 0.8, 0.3]], atol=1e-6)
    # Non-square image: rotation is in pixels; a 90 degree turn of a 200x100 (HxW) image maps the
    # centred box 20x40 px to 40x20 px.
    got = rotate_boxes(tf.constant([[90 / 200, 30 / 100, 110 / 200, 70 / 100]]), 90.0, 200, 100)
    np.testing.assert_allclose(got, [[80 / 200, 40 / 100, 120 / 200, 60 / 100]], atol=1e-6)


def test_rotate_90_image_moves_with_box():
    image, box = _image_with_box()
    out = rotate_image(image, 90.0, interpolation="nearest").numpy()
    ys, xs = np.nonzero(out[..., 0] > 127)
    pix = [ys.min() / 32, xs.min() / 32, (ys.max() + 1) / 32, (xs.max() + 1) / 32]
    np.testing.assert_allclose(pix, rotate_boxes(box, 90.0, 32, 32)[0], atol=1e-6)
    np.testing.assert_array_equal(out[..., 0], np.rot90(image.numpy()[..., 0]))  # numpy rot90 is CCW


def test_rotation_box_is_box_of_rotated_corners():
    deg = 30.0
    got = rotate_boxes(tf.constant([[0.25, 0.25, 0.75, 0.75]]), deg, 64, 64).numpy()[0]
    half = 0.25 * (np.cos(np.radians(deg)) + np.sin(np.radians(deg)))  # the lesson's tip: boxes grow
    np.testing.assert_allclose(got, [0.5 - half, 0.5 - half, 0.5 + half, 0.5 + half], atol=1e-6)
    aug = RandomRotate(max_deg=30, p=1.0)
    _, b, _ = aug(tf.zeros((64, 64, 3)), tf.constant([[0.25, 0.25, 0.75, 0.75]]), tf.constant([1]), SEED)
    assert (b[0, 2] - b[0, 0]) >= 0.5 - 1e-6  # a rotated box never shrinks


def test_lighting_leaves_boxes_untouched_and_follows_fastai():
    image = tf.constant(np.random.default_rng(0).uniform(0, 255, (16, 16, 3)), tf.float32)
    aug = RandomLighting(0.1, 0.1)
    out, b, c = aug(image, BOXES, CLASSES, SEED)
    np.testing.assert_array_equal(b, BOXES)
    np.testing.assert_array_equal(c, CLASSES)
    # Recompute fastai's lighting with the same random draws.
    u = tf.random.stateless_uniform([4], seed=SEED).numpy()[1:]
    bb, cc = (u[0] * 2 - 1) * 0.1 * 255, (u[1] * 2 - 1) * 0.1
    cc = -1 / (cc - 1) if cc < 0 else cc + 1
    mu = image.numpy().mean()
    np.testing.assert_allclose(out, np.clip((image.numpy() - mu) * cc + mu + bb, 0, 255), rtol=1e-5, atol=1e-3)


def test_clip_and_filter():
    boxes = tf.constant([[-0.2, 0.1, 0.5, 1.3], [0.2, 1.1, 0.4, 1.5], [0.5, 0.5, 0.5004, 0.9]])
    b, c = clip_and_filter(boxes, tf.constant([1, 2, 3]))
    np.testing.assert_allclose(b, [[0.0, 0.1, 0.5, 1.0]])
    assert c.numpy().tolist() == [1]


def test_pipeline_of_augmentations_in_graph_is_deterministic():
    augs = lesson_augmentations(20)

    @tf.function
    def run(seed):
        return apply_augmentations(augs, tf.ones((32, 32, 3)) * 100, BOXES, CLASSES, seed)

    a, b = run(SEED), run(SEED)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    outs = {tuple(np.round(run(tf.constant([i, 0], tf.int64))[1].numpy().ravel(), 5)) for i in range(8)}
    assert len(outs) > 1  # different seeds, different augmentations
    for i in range(8):
        _, bb, _ = run(tf.constant([i, 0], tf.int64))
        assert np.all(bb.numpy() >= 0) and np.all(bb.numpy() <= 1)


def test_probability_and_config_round_trip():
    hits = sum(bool(np.any(RandomFlip(p=0.3)(tf.zeros((2, 2, 3)), BOXES, CLASSES, tf.constant([i, 9]))[1] != BOXES))
               for i in range(200))
    assert 40 <= hits <= 80  # ~60 of 200
    augs = [RandomFlip(0.4), RandomRotate(12, p=0.5, fill_mode="reflect"), RandomLighting(0.2, 0.05, p=0.9)]
    back = deserialize_augmentations(serialize_augmentations(augs))
    assert [a.get_config() for a in back] == [a.get_config() for a in augs]
    assert "RandomRotate(max_deg=12.0" in repr(back[1])
    with pytest.raises(ValueError, match="p must be in"):
        RandomFlip(p=2)
    with pytest.raises(ValueError, match="fill_mode"):
        RandomRotate(5, fill_mode="mirror")
    for bad in (float("nan"), -10, 1e6):  # NaN blanked every image and dropped every box
        with pytest.raises(ValueError, match=r"max_deg must be in \[0, 180\]"):
            RandomRotate(bad)
