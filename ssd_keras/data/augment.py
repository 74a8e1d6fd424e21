"""Augmentation that moves the boxes (the lesson's `tfm_y=TfmType.COORD`).

    augs = [RandomFlip(), RandomRotate(10), RandomLighting(0.1, 0.1)]   # lesson In [54]
    image, boxes, classes = apply_augmentations(augs, image, boxes, classes, seed)

Each transform works on one image inside a `tf.data` graph: `image` float32 `[H, W, 3]`
(0-255), `boxes` float32 `[n, 4]` relative yxyx, `classes` int32 `[n]`, `seed` an int `[2]`
tensor for TF's stateless random ops. `apply_augmentations` clips the boxes to the image and
removes degenerate ones (and their classes) afterwards.

Why hand-written rather than `keras.layers.RandomFlip(bounding_box_format="rel_yxyx")`,
`RandomRotation`, `RandomBrightness`/`RandomContrast`: those layers move boxes the same way
(the rotation also takes the box of the rotated corners), but they have no application
probability `p`, draw from a stateful `SeedGenerator` (so a parallel `tf.data.map` is not
reproducible from a seed), keep degenerate boxes after clipping, and their contrast is not
fastai's `lighting`. The geometry here is a few lines each; `tests/test_augment.py` checks it
exactly, and checks the flip against Keras' layer.
"""

from __future__ import annotations

import math

import tensorflow as tf


def _uniform(seed, n=2):
    return tf.random.stateless_uniform([n], seed=seed, dtype=tf.float32)


class Augmentation:
    """Base class: `p` = probability of applying; `get_config`/`from_config` round trip."""

    def __init__(self, p=1.0):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{type(self).__name__}: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, image, boxes, classes, seed):
        u = _uniform(seed, 4)
        return tf.cond(u[0] < self.p, lambda: self.apply(image, boxes, classes, u[1:]),
                       lambda: (image, boxes, classes))

    def apply(self, image, boxes, classes, u):
        """Apply for sure; `u` holds 3 uniform [0, 1) numbers for the random parameters."""
        raise NotImplementedError

    def get_config(self):
        return {"p": self.p}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.get_config().items())})"


class RandomFlip(Augmentation):
    """Horizontal flip with probability `p` (fastai's `RandomFlip`, p=0.5): x -> 1 - x."""

    def __init__(self, p=0.5):
        super().__init__(p)

    def apply(self, image, boxes, classes, u):
        flipped = tf.stack([boxes[:, 0], 1.0 - boxes[:, 3], boxes[:, 2], 1.0 - boxes[:, 1]], axis=1)
        return tf.reverse(image, axis=[1]), flipped, classes


def rotate_boxes(boxes, degrees, height, width):
    """Rotate relative yxyx boxes `[n, 4]` counter-clockwise (as displayed) by `degrees` about
    the image centre; returns the bounding box of each box's 4 rotated corners (the lesson's
    tip: this enlarges boxes, so keep angles modest). Not clipped.

    Rotation is done in pixel units, so non-square images rotate without shear.
    """
    h, w = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    ys = tf.stack([boxes[:, 0], boxes[:, 0], boxes[:, 2], boxes[:, 2]], 1) * h - h / 2
    xs = tf.stack([boxes[:, 1], boxes[:, 3], boxes[:, 1], boxes[:, 3]], 1) * w - w / 2
    # y grows downwards, so a counter-clockwise turn on screen is this matrix.
    new_x = (xs * cos + ys * sin + w / 2) / w
    new_y = (-xs * sin + ys * cos + h / 2) / h
    return tf.stack([tf.reduce_min(new_y, 1), tf.reduce_min(new_x, 1),
                     tf.reduce_max(new_y, 1), tf.reduce_max(new_x, 1)], axis=1)


def rotate_image(image, degrees, fill_mode="constant", fill_value=0.0, interpolation="bilinear"):
    """Rotate an image `[H, W, C]` counter-clockwise by `degrees` about its centre (same size)."""
    shape = tf.shape(image)
    h, w = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    theta = tf.cast(degrees, tf.float32) * (math.pi / 180.0)
    cos, sin = tf.cos(theta), tf.sin(theta)
    cy, cx = (h - 1) / 2, (w - 1) / 2  # pixel-index centre
    # The transform maps output pixel (x, y) to the input pixel it samples: the inverse rotation.
    transform = tf.stack([cos, -sin, cx - cos * cx + sin * cy,
                          sin, cos, cy - sin * cx - cos * cy, 0.0, 0.0])[None]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=image[None], transforms=transform, output_shape=shape[:2],
        fill_value=tf.cast(fill_value, tf.float32), interpolation=interpolation.upper(),
        fill_mode=fill_mode.upper())
    return out[0]


class RandomRotate(Augmentation):
    """Rotate by a uniform angle in `[-max_deg, max_deg]` with probability `p` (fastai's
    `RandomRotate(deg, p=0.75)`); boxes become the box of their rotated corners.

    `fill_mode`: `"constant"` (default, `fill_value`), `"reflect"` (fastai's border mode; it
    mirrors objects into the corners without boxes), `"nearest"` or `"wrap"`.
    """

    def __init__(self, max_deg=10.0, p=0.75, fill_mode="constant", fill_value=0.0, interpolation="bilinear"):
        super().__init__(p)
        if fill_mode not in ("constant", "reflect", "nearest", "wrap"):
            raise ValueError(f"RandomRotate: unknown fill_mode {fill_mode!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ValueError(f"RandomRotate: unknown interpolation {interpolation!r}")
        if not 0.0 <= float(max_deg) <= 180.0:  # NaN too: it would blank every image
            raise ValueError(f"RandomRotate: max_deg must be in [0, 180], got {max_deg!r}")
        self.max_deg, self.fill_mode, self.fill_value = float(max_deg), fill_mode, float(fill_value)
        self.interpolation = interpolation

    def apply(self, image, boxes, classes, u):
        deg = (u[0] * 2.0 - 1.0) * self.max_deg
        shape = tf.shape(image)
        return (rotate_image(image, deg, self.fill_mode, self.fill_value, self.interpolation),
                rotate_boxes(boxes, deg, shape[0], shape[1]), classes)

    def get_config(self):
        return {"max_deg": self.max_deg, "p": self.p, "fill_mode": self.fill_mode,
                "fill_value": self.fill_value, "interpolation": self.interpolation}


class RandomLighting(Augmentation):
    """fastai's `RandomLighting(b, c)`: brightness shift `b ~ U(-b, b)` (fraction of 255) and
    contrast `c ~ U(-c, c)` about the image mean, factor `1 + c` (or `1 / (1 - c)` for c < 0),
    clipped to 0-255. Boxes are untouched.
    """

    def __init__(self, brightness=0.1, contrast=0.1, p=1.0):
        super().__init__(p)
        self.brightness, self.contrast = float(brightness), float(contrast)

    def apply(self, image, boxes, classes, u):
        b = (u[0] * 2.0 - 1.0) * self.brightness * 255.0
        c = (u[1] * 2.0 - 1.0) * self.contrast
        factor = tf.where(c < 0, 1.0 / (1.0 - c), 1.0 + c)
        mu = tf.reduce_mean(image)
        # (image - mu) * factor + mu + b, folded into one multiply-add over the pixels.
        return tf.clip_by_value(image * factor + (mu * (1.0 - factor) + b), 0.0, 255.0), boxes, classes

    def get_config(self):
        return {"brightness": self.brightness, "contrast": self.contrast, "p": self.p}


def clip_and_filter(boxes, classes, min_size=1e-3):
    """Clip relative yxyx boxes to [0, 1]; drop boxes (and classes) thinner than `min_size`."""
    boxes = tf.clip_by_value(boxes, 0.0, 1.0)
    keep = ((boxes[:, 2] - boxes[:, 0]) > min_size) & ((boxes[:, 3] - boxes[:, 1]) > min_size)
    return tf.boolean_mask(boxes, keep), tf.boolean_mask(classes, keep)


def apply_augmentations(augmentations, image, boxes, classes, seed, min_size=1e-3):
    """Apply `augmentations` in order (each with its own stream split from `seed` `[2]`), then
    clip boxes to the image and remove degenerate ones. Boxes relative yxyx."""
    augmentations = list(augmentations or [])
    if augmentations:
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), len(augmentations))
        for i, aug in enumerate(augmentations):
            image, boxes, classes = aug(image, boxes, classes, seeds[i])
    return (image, *clip_and_filter(boxes, classes, min_size))


AUGMENTATIONS = {c.__name__: c for c in (RandomFlip, RandomRotate, RandomLighting)}


def lesson_augmentations(max_deg=10.0):
    """The lesson's `augs` (In [54]); it used 30 degrees for one object and less for many
    because rotating enlarges the boxes."""
    return [RandomFlip(), RandomRotate(max_deg), RandomLighting(0.1, 0.1)]


def serialize_augmentations(augmentations):
    return [{"class_name": type(a).__name__, "config": a.get_config()} for a in augmentations]


def deserialize_augmentations(configs):
    return [AUGMENTATIONS[c["class_name"]].from_config(c["config"]) for c in configs]


#: The augmentations the CLI offers by name (`--augment`).
AUGMENT_CHOICES = ("none", "flip", "lesson")


def augmentations_by_name(name):
    """`"none"` → None, `"flip"` → horizontal flips, `"lesson"` → `lesson_augmentations()`."""
    if name not in AUGMENT_CHOICES:
        raise ValueError(f"augmentation must be one of {AUGMENT_CHOICES}, got {name!r}")
    return {"none": None, "flip": [RandomFlip()], "lesson": lesson_augmentations()}[name]
