"""The lesson's two warm-up models before SSD: the largest-object detector and the multi-label
classifier.

fastai lesson 9 starts from lesson 8's single-object detector and a multi-label classifier:

* **largest object** (`build_single_object_detector`): a body, then `head_reg4 =
  nn.Sequential(Flatten(), ReLU(), Dropout(0.5), Linear(25088, 256), ReLU(), BatchNorm1d(256),
  Dropout(0.5), Linear(256, 4 + C))`, trained with `detn_loss`: L1 on the box (put through
  `sigmoid * 224`, pixels) plus 20 x cross-entropy on the class of each image's largest
  object (`get_lrg`: the first object of largest area);
* **multi-label** (`build_multilabel_classifier`): a body, pooling and one dense layer of `C`
  logits, trained with binary cross-entropy against the set of classes in the image (`mc`).

Conventions: boxes are relative yxyx `(ymin, xmin, ymax, xmax)` in [0, 1]; `y_true` of the
detection pipeline is `[B, M, 5]` rows `(ymin, xmin, ymax, xmax, class_id)`, padding class -1.
The single-object model outputs `[B, 4 + C]`: the box (already through the sigmoid, relative
yxyx) then `C` class logits; its target is `[B, 5]`, one `y_true` row per image.

    data = make_shapes(4000, image_size=64, min_size=0.2, max_size=0.6, max_objects=4)
    model = build_single_object_detector(data.num_classes, backbone="tiny", image_size=64)
    model.compile("adam", SingleObjectLoss(), metrics=single_object_metrics())
    model.fit(single_object_dataset(data, 64, 64, shuffle=True, seed=0), epochs=3)
"""

from __future__ import annotations

import logging

import keras
import numpy as np
import tensorflow as tf

from ssd_keras.backbones import get_backbone

log = logging.getLogger("ssd_keras.lesson_models")
_register = keras.saving.register_keras_serializable(package="ssd_keras")

#: The lesson's `detn_loss` is `l1(224 * sigmoid(b), 224 * t) + 20 * cross_entropy`, i.e.
#: `20 * (224 / 20 * l1_relative + cross_entropy)`. With relative boxes the same balance is
#: `box_weight = 224 / 20 = 11.2` (the overall factor 20 only rescales the gradients, which
#: Adam undoes). The lesson picked 20 "to make them approximately equal" at 224 px.
LESSON_BOX_WEIGHT = 224.0 / 20.0

#: Areas (relative, image area = 1) closer than this count as a tie. The lesson compares
#: integer pixel areas, so ties are exact there; relative float32 coordinates carry rounding
#: errors of up to ~1e-6 in an area, while distinct pixel areas differ by at least
#: 1 / (width * height) (> 1e-6 for images under a megapixel, e.g. VOC's 500 x 375 = 5e-6).
TIE_TOLERANCE = 1e-6


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------


def _records_of(source):
    return list(getattr(source, "records", source))


def _is_records(source):
    if hasattr(source, "records"):
        return True
    if isinstance(source, (list, tuple)):
        return len(source) == 0 or hasattr(source[0], "boxes")
    return False


def largest_object_index(boxes, tie_tolerance=TIE_TOLERANCE):
    """Index of the largest box among `[n, 4]` relative yxyx `boxes` (numpy), or -1 if `n == 0`.

    The lesson's `get_lrg` sorts by area with Python's stable `sorted(..., reverse=True)`,
    so of several boxes with the largest area the **first** wins; areas within
    `tie_tolerance` of the largest count as ties (see `TIE_TOLERANCE`).
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return -1
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return int(np.flatnonzero(area >= area.max() - tie_tolerance)[0])


def largest_object_targets(source, tie_tolerance=TIE_TOLERANCE):
    """Per image, the largest object as one `y_true` row `(ymin, xmin, ymax, xmax, class_id)`.

    Args:
        source: a `DetectionData` or a list of `Record`s (boxes relative yxyx), or padded
            `y_true` `[B, M, 5]` (numpy or tensor; rows relative yxyx + class, padding
            class -1), e.g. a batch of `make_dataset`.
        tie_tolerance: areas this close to the largest are ties; the first such object
            (file / row order) wins, as in the lesson's `get_lrg`.
    Returns:
        `[N, 5]` float32 rows, relative yxyx + class id: numpy for records, a tensor for
        `y_true` (so it works inside `tf.data.Dataset.map`). An image **without objects**
        gives the row `(0, 0, 0, 0, -1)`; `SingleObjectLoss` and the metrics give such rows
        no loss and leave them out, and `single_object_dataset` skips those images (counted,
        logged). (The lesson's `get_lrg` raises on them.)
    """
    if _is_records(source):
        rows = np.zeros((0, 5), np.float32)
        out = []
        for r in _records_of(source):
            i = largest_object_index(r.boxes, tie_tolerance)
            out.append([0, 0, 0, 0, -1] if i < 0 else [*r.boxes[i], r.classes[i]])
        return np.asarray(out, np.float32).reshape(-1, 5) if out else rows
    y_true = tf.convert_to_tensor(source, tf.float32)
    if y_true.shape.rank != 3 or y_true.shape[-1] != 5:
        raise ValueError(
            "largest_object_targets: y_true must be [batch, max_boxes, 5] rows (ymin, xmin, "
            f"ymax, xmax, class_id) with class -1 for padding; got shape {y_true.shape}"
        )
    valid = y_true[..., 4] >= 0
    area = (y_true[..., 2] - y_true[..., 0]) * (y_true[..., 3] - y_true[..., 1])
    area = tf.where(valid, area, -1.0)  # padding never wins
    best = tf.reduce_max(area, axis=-1, keepdims=True)
    # The first row within the tolerance of the largest area. (tf.argmax does not promise
    # which of several equal maxima it returns, so take the smallest such index.)
    m = tf.shape(y_true)[1]
    idx = tf.range(m)[None, :]
    is_top = valid & (area >= best - tie_tolerance)
    first = tf.reduce_min(tf.where(is_top, idx, m), axis=-1)
    rows = tf.gather(y_true, tf.minimum(first, m - 1), batch_dims=1)
    has_object = tf.reduce_any(valid, axis=-1)
    return tf.where(has_object[:, None], rows, tf.constant([0.0, 0.0, 0.0, 0.0, -1.0]))


def multi_hot(source, num_classes):
    """The lesson's `mc` as multi-hot targets: `[N, num_classes]` float32, 1 where the class
    occurs in the image (any number of times), 0 elsewhere; an image without objects is all 0.

    `source`: a `DetectionData` / list of `Record`s (gives numpy) or padded `y_true`
    `[B, M, 5]` with padding class -1 (gives a tensor, for `tf.data.Dataset.map`).
    """
    num_classes = int(num_classes)
    if _is_records(source):
        out = np.zeros((len(_records_of(source)), num_classes), np.float32)
        for i, r in enumerate(_records_of(source)):
            if len(r.classes) and (r.classes.min() < 0 or r.classes.max() >= num_classes):
                raise ValueError(f"multi_hot: record {r.image_id} has class ids outside [0, {num_classes})")
            out[i, r.classes] = 1.0
        return out
    y_true = tf.convert_to_tensor(source, tf.float32)
    if y_true.shape.rank != 3 or y_true.shape[-1] != 5:
        raise ValueError(f"multi_hot: y_true must be [batch, max_boxes, 5], got shape {y_true.shape}")
    # one_hot of -1 (padding) is all zeros; the max over rows makes repeats count once.
    hot = tf.one_hot(tf.cast(y_true[..., 4], tf.int32), num_classes, dtype=tf.float32)
    return tf.reduce_max(hot, axis=1)


def _with_objects(records, what):
    kept = [r for r in records if r.num_objects > 0]
    skipped = len(records) - len(kept)
    if skipped:
        log.warning("%s: skipped %d of %d image(s) without objects (no largest object to learn)",
                    what, skipped, len(records))
    if not kept:
        raise ValueError(f"{what}: no image has an object")
    return kept, skipped


def single_object_dataset(data, image_size, batch_size, **kwargs):
    """`make_dataset` batches with the largest-object target: `(images, [B, 5])`.

    Images without objects are skipped (a warning logs how many). The largest object is
    picked after augmentation (`augment=` in `kwargs`), from the augmented boxes; a flip
    keeps it, a rotation may change it, and a box lost to clipping leaves an image with the
    row `(0, 0, 0, 0, -1)`, which the loss and metrics ignore.

    Args:
        data: `DetectionData` or list of `Record`s (boxes relative yxyx).
        image_size, batch_size, kwargs: as for `ssd_keras.data.make_dataset` (`shuffle`,
            `seed`, `augment`, `repeat`, ...).
    """
    from ssd_keras.data import make_dataset

    records, _ = _with_objects(_records_of(data), "single_object_dataset")
    ds = make_dataset(records, image_size, batch_size, **kwargs)
    return ds.map(lambda x, y: (x, largest_object_targets(y)), num_parallel_calls=tf.data.AUTOTUNE)


def multilabel_dataset(data, image_size, batch_size, num_classes=None, **kwargs):
    """`make_dataset` batches with multi-hot targets: `(images, [B, C])` (the lesson's `mc`).

    `num_classes` defaults to `data.num_classes` (a `DetectionData`). Images without objects
    stay, with an all-zero target.
    """
    from ssd_keras.data import make_dataset

    if num_classes is None:
        if not hasattr(data, "num_classes"):
            raise ValueError("multilabel_dataset: pass num_classes with a list of records")
        num_classes = data.num_classes
    ds = make_dataset(_records_of(data), image_size, batch_size, **kwargs)
    return ds.map(lambda x, y: (x, multi_hot(y, num_classes)), num_parallel_calls=tf.data.AUTOTUNE)


# ------------------------------------------------------------------------------------------
# Single object: model, loss, metrics
# ------------------------------------------------------------------------------------------


@_register
class BoxSigmoid(keras.layers.Layer):
    """`[B, 4 + C]` → the same with a sigmoid on the first 4 columns (the box, relative yxyx);
    the class logits pass through. Output float32 (mixed precision: losses see float32)."""

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, x):
        x = keras.ops.cast(x, "float32")
        return keras.ops.concatenate([keras.ops.sigmoid(x[:, :4]), x[:, 4:]], axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape


def _body(backbone, weights, image_size, where):
    if isinstance(backbone, keras.Model):
        if weights is not None:
            raise ValueError(f"{where}: pass weights=None with a backbone model (load its weights yourself)")
        if tuple(backbone.inputs[0].shape[1:]) != (image_size, image_size, 3):
            raise ValueError(f"{where}: the backbone model takes {tuple(backbone.inputs[0].shape[1:])} "
                             f"images but image_size={image_size}")
        return backbone if backbone.name == "backbone" else keras.Model(
            backbone.inputs, backbone.outputs[0], name="backbone")
    return get_backbone(backbone, weights=weights, input_shape=(image_size, image_size, 3))


def build_single_object_detector(num_classes, backbone="resnet34", weights=None, image_size=224,
                                 hidden=256, dropout=(0.5, 0.5), name="single_object"):
    """The lesson's largest-object detector: images `[B, S, S, 3]` (0-255) → `[B, 4 + C]`.

    Head (lesson 8/9's `head_reg4`): flatten the body's map → dropout → dense(`hidden`) → ReLU
    → batch norm → dropout → dense(4 + C). The first 4 outputs go through a sigmoid: the box,
    relative yxyx (the lesson's `sigmoid * 224`, over 224 px). The rest are class logits.
    (The lesson's ReLU right after `Flatten` is left out: every body here ends in a ReLU.)

    Args:
        num_classes: `C`.
        backbone: a `get_backbone` name ("resnet34" as in the lesson, "tiny" for CPU) or a
            `keras.Model` body taking 0-255 images `[S, S, 3]`.
        weights: the body's weights (None, "imagenet", or a file; see `get_backbone`).
        image_size: `S`.
        hidden: width of the hidden dense layer (lesson: 256).
        dropout: `(before the hidden layer, before the output)` rates (lesson: 0.5, 0.5);
            a number for both.
    Returns:
        functional `keras.Model` with layers "backbone", ..., "y_pred". Compile with
        `SingleObjectLoss()` and `single_object_metrics()`.
    """
    num_classes, image_size = int(num_classes), int(image_size)
    if num_classes < 1:
        raise ValueError(f"build_single_object_detector: num_classes must be >= 1, got {num_classes}")
    d0, d1 = (dropout, dropout) if np.isscalar(dropout) else dropout
    body = _body(backbone, weights, image_size, "build_single_object_detector")
    images = keras.Input((image_size, image_size, 3), name="images")
    x = keras.layers.Flatten(name="flatten")(body(images))
    x = keras.layers.Dropout(d0, name="drop_0")(x)
    x = keras.layers.Dense(int(hidden), name="hidden")(x)
    x = keras.layers.ReLU(name="hidden_relu")(x)
    # PyTorch BatchNorm1d defaults (momentum 0.1 = Keras 0.9, eps 1e-5), as the lesson's.
    x = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name="hidden_bn")(x)
    x = keras.layers.Dropout(d1, name="drop_1")(x)
    x = keras.layers.Dense(4 + num_classes, name="out")(x)
    y_pred = BoxSigmoid(name="y_pred")(x)
    return keras.Model(images, y_pred, name=name)


def _check_single(y_true, y_pred, where):
    y_true = tf.cast(tf.convert_to_tensor(y_true), tf.float32)
    y_pred = tf.cast(tf.convert_to_tensor(y_pred), tf.float32)
    if y_true.shape.rank is not None and (y_true.shape.rank != 2 or y_true.shape[-1] not in (None, 5)):
        raise ValueError(f"{where}: y_true must be [batch, 5] rows (ymin, xmin, ymax, xmax, class_id) "
                         f"(see largest_object_targets), got shape {y_true.shape}")
    if y_pred.shape.rank is not None and (y_pred.shape.rank != 2 or (y_pred.shape[-1] or 5) < 5):
        raise ValueError(f"{where}: y_pred must be [batch, 4 + num_classes] (box, class logits), "
                         f"got shape {y_pred.shape}")
    return y_true, y_pred


def _single_parts(y_true, y_pred, where):
    """`(l1 [B], ce [B], valid [B] bool)`; invalid rows (class -1) have l1 = ce = 0."""
    y_true, y_pred = _check_single(y_true, y_pred, where)
    cls = y_true[:, 4]
    valid = cls >= 0
    num_classes = tf.shape(y_pred)[-1] - 4
    labels = tf.cast(tf.where(valid, cls, 0.0), tf.int32)
    check = tf.debugging.Assert(
        tf.reduce_all((cls == tf.round(cls)) & (cls >= -1) & (labels < num_classes)),
        [f"{where}: y_true class ids must be integers in [0, num_classes) or -1 (no object); got", cls],
    )
    with tf.control_dependencies([check]):
        labels = tf.identity(labels)
    l1 = tf.reduce_mean(tf.abs(y_pred[:, :4] - y_true[:, :4]), axis=-1)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=y_pred[:, 4:])
    zero = tf.zeros_like(l1)
    return tf.where(valid, l1, zero), tf.where(valid, ce, zero), valid


@_register
class SingleObjectLoss(keras.losses.Loss):
    """The lesson's `detn_loss` for relative boxes: `box_weight * L1 + cross-entropy`, per image.

    `y_true`: `[B, 5]` rows `(ymin, xmin, ymax, xmax, class_id)` (relative yxyx;
    `largest_object_targets`). `y_pred`: `[B, 4 + C]`, the box after the sigmoid (relative
    yxyx) then `C` class logits (`build_single_object_detector`).

    Per image: `box_weight * mean_4 |box_pred - box_true| + sparse categorical
    cross-entropy(logits, class)`; a row with class -1 (image without objects) gives 0. With
    the default reduction the loss is the mean over the batch, as the lesson's (`F.l1_loss`
    and `F.cross_entropy` both average).

    `box_weight`: the lesson's `detn_loss` is `l1_pixels + 20 * ce` with 224 px boxes, i.e.
    `20 * (11.2 * l1_relative + ce)`: the default `LESSON_BOX_WEIGHT = 224 / 20 = 11.2`
    keeps the lesson's balance (our value is the lesson's / 20), whatever the image size,
    since the boxes here are relative.
    """

    def __init__(self, box_weight=LESSON_BOX_WEIGHT, reduction="sum_over_batch_size",
                 name="single_object_loss", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        box_weight = float(box_weight)
        if not np.isfinite(box_weight) or box_weight < 0:
            raise ValueError(f"SingleObjectLoss: box_weight must be a finite number >= 0, got {box_weight}")
        self.box_weight = box_weight

    def call(self, y_true, y_pred):
        l1, ce, _ = _single_parts(y_true, y_pred, "SingleObjectLoss")
        return self.box_weight * l1 + ce

    def get_config(self):
        return {**super().get_config(), "box_weight": self.box_weight}


def box_iou_pairs(boxes_a, boxes_b):
    """IoU of matching rows of two relative yxyx box sets `[..., 4]` → `[...]` (the diagonal
    of `ssd_keras.boxes.jaccard`, without the `N x M` matrix). A predicted box with
    `ymax < ymin` (the sigmoid does not order them) has zero height, hence IoU 0."""
    a = tf.cast(boxes_a, tf.float32)
    b = tf.cast(boxes_b, tf.float32)

    def area(x):
        return tf.maximum(x[..., 2] - x[..., 0], 0.0) * tf.maximum(x[..., 3] - x[..., 1], 0.0)

    h = tf.maximum(tf.minimum(a[..., 2], b[..., 2]) - tf.maximum(a[..., 0], b[..., 0]), 0.0)
    w = tf.maximum(tf.minimum(a[..., 3], b[..., 3]) - tf.maximum(a[..., 1], b[..., 1]), 0.0)
    inter = h * w
    return tf.math.divide_no_nan(inter, area(a) + area(b) - inter)


class _ValidMean(keras.metrics.Metric):
    """Mean of a per-image value over the images that have an object (class >= 0)."""

    def __init__(self, name, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def values(self, y_true, y_pred):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true, y_pred = _check_single(y_true, y_pred, type(self).__name__)
        valid = tf.cast(y_true[:, 4] >= 0, tf.float32)
        if sample_weight is not None:
            valid = valid * tf.reshape(tf.cast(sample_weight, tf.float32), [-1])
        self.total.assign_add(tf.reduce_sum(self.values(y_true, y_pred) * valid))
        self.count.assign_add(tf.reduce_sum(valid))

    def result(self):
        return tf.math.divide_no_nan(self.total, self.count)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}


@_register
class SingleObjectAccuracy(_ValidMean):
    """Fraction of images whose top class logit is the largest object's class (the lesson's
    `detn_acc`); images without objects are left out."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def values(self, y_true, y_pred):
        pred = tf.argmax(y_pred[:, 4:], axis=-1, output_type=tf.int32)
        return tf.cast(pred == tf.cast(y_true[:, 4], tf.int32), tf.float32)


@_register
class SingleObjectIoU(_ValidMean):
    """Mean IoU between the predicted and the true box (both relative yxyx), over images with
    an object."""

    def __init__(self, name="mean_iou", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def values(self, y_true, y_pred):
        return box_iou_pairs(y_pred[:, :4], y_true[:, :4])


@_register
class SingleObjectL1(_ValidMean):
    """Mean L1 box error in relative units (the lesson's `detn_l1` / 224)."""

    def __init__(self, name="l1", dtype=None):
        super().__init__(name=name, dtype=dtype)

    def values(self, y_true, y_pred):
        return tf.reduce_mean(tf.abs(y_pred[:, :4] - y_true[:, :4]), axis=-1)


def single_object_metrics():
    """`[SingleObjectAccuracy(), SingleObjectIoU(), SingleObjectL1()]` for `model.compile`."""
    return [SingleObjectAccuracy(), SingleObjectIoU(), SingleObjectL1()]


# ------------------------------------------------------------------------------------------
# Multi-label classifier
# ------------------------------------------------------------------------------------------


@_register
class ConcatPooling(keras.layers.Layer):
    """fastai's `AdaptiveConcatPool2d`: `[B, H, W, K]` → `[B, 2K]` (max pool, average pool)."""

    def call(self, x):
        return keras.ops.concatenate([keras.ops.max(x, axis=(1, 2)), keras.ops.mean(x, axis=(1, 2))], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 2 * input_shape[-1])


def build_multilabel_classifier(num_classes, backbone="resnet34", weights=None, image_size=224,
                                pooling="concat", dropout=0.25, name="multilabel"):
    """Multi-label classifier: images `[B, S, S, 3]` (0-255) → `[B, C]` logits (float32).

    Body → pooling → dropout → dense(C). `pooling`: "concat" (fastai's max + average,
    `AdaptiveConcatPool2d`, its default for `ConvLearner`), "avg" or "max". Train with
    `keras.losses.BinaryCrossentropy(from_logits=True)` against `multi_hot` targets (the
    lesson's `mc`, which fastai trains with BCE), measure with `MultiLabelF1()`.
    """
    num_classes, image_size = int(num_classes), int(image_size)
    if num_classes < 1:
        raise ValueError(f"build_multilabel_classifier: num_classes must be >= 1, got {num_classes}")
    pools = {"concat": lambda: ConcatPooling(name="pool"),
             "avg": lambda: keras.layers.GlobalAveragePooling2D(name="pool"),
             "max": lambda: keras.layers.GlobalMaxPooling2D(name="pool")}
    if pooling not in pools:
        raise ValueError(f"build_multilabel_classifier: pooling must be one of {sorted(pools)}, got {pooling!r}")
    body = _body(backbone, weights, image_size, "build_multilabel_classifier")
    images = keras.Input((image_size, image_size, 3), name="images")
    x = pools[pooling]()(body(images))
    x = keras.layers.Dropout(float(dropout), name="drop")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name=name)


def multilabel_loss():
    """`keras.losses.BinaryCrossentropy(from_logits=True)`: the mean over images and classes of
    `-(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x)))` (PyTorch's
    `binary_cross_entropy_with_logits`, which fastai uses for multi-label data)."""
    return keras.losses.BinaryCrossentropy(from_logits=True, name="bce")


@_register
class MultiLabelF1(keras.metrics.Metric):
    """Micro-averaged F1 of multi-label predictions: `2 TP / (2 TP + FP + FN)` counted over all
    images and classes, a class predicted where `sigmoid(logit) > threshold` (or
    `probability > threshold` with `from_logits=False`). 0 if nothing is true or predicted.

    The same as `keras.metrics.F1Score(average="micro", threshold=threshold)` (also a strict
    `>`) on probabilities; this one takes the model's logits by default.
    """

    def __init__(self, threshold=0.5, from_logits=True, name="f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.threshold = float(threshold)
        self.from_logits = bool(from_logits)
        self.tp = self.add_variable(shape=(), initializer="zeros", name="tp")
        self.fp = self.add_variable(shape=(), initializer="zeros", name="fp")
        self.fn = self.add_variable(shape=(), initializer="zeros", name="fn")

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = tf.cast(y_true, tf.float32) > 0.5
        y_pred = tf.cast(y_pred, tf.float32)
        prob = tf.sigmoid(y_pred) if self.from_logits else y_pred
        pred = prob > self.threshold
        w = 1.0 if sample_weight is None else tf.reshape(tf.cast(sample_weight, tf.float32), [-1, 1])

        def count(mask):
            return tf.reduce_sum(tf.cast(mask, tf.float32) * w)

        self.tp.assign_add(count(pred & y_true))
        self.fp.assign_add(count(pred & ~y_true))
        self.fn.assign_add(count(~pred & y_true))

    def result(self):
        return tf.math.divide_no_nan(2.0 * self.tp, 2.0 * self.tp + self.fp + self.fn)

    def reset_state(self):
        for v in (self.tp, self.fp, self.fn):
            v.assign(0.0)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype, "threshold": self.threshold,
                "from_logits": self.from_logits}
