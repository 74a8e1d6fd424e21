"""`SSDDetector`: the task model, keras-hub style. It owns its parts:

* the body and the lesson's head (`build_ssd`: images → `y_pred [B, A, 4 + C + 1]`),
* the `AnchorConfig` (stored once, in the detector's config),
* the class names,
* the loss settings (`compile()` with no loss uses `SSDLoss` for the detector's own anchors),
* the decoder settings (`predict` returns decoded, NMS-filtered detections).

    detector = SSDDetector.from_preset("demo_tiny64")
    detector.compile(optimizer="adam")          # SSDLoss; logs loss, loc, clas
    detector.fit(train_ds, epochs=4)            # (images, y_true) or keras-hub's label dict
    detections = detector.predict(images)       # {"boxes", "scores", "classes", "num_detections"}
    y_pred = detector(images)                   # the raw output (also `detector.raw`)
    detector.save("model.keras")                # the one file evaluate / predict / export need

Like keras-hub's `RetinaNetObjectDetector` it is a functional model with a config of its own
(`get_config` holds the constructor's arguments, not the layer graph), so it saves and loads
with plain `keras.saving`.
"""

from __future__ import annotations

import numbers

import keras
import numpy as np
import tensorflow as tf

from ssd_keras._checks import is_whole
from ssd_keras.anchors import AnchorConfig
from ssd_keras.decode import EVAL_SCORE_THRESHOLD, IOU_THRESHOLD, MAX_DETECTIONS
from ssd_keras.inference import detect
from ssd_keras.losses import SSDLoss, parse_focal
from ssd_keras.model import build_ssd
from ssd_keras.presets import get_preset

__all__ = ["SSDDetector", "BOX_FORMATS"]

#: The formats `keras.utils.bounding_boxes.convert_format` reads (`rel_` = relative to the image).
BOX_FORMATS = ("xyxy", "yxyx", "xywh", "center_xywh", "center_yxhw",
               "rel_xyxy", "rel_yxyx", "rel_xywh", "rel_center_xywh", "rel_center_yxhw")


@keras.saving.register_keras_serializable(package="ssd_keras")
class SSDDetector(keras.Model):
    """The lesson's SSD as one Keras model: images → `y_pred` for training, → detections for `predict`.

    Args:
        class_names: names of the classes `0 .. C-1` (background excluded), or an int `C`.
        anchors: the `AnchorConfig` (default: the lesson's 4×4, 2×2, 1×1 grids, k = 9).
        backbone, image_size, head, head_filters, dropout, bias: the architecture, as for
            `build_ssd` (the backbone is a name or a `keras.Model`).
        backbone_weights: body weights at construction (None, "imagenet" or a file), as
            `build_ssd`'s `weights`; not part of the config (a saved detector has its weights).
        pos_threshold, focal, loc_weight: the default loss (`default_loss()`, see `SSDLoss`).
        score_threshold, iou_threshold, max_detections: the decoder used by `predict`,
            `ssd_keras.evaluation.evaluate_model` and the exports (see `decode_detections`).
        bounding_box_format: the box format of keras-hub style labels given to `fit` /
            `evaluate` (`{"boxes": [B, M, 4], "classes": [B, M]}`, classes -1 for padding),
            any `keras.utils.bounding_boxes` format; `y_true` arrays are always relative yxyx.
        metadata: JSON-serialisable facts to keep with the model (the data it was trained on,
            its held-out split, the CLI settings).
    """

    def __init__(
        self,
        class_names,
        anchors=None,
        backbone="resnet34",
        image_size=224,
        head=None,
        head_filters=256,
        dropout=None,
        bias=None,
        backbone_weights=None,
        pos_threshold=0.4,
        focal=None,
        loc_weight=1.0,
        score_threshold=EVAL_SCORE_THRESHOLD,
        iou_threshold=IOU_THRESHOLD,
        max_detections=MAX_DETECTIONS,
        bounding_box_format="rel_yxyx",
        metadata=None,
        name="ssd_detector",
        **kwargs,
    ):
        if isinstance(class_names, numbers.Integral) and not isinstance(class_names, (bool, np.bool_)):
            class_names = [f"class_{i}" for i in range(int(class_names))]
        elif (isinstance(class_names, (str, bytes, bool, np.bool_, numbers.Number))
              or not hasattr(class_names, "__iter__")):
            # A float count (3.0) failed as "not iterable"; a string became one class per letter.
            raise TypeError(f"SSDDetector: class_names must be a list of class names (e.g. ['cat', 'dog']; "
                            f"one class: ['cat']) or an int number of classes, got {class_names!r} "
                            f"({type(class_names).__name__})")
        class_names = [str(c) for c in class_names]
        if not class_names:
            raise ValueError("SSDDetector: class_names must name at least one class")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"SSDDetector: class_names must be unique, got {class_names}")
        # Checked before the model is built, and before int() would cut 2.7 detections to 2.
        if not (is_whole(max_detections) and max_detections >= 1):
            raise ValueError(f"SSDDetector: max_detections must be an integer >= 1, got {max_detections!r}")
        # The decoder's ranges, checked now rather than at the first `predict`.
        for arg, value, ok, expected in (
                ("score_threshold", score_threshold, lambda v: 0.0 <= v < 1.0, "in [0, 1)"),
                ("iou_threshold", iou_threshold, lambda v: 0.0 <= v <= 1.0, "in [0, 1]")):
            if not (isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)) and ok(value)):
                raise ValueError(f"SSDDetector: {arg} must be a number {expected}, got {value!r}")
        if isinstance(backbone, dict):  # a serialised keras.Model body (from_config)
            backbone = keras.saving.deserialize_keras_object(backbone)
        anchors = AnchorConfig.coerce(anchors)
        raw = build_ssd(len(class_names), anchors, backbone=backbone, weights=backbone_weights,
                        image_size=image_size, head=head, bias=bias, dropout=dropout,
                        head_filters=head_filters)
        super().__init__(inputs=raw.inputs[0], outputs=raw.outputs[0], name=name, **kwargs)

        self.class_names = class_names
        self.anchors = anchors
        self.backbone_name = backbone if isinstance(backbone, str) else None
        self._backbone_model = None if isinstance(backbone, str) else backbone
        self.image_size = int(image_size)
        self.head_kind = head
        self.head_filters = int(head_filters)
        self.dropout = dropout
        self.bias = bias
        # Validated now (a bad setting fails at construction, not at compile).
        self.loss_settings = dict(pos_threshold=float(pos_threshold), focal=parse_focal(focal),
                                  loc_weight=float(loc_weight))
        self.default_loss()
        self.decoder_settings = dict(score_threshold=float(score_threshold),
                                     iou_threshold=float(iou_threshold),
                                     max_detections=int(max_detections))
        if bounding_box_format not in BOX_FORMATS:
            raise ValueError(f"SSDDetector: bounding_box_format must be one of {BOX_FORMATS}, "
                             f"got {bounding_box_format!r}")
        self.bounding_box_format = bounding_box_format
        self.metadata = dict(metadata or {})
        # The two parts of the loss, logged as `loc` / `clas` from the loss's own matching.
        self.loc_metric = keras.metrics.Mean(name="loc")
        self.clas_metric = keras.metrics.Mean(name="clas")
        self._ssd_loss = None

    # -- presets -------------------------------------------------------------------------

    @classmethod
    def from_preset(cls, preset, weights=None, **overrides):
        """A detector from a named configuration (`ssd_keras.presets.PRESETS`).

        `weights` are the body's (None, "imagenet" or a file, as `build_ssd`); no trained
        detector weights are published. `overrides` replace the preset's detector settings,
        e.g. `class_names=data.class_names`.
        """
        config = get_preset(preset)["detector"]
        config.update(overrides)
        config.setdefault("metadata", {})
        config["metadata"] = dict(config["metadata"], preset=preset)
        return cls(backbone_weights=weights, **config)

    # -- properties ----------------------------------------------------------------------

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def raw(self):
        """A plain functional model images → `y_pred`, sharing this detector's layers."""
        if "_raw_model" not in self.__dict__:
            # Outside Keras' attribute tracking: the same layers must not be saved twice.
            object.__setattr__(self, "_raw_model", keras.Model(self.inputs, self.outputs, name="ssd"))
        return self.__dict__["_raw_model"]

    # -- training ------------------------------------------------------------------------

    def default_loss(self):
        """`SSDLoss` for this detector's anchors, classes and loss settings."""
        return SSDLoss(self.anchors, self.num_classes, **self.loss_settings)

    def compile(self, optimizer="auto", loss="auto", metrics=None, **kwargs):
        """`keras.Model.compile` with the detector's defaults: `loss="auto"` is
        `default_loss()`, `optimizer="auto"` Adam(1e-3). With an `SSDLoss`, `fit` and
        `evaluate` also log its two parts, `loc` and `clas` (one anchor matching per step)."""
        if optimizer == "auto":
            optimizer = keras.optimizers.Adam(1e-3)
        if loss == "auto":
            loss = self.default_loss()
        self._ssd_loss = loss if isinstance(loss, SSDLoss) else None
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        # Keras skips restoring the compile state of models that override `compile`; this
        # `compile` takes the same arguments, so restore it as Keras would (saved optimizer
        # state included).
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        loss = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        parts = getattr(self._ssd_loss, "last_components", None)
        if parts is not None:
            # The components SSDLoss computed for this very loss, in this trace: no second
            # matching for the logged parts (issue: shared matching).
            self.loc_metric.update_state(parts["loc"])
            self.clas_metric.update_state(parts["clas"])
        return loss

    @property
    def metrics(self):
        metrics = super().metrics
        if self._ssd_loss is None:
            metrics = [m for m in metrics if m is not self.loc_metric and m is not self.clas_metric]
        return metrics

    def train_step(self, data):
        return super().train_step(self._with_y_true(data))

    def test_step(self, data):
        return super().test_step(self._with_y_true(data))

    def _with_y_true(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if isinstance(y, dict):
            y = self.labels_to_y_true(y, x)
        return keras.utils.pack_x_y_sample_weight(x, y, sample_weight)

    def labels_to_y_true(self, labels, images):
        """keras-hub's detection labels → `y_true [B, M, 5]` (relative yxyx + class, -1 padding).

        `labels["boxes"]` `[B, M, 4]` are in `self.bounding_box_format`, converted with
        `keras.utils.bounding_boxes.convert_format` (absolute formats use the size of
        `images`); `labels["classes"]` `[B, M]`, -1 (or any negative) marks padding rows,
        whose boxes are zeroed.
        """
        if set(labels) - {"boxes", "classes"} or not {"boxes", "classes"} <= set(labels):
            raise ValueError(
                "SSDDetector: dict labels must have exactly the keys 'boxes' [B, M, 4] and "
                f"'classes' [B, M] (keras-hub's format), got {sorted(labels)}")
        boxes = tf.cast(labels["boxes"], tf.float32)
        classes = tf.cast(labels["classes"], tf.float32)
        if boxes.shape.rank != 3 or classes.shape.rank != 2:
            raise ValueError(f"SSDDetector: labels need boxes [B, M, 4] and classes [B, M], got "
                             f"{boxes.shape} and {classes.shape}")
        if self.bounding_box_format != "rel_yxyx":
            shape = tf.shape(images)
            boxes = keras.utils.bounding_boxes.convert_format(
                boxes, source=self.bounding_box_format, target="rel_yxyx",
                height=tf.cast(shape[1], tf.float32), width=tf.cast(shape[2], tf.float32))
        valid = classes >= 0
        boxes = tf.where(valid[..., None], boxes, 0.0)
        classes = tf.where(valid, classes, -1.0)
        return tf.concat([boxes, classes[..., None]], axis=-1)

    # -- inference -----------------------------------------------------------------------

    def detection_settings(self):
        """The keyword arguments of `ssd_keras.inference.detect` for this detector."""
        return dict(anchors=self.anchors, image_size=self.image_size, **self.decoder_settings)

    def detect(self, images, nms="combined", **overrides):
        """Images (any size, uint8 or float 0–255) → detections: `ssd_keras.inference.detect`
        with this detector's anchors, size and decoder settings (`overrides` replace them)."""
        settings = dict(self.detection_settings(), **overrides)
        return detect(self, images, nms=nms, **settings)

    def predict_step(self, data):
        x, _, _ = keras.utils.unpack_x_y_sample_weight(data)
        return self.detect(x)

    # -- serialisation -------------------------------------------------------------------

    def save(self, filepath, *args, **kwargs):
        """`keras.Model.save`, refusing the legacy `.h5` format (Keras writes it with a warning,
        and `ssd_keras.load_model` reads only the `.keras` files that hold the anchors and class
        names). Weights alone: `save_weights("x.weights.h5")`."""
        if str(filepath).endswith((".h5", ".hdf5")):
            raise ValueError(f"SSDDetector.save: {filepath} is the legacy H5 format, which "
                             f"ssd_keras.load_model does not read; save as .keras")
        return super().save(filepath, *args, **kwargs)

    def get_config(self):
        backbone = self.backbone_name
        if backbone is None:
            backbone = keras.saving.serialize_keras_object(self._backbone_model)
        return {
            "name": self.name,
            "trainable": self.trainable,
            "class_names": list(self.class_names),
            "anchors": self.anchors.get_config(),
            "backbone": backbone,
            "image_size": self.image_size,
            "head": self.head_kind,
            "head_filters": self.head_filters,
            "dropout": self.dropout,
            "bias": self.bias,
            "pos_threshold": self.loss_settings["pos_threshold"],
            "focal": None if self.loss_settings["focal"] is None else list(self.loss_settings["focal"]),
            "loc_weight": self.loss_settings["loc_weight"],
            **self.decoder_settings,
            "bounding_box_format": self.bounding_box_format,
            "metadata": dict(self.metadata),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
