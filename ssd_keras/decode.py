"""Decoding: `y_pred` → boxes, scores and classes after per-class non-maximum suppression.

The lesson decodes one image at a time with a hand-written `nms` loop. Here the whole batch
goes through `tf.image.combined_non_max_suppression`, which is per-class greedy NMS, in the
graph (usable in `tf.function`, a SavedModel, and on a GPU). `decode_detections_builtin_nms`
gives the same results with the single-class NMS op that TFLite has as a builtin.

The thresholds every part of ssd_keras defaults to are named here, once.
"""

from __future__ import annotations

import tensorflow as tf

from ssd_keras._checks import is_whole
from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import activations_to_boxes

#: Scores kept for evaluation: VOC mAP integrates precision over the low-confidence tail, so
#: the decoder, `evaluate`, the `val_map` callback and the exports keep boxes down to 0.01.
EVAL_SCORE_THRESHOLD = 0.01
#: Scores kept for what a person looks at: pictures and `predict`'s files.
DISPLAY_SCORE_THRESHOLD = 0.3
#: NMS overlap: the usual SSD value.
IOU_THRESHOLD = 0.45
#: Detections kept per image (outputs are padded to it).
MAX_DETECTIONS = 100


def _check_y_pred(y_pred, anchors, where):
    y_pred = tf.convert_to_tensor(y_pred)
    if y_pred.shape.rank != 3:
        raise ValueError(f"{where}: y_pred must be [batch, A, 4 + C + 1], got shape {y_pred.shape}")
    num_anchors, channels = y_pred.shape[1], y_pred.shape[2]
    if num_anchors is not None and num_anchors != anchors.num_anchors:
        raise ValueError(
            f"{where}: y_pred has {num_anchors} anchors but anchors has "
            f"{anchors.num_anchors} ({anchors!r})"
        )
    if channels is not None and channels < 6:
        raise ValueError(f"{where}: y_pred needs 4 + C + 1 >= 6 channels, got {channels}")
    return tf.cast(y_pred, tf.float32)


def boxes_and_scores(y_pred, anchors):
    """The decoding prologue: `y_pred [..., A, 4 + C + 1]` → boxes `[..., A, 4]` (relative yxyx,
    clipped to [0, 1]) and per-class scores `[..., A, C]` (sigmoid, background column dropped).

    Sigmoid, not softmax: the lesson trains the class logits with BCE, so they are independent
    per-class probabilities. Boxes are clipped so that the overlaps NMS uses, and the boxes it
    returns, are the parts inside the image.
    """
    boxes = tf.clip_by_value(activations_to_boxes(y_pred[..., :4], anchors), 0.0, 1.0)
    return boxes, tf.sigmoid(y_pred[..., 4:-1])


def decode_detections(
    y_pred,
    anchors,
    score_threshold=EVAL_SCORE_THRESHOLD,
    iou_threshold=IOU_THRESHOLD,
    max_detections=MAX_DETECTIONS,
    max_per_class=None,
):
    """Model output → detections, per-class NMS over a batch.

    Steps: `boxes_and_scores` (the lesson's `actn_to_bb`, sigmoid scores without the
    background column, boxes clipped to [0, 1]); then greedy NMS per class: a box is dropped
    when its IoU with a higher-scoring kept box of the same class is above `iou_threshold`;
    scores at or below `score_threshold` are dropped first.

    Defaults: `EVAL_SCORE_THRESHOLD` (0.01) keeps low-confidence detections because VOC mAP
    rewards recall (`DISPLAY_SCORE_THRESHOLD`, 0.3, for pictures); `IOU_THRESHOLD` (0.45).

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
    y_pred = _check_y_pred(y_pred, anchors, "decode_detections")
    max_detections, max_per_class = _check_settings(iou_threshold, max_detections, max_per_class, score_threshold)
    boxes, scores = boxes_and_scores(y_pred, anchors)
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


def _check_settings(iou_threshold, max_detections, max_per_class=None, score_threshold=0.0):
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError(f"decode: iou_threshold must be in [0, 1], got {iou_threshold}")
    if not 0.0 <= score_threshold < 1.0:  # scores are sigmoids; NaN fails too
        raise ValueError(f"decode: score_threshold must be in [0, 1), got {score_threshold}")
    if max_per_class is None:
        max_per_class = max_detections
    # Checked before int(): max_detections=2.7 was cut to 2, True taken as 1, without a word.
    for arg, value in (("max_detections", max_detections), ("max_per_class", max_per_class)):
        if not (is_whole(value) and value >= 1):
            raise ValueError(f"decode: {arg} must be an integer >= 1, got {value!r}")
    return int(max_detections), int(max_per_class)


def decode_detections_builtin_nms(y_pred, anchors, score_threshold=EVAL_SCORE_THRESHOLD,
                                  iou_threshold=IOU_THRESHOLD, max_detections=MAX_DETECTIONS,
                                  max_per_class=None):
    """`decode_detections` for a batch of one image, with ops TFLite has as builtins.

    Why not `decode_detections`: `combined_non_max_suppression` runs in TFLite only as a Flex
    (SELECT_TF_OPS) op, and the Python `tf.lite.Interpreter` of TF 2.21 has no Flex delegate
    linked in. Single-class `NonMaxSuppressionV4` *is* a builtin, so this runs it once per class
    (a static loop: C is known) and keeps the best `max_detections` overall: the same per-class
    greedy NMS, score cut (`score > score_threshold`) and padding (`classes = -1`).

    Args:
        y_pred: `[1, A, 4 + C + 1]`.
    Returns:
        the `decode_detections` dict with batch 1 (boxes relative yxyx).
    """
    anchors = AnchorConfig.coerce(anchors)
    y_pred = _check_y_pred(y_pred, anchors, "decode_detections_builtin_nms")
    if y_pred.shape[0] is not None and y_pred.shape[0] != 1:  # it decodes y_pred[0] only
        raise ValueError(f"decode_detections_builtin_nms: one image per call (TFLite's builtin NMS), "
                         f"got a batch of {y_pred.shape[0]}; use decode_detections for batches")
    max_detections, max_per_class = _check_settings(iou_threshold, max_detections, max_per_class, score_threshold)
    boxes, scores = boxes_and_scores(y_pred[0], anchors)
    num_classes = y_pred.shape[-1] - 5
    cand_boxes, cand_scores, cand_classes = [], [], []
    for c in range(num_classes):
        idx, valid = tf.raw_ops.NonMaxSuppressionV4(
            boxes=boxes, scores=scores[:, c], max_output_size=max_per_class,
            iou_threshold=iou_threshold, score_threshold=score_threshold,
            pad_to_max_output_size=True)
        keep = tf.range(max_per_class) < valid
        cand_boxes.append(tf.gather(boxes, idx))
        cand_scores.append(tf.where(keep, tf.gather(scores[:, c], idx), -1.0))
        cand_classes.append(tf.fill([max_per_class], c))
    # A block of padding candidates, so that top_k has max_detections rows even when
    # C * max_per_class is smaller.
    cand_boxes.append(tf.zeros([max_detections, 4]))
    cand_scores.append(tf.fill([max_detections], -1.0))
    cand_classes.append(tf.fill([max_detections], -1))
    top_scores, top = tf.math.top_k(tf.concat(cand_scores, 0), k=max_detections)
    valid = top_scores > -1.0
    num = tf.reduce_sum(tf.cast(valid, tf.int32))
    return {
        "boxes": tf.where(valid[:, None], tf.gather(tf.concat(cand_boxes, 0), top), 0.0)[None],
        "scores": tf.where(valid, top_scores, 0.0)[None],
        "classes": tf.where(valid, tf.gather(tf.concat(cand_classes, 0), top), -1)[None],
        "num_detections": num[None],
    }


#: The two NMS implementations, by name (`nms=` of `ssd_keras.inference.detect`).
DECODERS = {"combined": decode_detections, "builtin": decode_detections_builtin_nms}
