"""Decoding: `y_pred` → boxes, scores and classes after per-class non-maximum suppression.

The lesson decodes one image at a time with a hand-written `nms` loop. Here the whole batch
goes through `tf.image.combined_non_max_suppression`, which is per-class greedy NMS, in the
graph (usable in `tf.function`, a SavedModel or TFLite-free serving) and on GPU.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import activations_to_boxes

DEFAULT_SCORE_THRESHOLD = 0.05
DEFAULT_IOU_THRESHOLD = 0.45


def decode_detections(
    y_pred,
    anchors,
    score_threshold=DEFAULT_SCORE_THRESHOLD,
    iou_threshold=DEFAULT_IOU_THRESHOLD,
    max_detections=100,
    max_per_class=None,
):
    """Model output → detections, per-class NMS over a batch.

    Steps: the lesson's `actn_to_bb` on `y_pred[..., :4]`; sigmoid of the class logits
    without the background column (the lesson trains them with BCE, so they are independent
    per-class probabilities); boxes clipped to `[0, 1]` (so the overlaps NMS uses and the
    boxes it returns are the parts inside the image); then greedy NMS per class: a box is
    dropped when its IoU with a higher-scoring kept box of the same class is above
    `iou_threshold`; scores at or below `score_threshold` are dropped first.

    Defaults: `score_threshold=0.05` keeps low-confidence detections because VOC mAP rewards
    recall (use ~0.25–0.5 for pictures); `iou_threshold=0.45` is the usual SSD value.

    Args:
        y_pred: `[batch, A, 4 + C + 1]` model output (background last).
        anchors: the `AnchorConfig` the model was built with (`A == anchors.num_anchors`).
        max_detections: detections kept per image (`N`, outputs are padded to it).
        max_per_class: detections kept per class and image before the overall cut
            (default `max_detections`).
    Returns:
        dict with `boxes` `[batch, N, 4]` float32 relative yxyx (zeros for padding),
        `scores` `[batch, N]` (0 for padding), `classes` `[batch, N]` int32 (`-1` for padding),
        `num_detections` `[batch]` int32. Rows are sorted by descending score.
    """
    anchors = AnchorConfig.coerce(anchors)
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank != 3:
        raise ValueError(f"decode_detections: y_pred must be [batch, A, 4 + C + 1], got shape {y_pred.shape}")
    num_anchors, channels = y_pred.shape[1], y_pred.shape[2]
    if num_anchors is not None and num_anchors != anchors.num_anchors:
        raise ValueError(
            f"decode_detections: y_pred has {num_anchors} anchors but anchors has "
            f"{anchors.num_anchors} ({anchors!r})"
        )
    if channels is not None and channels < 6:
        raise ValueError(f"decode_detections: y_pred needs 4 + C + 1 >= 6 channels, got {channels}")
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"decode_detections: iou_threshold must be in [0, 1], got {iou_threshold}")
    max_detections = int(max_detections)
    max_per_class = max_detections if max_per_class is None else int(max_per_class)
    if max_detections < 1 or max_per_class < 1:
        raise ValueError("decode_detections: max_detections and max_per_class must be >= 1")

    y_pred = tf.cast(y_pred, tf.float32)
    boxes = tf.clip_by_value(activations_to_boxes(y_pred[..., :4], anchors), 0.0, 1.0)
    scores = tf.sigmoid(y_pred[..., 4:-1])
    # q = 1: the same box for every class (combined NMS also takes per-class boxes).
    nms = tf.image.combined_non_max_suppression(
        boxes[:, :, None, :],
        scores,
        max_output_size_per_class=max_per_class,
        max_total_size=max_detections,
        iou_threshold=iou_threshold,
        score_threshold=score_threshold,
        pad_per_class=False,
        clip_boxes=False,  # already clipped above; True would also clip, but after NMS
    )
    num = tf.cast(nms.valid_detections, tf.int32)
    valid = tf.range(max_detections)[None, :] < num[:, None]
    classes = tf.where(valid, tf.cast(nms.nmsed_classes, tf.int32), -1)
    return {
        "boxes": nms.nmsed_boxes,
        "scores": nms.nmsed_scores,
        "classes": classes,
        "num_detections": num,
    }


@keras.saving.register_keras_serializable(package="ssd_keras")
class DecodeDetections(keras.layers.Layer):
    """`decode_detections` as a Keras layer (TensorFlow backend), for export models.

    Input `y_pred` `[batch, A, 4 + C + 1]`; output the dict of `decode_detections`. Runs in
    float32 whatever the global dtype policy (NMS in float16 would merge boxes wrongly).
    """

    def __init__(
        self,
        anchors=None,
        score_threshold=DEFAULT_SCORE_THRESHOLD,
        iou_threshold=DEFAULT_IOU_THRESHOLD,
        max_detections=100,
        max_per_class=None,
        **kwargs,
    ):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.anchors = AnchorConfig.coerce(anchors)
        self.score_threshold = float(score_threshold)
        self.iou_threshold = float(iou_threshold)
        self.max_detections = int(max_detections)
        self.max_per_class = None if max_per_class is None else int(max_per_class)

    def call(self, y_pred):
        return decode_detections(
            y_pred,
            self.anchors,
            self.score_threshold,
            self.iou_threshold,
            self.max_detections,
            self.max_per_class,
        )

    def compute_output_spec(self, y_pred):
        batch, n = y_pred.shape[0], self.max_detections
        return {
            "boxes": keras.KerasTensor((batch, n, 4), "float32"),
            "scores": keras.KerasTensor((batch, n), "float32"),
            "classes": keras.KerasTensor((batch, n), "int32"),
            "num_detections": keras.KerasTensor((batch,), "int32"),
        }

    def get_config(self):
        return {
            **super().get_config(),
            "anchors": self.anchors.get_config(),
            "score_threshold": self.score_threshold,
            "iou_threshold": self.iou_threshold,
            "max_detections": self.max_detections,
            "max_per_class": self.max_per_class,
        }
