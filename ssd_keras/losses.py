"""The lesson's SSD loss (`ssd_1_loss` + `BCE_Loss` / `FocalLoss`) as a Keras loss.

Per image, as in the lesson:

* **loc**: L1 between the decoded boxes of the positive anchors
  (`activations_to_boxes(y_pred[..., :4])`) and the boxes of the objects they are matched to,
  averaged over positive anchors × 4 coordinates (0 for an image without objects);
* **clas**: binary cross-entropy with logits against one-hot targets with the background
  column dropped (a background anchor's target is all zeros), summed over anchors and
  classes, divided by `num_classes`; with `focal=(alpha, gamma)` each term is weighted by
  `(alpha * t + (1 - alpha) * (1 - t)) * (1 - pt) ** gamma` (the lesson's `FocalLoss`). The
  weight is differentiated, as in the focal-loss paper and in the lesson (torch 0.3 treated
  `weight=` as a plain factor).

The whole batch is matched at once (`ssd_keras.matching.match_anchors`), so the loss runs
under `tf.function` and XLA (`jit_compile=True`); `SSDLoss.fuse_with_xla` (opt-in) runs the
matching and both terms as one nested XLA cluster.
"""

from __future__ import annotations

import math
import numbers

import keras
import tensorflow as tf

from ssd_keras._checks import is_whole
from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import activations_to_boxes
from ssd_keras.matching import in_xla_context, match_anchors

#: the lesson's focal-loss parameters (`alpha, gamma = 0.25, 1`).
LESSON_FOCAL = (0.25, 1.0)


def parse_focal(focal):
    """The one reading of a focal-loss setting: None/False → None (BCE); True or `()` → the
    lesson's `(0.25, 1.0)`; `(alpha, gamma)` → floats, with `0 <= alpha <= 1`, `gamma >= 0`
    (finite). Raises ValueError otherwise (the CLI's `--focal` uses it too)."""
    if focal is None or focal is False:
        return None
    if focal is True or (isinstance(focal, (list, tuple)) and len(focal) == 0):
        return LESSON_FOCAL
    try:
        alpha, gamma = (float(v) for v in focal)
    except (TypeError, ValueError):
        raise ValueError(
            f"focal must be None, True (the lesson's (0.25, 1.0)) or (alpha, gamma), got {focal!r}"
        ) from None
    if not 0.0 <= alpha <= 1.0 or not 0.0 <= gamma < math.inf:
        raise ValueError(f"focal=(alpha, gamma) needs 0 <= alpha <= 1 and 0 <= gamma < inf, got {focal!r}")
    return (alpha, gamma)


def classification_loss(logits, classes, num_classes, focal=None):
    """Per-image classification loss of the lesson: `BCE_Loss` (or `FocalLoss`) / C.

    Args:
        logits: `[B, A, C]` class logits (background column dropped); computed in float32.
        classes: `[B, A]` int32 matched class id of each anchor, `C` for background.
        num_classes: C.
        focal: None (BCE) or `(alpha, gamma)` (already checked by `parse_focal`).
    Returns:
        `[B]` float32: sum over anchors and classes of the binary cross-entropy with logits
        against one-hot targets (background: all zeros), each term weighted by
        `(alpha t + (1 - alpha)(1 - t)) (1 - pt)^gamma` if focal, divided by C.

    With binary targets t, BCE-with-logits(x, t) = softplus(z), z = x (t=0) or -x (t=1), and
    1 - pt = sigmoid(z). Why written by hand, value and gradient (issue 13): TF's `Softplus`
    kernel computes `log1p` one element at a time, 3.5 ns an element here, where Eigen
    vectorises `Exp` (0.4 ns), `Sigmoid` and `Log` (~1 ns). So softplus(z) = relu(z) -
    log(sigmoid(|z|)) (the log of a number in [0.5, 1]: each term within ~6e-8 of the exact
    value, the loss to ~1e-6 relative, without bias; `z - log(sigmoid(z))`, one pass cheaper,
    cancels for z << 0 and was 1e-4 high on a trained detector's confident background). One
    more sigmoid serves the focal weight and the gradient:
    d softplus / dz = s, d (a s^g softplus) / dz = a s^g (g (1 - s) softplus + s), s = sigmoid(z).
    The gradient takes two passes over `[B, A, C]` instead of autodiff's four, and stays
    finite where autodiff of `pow(sigmoid(z), gamma < 1)` is NaN (z << 0). Tested against
    `tf.nn.softplus` with autodiff and against the lesson.
    """
    logits = tf.cast(logits, tf.float32)  # mixed precision: the loss in float32, as SSDLoss
    if logits.shape.rank is not None and logits.shape.rank != 3:
        raise ValueError(f"classification_loss: logits must be [batch, anchors, classes], got shape {logits.shape}")
    c = num_classes
    sign = tf.one_hot(classes, c, on_value=-1.0, off_value=1.0)
    if focal is not None:
        alpha, gamma = focal
        alpha_t = tf.one_hot(classes, c, on_value=alpha, off_value=1.0 - alpha)

    @tf.custom_gradient
    def loss_and_grad(x):
        z = x * sign
        s = tf.sigmoid(z)
        softplus = tf.nn.relu(z) - tf.math.log(tf.sigmoid(tf.abs(z)))  # NaN stays NaN
        if focal is None:
            per_class = softplus
        else:
            # pow(s, 0) would be 1 even where s underflows, but its autodiff gradient NaN:
            # the gradient below is written out, so gamma = 0 is plain alpha-weighted BCE.
            weight = alpha_t if gamma == 0 else alpha_t * (s if gamma == 1 else tf.pow(s, gamma))
            per_class = weight * softplus
        value = tf.reduce_sum(per_class, axis=[-2, -1]) / c

        def grad(upstream):  # upstream: [B], d total / d value
            if focal is None:
                d_z = s
            elif gamma == 0:
                d_z = weight * s
            else:
                d_z = weight * (gamma * (1.0 - s) * softplus + s)
            return tf.reshape(upstream / c, [-1, 1, 1]) * (d_z * sign)

        return value, grad

    return loss_and_grad(logits)


@keras.saving.register_keras_serializable(package="ssd_keras")
class SSDLoss(keras.losses.Loss):
    """SSD loss of fastai lesson 9: L1 location loss + BCE (or focal) classification loss.

    Args:
        anchors: the `AnchorConfig` of the model (or its config dict; `None` = default).
        num_classes: number of object classes `C` (without background).
        pos_threshold: anchors matched with IoU above this are positive (lesson: 0.4).
        focal: `None` for BCE, `(alpha, gamma)` for focal loss, `True` for the lesson's
            `(0.25, 1.0)`.
        validate: check `y_true` in the graph (see below). Cheap; turn off only for speed
            measurements.
        loc_weight: the loss is `loc_weight * loc + clas` (lesson: 1, the default). The
            lesson's `loc` is a mean over positive anchors' coordinates (~0.03-0.1) while `clas`
            sums over all anchors (~0.5-10), so the shared features learn mostly from `clas`.
            The demo weights `loc` 4, which places small boxes better (with 8 the
            classification suffers; in the demo of 2026-11-29, any weight above 1 did):
            bench/README.md, "The demo's defaults". The logged `loc` and `clas` stay unweighted.
        reduction, name, dtype: as for any `keras.losses.Loss`.

    `y_true`: `[B, M, 5]` float rows `(ymin, xmin, ymax, xmax, class_id)`, relative yxyx boxes,
    `class_id = -1` for padding rows. `y_pred`: `[B, A, 4 + C + 1]`, raw box activations then
    class logits with background last (`A = anchors.num_anchors`).

    `call` returns the per-image loss `[B]` (`loc_weight * loc + clas`); with Keras' default reduction the
    loss is the **mean over the batch**. The lesson's `ssd_loss` **sums** over the batch, so
    the lesson's numbers are `B` times ours. `components()` returns the two parts and
    `metrics()` two Keras metrics, `loc` and `clas`, for `model.compile(metrics=...)`.

    Bad input: a wrong static shape of `y_pred` / `y_true` raises `ValueError` when the loss
    is called or traced. Bad values in `y_true` (NaN, coordinates outside [0, 1],
    `ymax <= ymin` or `xmax <= xmin`, class ids not integers in `[-1, num_classes)`) raise
    `tf.errors.InvalidArgumentError` with a message, eagerly and under `tf.function`. XLA
    (`jit_compile=True`, Keras' default on GPU) cannot run assertions, so the checks are left
    out of XLA-compiled steps: check a data set once without XLA (e.g. call the loss eagerly
    on a few batches, or `model.compile(..., jit_compile=False)` for a first epoch).
    """

    def __init__(
        self,
        anchors=None,
        num_classes=20,
        pos_threshold=0.4,
        focal=None,
        validate=True,
        loc_weight=1.0,
        reduction="sum_over_batch_size",
        name="ssd_loss",
        dtype=None,
    ):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.anchors = AnchorConfig.coerce(anchors)
        # is_whole, not int(x) == x: that took True as 1 class, and raised int()'s own error for NaN.
        if not (is_whole(num_classes) and num_classes >= 1):
            raise ValueError(f"SSDLoss: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.pos_threshold = float(pos_threshold)
        if not 0.0 <= self.pos_threshold <= 1.0:  # NaN too: no anchor would ever be positive
            raise ValueError(f"SSDLoss: pos_threshold must be in [0, 1] (the lesson: 0.4), got {pos_threshold!r}")
        self.focal = parse_focal(focal)
        self.validate = bool(validate)
        self.last_components = None  # set by call(); see SSDDetector.compute_loss
        if not (isinstance(loc_weight, numbers.Real) and not isinstance(loc_weight, bool)
                and math.isfinite(loc_weight) and loc_weight > 0):
            raise ValueError(f"SSDLoss: loc_weight must be a finite number > 0, got {loc_weight!r}")
        self.loc_weight = float(loc_weight)

    # -- the loss ------------------------------------------------------------------------

    def components(self, y_true, y_pred):
        """Per-image location and classification losses: `{"loc": [B], "clas": [B]}`."""
        y_true = tf.convert_to_tensor(y_true)
        y_pred = tf.convert_to_tensor(y_pred)
        y_true = tf.cast(y_true, tf.float32)
        y_pred = tf.cast(y_pred, tf.float32)  # mixed precision: loss in float32
        self._check_shapes(y_true, y_pred)
        if self.validate and in_xla_context() is not True:  # XLA drops Assert ops
            y_true = self._check_values(y_true)
            if None in (y_true.shape[0], y_pred.shape[0]):  # batch sizes known only when it runs
                with tf.control_dependencies([tf.debugging.assert_equal(
                        tf.shape(y_true)[0], tf.shape(y_pred)[0],
                        message="SSDLoss: y_true and y_pred hold different numbers of images")]):
                    y_true = tf.identity(y_true)
        if not self.fuse_with_xla:
            return self._parts(y_true, y_pred)
        fused = self.__dict__.get("_xla_parts")
        if fused is None:
            fused = self.__dict__["_xla_parts"] = tf.function(self._parts, jit_compile=True, reduce_retracing=True)
        return fused(y_true, y_pred)

    #: Opt-in: run the matching and both loss terms as one nested XLA cluster
    #: (`tf.function(jit_compile=True)` inside whatever runs the loss). Measured for issue 13
    #: (bench/README.md): once compiled, ~1.8x faster than TF's op-by-op graph at batch 64 on
    #: CPU, but the compile (forward + backward, once per input shape) took 286 s on the
    #: shared 2-core machine at load 16, which a short CPU run never wins back; so off by
    #: default. Set to True on the class or an instance.
    fuse_with_xla = False

    def _parts(self, y_true, y_pred):
        """The loss's two parts from checked float32 inputs (see `components`)."""
        c = self.num_classes
        match = match_anchors(y_true, self.anchors, c, self.pos_threshold)
        positive = match["positive"]

        # One split instead of slices: its gradient is a concat, much cheaper than the
        # zero-fill-and-scatter gradients of three strided slices.
        box_acts, logits, _ = tf.split(y_pred, [4, c, 1], axis=-1)  # background dropped

        # loc: mean |decoded - matched| over positive anchors x 4 coords (lesson: .mean()).
        decoded = activations_to_boxes(box_acts, self.anchors)
        l1 = tf.reduce_sum(tf.abs(decoded - match["boxes"]), axis=-1)  # [B, A]
        l1 = tf.where(positive, l1, 0.0)
        num_pos = tf.reduce_sum(tf.cast(positive, tf.float32), axis=-1)
        loc = tf.math.divide_no_nan(tf.reduce_sum(l1, axis=-1), 4.0 * num_pos)

        # clas: BCE (or focal) on the C object columns; background (id C) one-hots to all zeros.
        clas = classification_loss(logits, match["classes"], c, self.focal)
        return {"loc": loc, "clas": clas}

    def call(self, y_true, y_pred):
        parts = self.components(y_true, y_pred)
        # Kept for the caller of this trace: `SSDDetector` logs `loc` and `clas` from them
        # instead of matching the anchors a second (and third) time.
        self.last_components = parts
        return self.loc_weight * parts["loc"] + parts["clas"]

    def metrics(self):
        """Two Keras metrics, `loc` and `clas`: the batch means of the two loss parts.

        `model.compile(loss=loss, metrics=loss.metrics())` makes `fit` log them next to
        `loss`, as the lesson prints `loc` and `clas`. Each recomputes the matching; an
        `SSDDetector` logs the same two numbers without that cost.
        """
        cfg = dict(self._loss_config(), validate=False)  # the loss already checks y_true
        return [SSDLossPart("loc", **cfg), SSDLossPart("clas", **cfg)]

    # -- checks --------------------------------------------------------------------------

    def _check_shapes(self, y_true, y_pred):
        a, c = self.anchors.num_anchors, self.num_classes
        if y_pred.shape.rank is not None:
            if y_pred.shape.rank != 3:
                raise ValueError(
                    f"SSDLoss: y_pred must be [batch, num_anchors, 4 + num_classes + 1], got shape {y_pred.shape}"
                )
            if y_pred.shape[-1] is not None and y_pred.shape[-1] != 4 + c + 1:
                raise ValueError(
                    f"SSDLoss: y_pred's last dimension must be 4 + num_classes + 1 = {4 + c + 1} "
                    f"(box activations, {c} class logits, background), got shape {y_pred.shape}"
                )
            if y_pred.shape[1] is not None and y_pred.shape[1] != a:
                raise ValueError(
                    f"SSDLoss: y_pred has {y_pred.shape[1]} anchors but anchors.num_anchors is {a} "
                    f"({self.anchors!r}); the head and the loss need the same AnchorConfig"
                )
        if y_true.shape.rank == 3 and y_pred.shape.rank == 3 and None not in (y_true.shape[0], y_pred.shape[0]) \
                and y_true.shape[0] != y_pred.shape[0]:  # one image's targets would broadcast over all
            raise ValueError(f"SSDLoss: y_true has {y_true.shape[0]} images but y_pred {y_pred.shape[0]}")
        if y_true.shape.rank is not None and (
            y_true.shape.rank != 3 or (y_true.shape[-1] is not None and y_true.shape[-1] != 5)
        ):
            raise ValueError(
                "SSDLoss: y_true must be [batch, max_boxes, 5] rows (ymin, xmin, ymax, xmax, "
                f"class_id), class_id -1 for padding; got shape {y_true.shape}"
            )

    def _check_values(self, y_true):
        c = self.num_classes

        def fail():
            # Built only on the failing branch: the happy path pays for the few ops below,
            # not for the boolean_masks that make the messages.
            boxes, cls = y_true[..., :4], y_true[..., 4]
            valid = cls >= 0  # padding rows may hold anything; only real objects are checked
            finite = tf.reduce_all(tf.math.is_finite(boxes), axis=-1)
            inside = tf.reduce_all((boxes >= 0.0) & (boxes <= 1.0), axis=-1)
            ordered = (boxes[..., 2] > boxes[..., 0]) & (boxes[..., 3] > boxes[..., 1])
            cls_ok = tf.equal(cls, tf.round(cls)) & (cls >= -1) & (cls < c)
            checks = [
                tf.debugging.Assert(
                    tf.reduce_all(cls_ok),
                    [f"SSDLoss: y_true class ids must be integers in [0, {c}) or -1 for padding; "
                     "got", tf.boolean_mask(cls, ~cls_ok)],
                ),
                tf.debugging.Assert(
                    tf.reduce_all(finite | ~valid),
                    ["SSDLoss: y_true has NaN or infinite box coordinates in rows",
                     tf.where(~finite & valid)],
                ),
                tf.debugging.Assert(
                    tf.reduce_all(inside | ~valid | ~finite),
                    ["SSDLoss: y_true box coordinates outside [0, 1] (relative yxyx boxes expected); "
                     "boxes", tf.boolean_mask(boxes, ~inside & valid)],
                ),
                tf.debugging.Assert(
                    tf.reduce_all(ordered | ~valid | ~finite),
                    ["SSDLoss: y_true has boxes with ymax <= ymin or xmax <= xmin "
                     "(yxyx order (ymin, xmin, ymax, xmax) expected); boxes",
                     tf.boolean_mask(boxes, ~ordered & valid)],
                ),
            ]
            with tf.control_dependencies(checks):
                return tf.constant(False)

        # The happy path in as few ops as possible (each op costs more than its work here):
        # 0 <= min corner < max corner <= 1 holds for no NaN or infinite coordinate, so it
        # checks finiteness, range and order at once; a class id is fine where it is an
        # integer in [-1, C), and a row is fine where its class is, and its box or it is padding.
        lo, hi, cls = tf.split(y_true, [2, 2, 1], axis=-1)
        box_ok = tf.reduce_all((lo >= 0.0) & (hi > lo) & (hi <= 1.0), axis=-1, keepdims=True)
        cls_ok = tf.equal(cls, tf.round(cls)) & (cls >= -1) & (cls < c)
        all_ok = tf.reduce_all(cls_ok & (box_ok | (cls < 0)))
        ok = tf.cond(all_ok, lambda: tf.constant(True), fail)
        with tf.control_dependencies([ok]):
            return tf.identity(y_true)

    # -- serialisation -------------------------------------------------------------------

    def _loss_config(self):
        return {
            "anchors": self.anchors.get_config(),
            "num_classes": self.num_classes,
            "pos_threshold": self.pos_threshold,
            "focal": list(self.focal) if self.focal is not None else None,
            "validate": self.validate,
            "loc_weight": self.loc_weight,
        }

    def get_config(self):
        config = super().get_config()
        config.update(self._loss_config())
        return config


@keras.saving.register_keras_serializable(package="ssd_keras")
class SSDLossPart(keras.metrics.Mean):
    """Running mean of one part (`"loc"` or `"clas"`) of `SSDLoss`; see `SSDLoss.metrics()`.

    The remaining arguments are those of `SSDLoss`; the metric is named after the part.
    """

    def __init__(self, part="loc", anchors=None, num_classes=20, pos_threshold=0.4,
                 focal=None, validate=False, loc_weight=1.0, name=None, dtype=None):
        if part not in ("loc", "clas"):
            raise ValueError(f"SSDLossPart: part must be 'loc' or 'clas', got {part!r}")
        super().__init__(name=name or part, dtype=dtype)
        self.part = part
        # The loss itself validates y_true; the metric does not repeat the checks.
        # The parts are logged unweighted (the lesson's `loc` and `clas`); loc_weight is kept
        # only so that the config round-trips.
        self._ssd_loss = SSDLoss(anchors, num_classes, pos_threshold, focal, validate=validate,
                                 loc_weight=loc_weight)

    def update_state(self, y_true, y_pred, sample_weight=None):
        values = self._ssd_loss.components(y_true, y_pred)[self.part]
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self):
        config = {"name": self.name, "dtype": self.dtype, "part": self.part}
        config.update(self._ssd_loss._loss_config())
        return config
