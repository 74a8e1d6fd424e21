"""Matching anchors to ground-truth objects: the lesson's `map_to_ground_truth`, batched.

The lesson matches one image at a time in a Python loop. Here the same rule runs on the
whole batch at once in a handful of TF ops (no loop over images or objects), so it works
under `tf.function` and `jit_compile=True`:

1. each anchor takes the object it overlaps most (`overlaps.max(0)`; ties → first object);
2. each object's best anchor (`overlaps.max(1)`; ties → first anchor) is forced to that
   object with overlap 1.99, so every object gets a positive anchor, except that when two
   objects share a best anchor the later object wins it (the lesson's `for` loop order).

`tf.argmax` does not promise which index it returns on ties, and a scatter with duplicate
indices has no defined order, so both rules are written out: "first index of the max" and
"max over object index, per forced anchor" (`unsorted_segment_max`, order-independent).

Two forms of the rule, same results (tested against each other): under XLA, which needs static
shapes, `_map` works on the padded `[B, M, A]` IoUs; elsewhere `_map_objects` works on the
`[N, A]` IoUs of the batch's N real objects only, which is several times less work where
padding dominates (VOC pads to 42 rows for ~2.5 objects per image).
"""

from __future__ import annotations

import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import jaccard

#: the overlap the lesson gives an object's best anchor, so it is always positive.
FORCED_OVERLAP = 1.99


def in_xla_context():
    """True while tracing for XLA (`jit_compile=True`), False when not, None when unknown.

    XLA needs static shapes, so `match_anchors` matches the object list only on False; and XLA
    drops Assert ops, so `SSDLoss` skips its checks only on True (saving their cost and TF's
    "Ignoring Assert operator" warnings). Uses a private TF helper; should it move, None
    keeps both on their safe side: the padded form, checks built.
    """
    try:
        from tensorflow.python.framework import ops
        from tensorflow.python.ops import control_flow_util

        return bool(control_flow_util.GraphOrParentsInXlaContext(ops.get_default_graph()))
    except Exception:  # noqa: BLE001 - private API; see above
        return None


def _first_argmax(x, axis):
    """Index of the first maximum along `axis` (int32), with the max itself."""
    x_max = tf.reduce_max(x, axis=axis, keepdims=True)
    n = tf.shape(x)[axis]
    shape = [1] * len(x.shape)
    shape[axis] = -1
    idx = tf.reshape(tf.range(n), shape)
    first = tf.reduce_min(tf.where(tf.equal(x, x_max), idx, n), axis=axis)
    return tf.squeeze(x_max, axis), first


def _map(overlaps, valid):
    """Core rule on `[B, M, A]` overlaps with a `[B, M]` validity mask."""
    b, m, a = tf.unstack(tf.shape(overlaps))
    # Padding objects never win an anchor (IoU is >= 0, they get -1).
    masked = tf.where(valid[..., None], overlaps, -1.0)
    gt_overlap, gt_idx = _first_argmax(masked, axis=1)  # [B, A]
    _, prior_idx = _first_argmax(masked, axis=2)  # [B, M]
    # Object j is forced onto anchor prior_idx[j]; of several, the largest j wins: a max
    # over object index per anchor (order-independent, unlike a scatter with duplicates).
    # Padding objects go to an extra segment that is dropped.
    segment = tf.where(valid, prior_idx + a * tf.range(b)[:, None], b * a)
    objects = tf.broadcast_to(tf.range(m), [b, m])
    forced_idx = tf.math.unsorted_segment_max(objects, segment, b * a + 1)[:-1]
    forced_idx = tf.reshape(forced_idx, [b, a])  # empty segments hold INT32_MIN
    forced = forced_idx >= 0
    gt_idx = tf.where(forced, forced_idx, gt_idx)
    gt_overlap = tf.where(forced, tf.constant(FORCED_OVERLAP, overlaps.dtype), gt_overlap)
    # Images with no objects: overlap 0 everywhere (the -1 was only a mask), index 0.
    gt_overlap = tf.maximum(gt_overlap, 0.0)
    gt_idx = tf.where(tf.reduce_any(valid, axis=1, keepdims=True), gt_idx, 0)
    return gt_overlap, gt_idx


def map_to_ground_truth(overlaps):
    """The lesson's `map_to_ground_truth` for one image.

    Args:
        overlaps: `[num_objects, A]` IoUs of the image's objects with the anchors (e.g.
            `jaccard(gt_boxes_yxyx, anchors.corners)`); `num_objects >= 1`.
    Returns:
        `(gt_overlap [A] float32, gt_idx [A] int32)`: each anchor's best overlap (1.99 for an
        object's forced best anchor) and the index of the object it is matched to.
    """
    overlaps = tf.convert_to_tensor(overlaps, tf.float32)
    if overlaps.shape.rank != 2:
        raise ValueError(
            f"map_to_ground_truth: overlaps must be [num_objects, num_anchors], got shape {overlaps.shape}"
        )
    if overlaps.shape[0] == 0:
        raise ValueError(
            "map_to_ground_truth: no objects (overlaps has 0 rows); use match_anchors for "
            "padded batches, where images without objects are all background"
        )
    gt_overlap, gt_idx = _map(overlaps[None], tf.ones([1, tf.shape(overlaps)[0]], tf.bool))
    return gt_overlap[0], gt_idx[0]


def _map_objects(overlaps, image, num_images):
    """The rule of `_map` on the real objects only, without padding rows.

    Args:
        overlaps: `[N, A]` IoUs of the batch's N objects, listed image by image and, within an
            image, in row order (as `tf.where` lists a `[B, M]` mask).
        image: `[N]` int32 image index of each object.
        num_images: B.
    Returns:
        `(gt_overlap [B, A], obj [B, A] int32)`: `obj` indexes the N objects; anchors of images
        without objects get overlap 0 and `obj = N` (one past the end, for a default row).

    A batch pads every image to its largest object count (VOC 2007: 42 rows for ~2.5 objects
    per image), and the padded rule pays for every row in every image; here the IoU and all
    work over it are `[N, A]`. Per image, the lesson's ties hold as in `_map`: the first
    object (smallest N index) takes a contested anchor, the last one a shared best anchor;
    segment min / max have no order to depend on. Dynamic shapes: not for XLA. On a GPU
    without XLA, `tf.where` (in `_match_objects`) waits for the mask on the host once per
    step; that path is untested on a GPU (none here).
    """
    n, a = tf.shape(overlaps)[0], tf.shape(overlaps)[1]
    _, prior_idx = _first_argmax(overlaps, axis=1)  # [N]: each object's best anchor
    # Each anchor's best object in its image (empty images: the lowest float, then 0 below).
    gt_overlap = tf.math.unsorted_segment_max(overlaps, image, num_images)  # [B, A]
    objects = tf.range(n)
    is_max = tf.equal(overlaps, tf.gather(gt_overlap, image))
    gt_obj = tf.math.unsorted_segment_min(tf.where(is_max, objects[:, None], n), image, num_images)
    # An object whose IoUs are all NaN (unchecked input) has no best anchor (prior_idx = A):
    # it goes to an extra segment that is dropped, as padding does in `_map`.
    segment = tf.where(prior_idx < a, image * a + prior_idx, num_images * a)
    forced_obj = tf.math.unsorted_segment_max(objects, segment, num_images * a + 1)[:-1]
    forced_obj = tf.reshape(forced_obj, [num_images, a])  # empty segments hold INT32_MIN
    forced = forced_obj >= 0
    gt_obj = tf.where(forced, forced_obj, tf.minimum(gt_obj, n))  # INT32_MAX (no objects) -> N
    gt_overlap = tf.where(forced, tf.constant(FORCED_OVERLAP, overlaps.dtype), tf.maximum(gt_overlap, 0.0))
    return gt_overlap, gt_obj


def match_anchors(y_true, anchors, num_classes, pos_threshold=0.4):
    """Match a padded batch of targets to the anchors (the lesson's matching in `ssd_1_loss`).

    Args:
        y_true: `[B, M, 5]` float rows `(ymin, xmin, ymax, xmax, class_id)`, relative yxyx
            boxes; `class_id = -1` marks padding rows (anywhere; images may have none).
        anchors: an `AnchorConfig` (or its config dict).
        num_classes: number of object classes; matched background anchors get this id.
        pos_threshold: anchors whose `gt_overlap` is above this are positive (lesson: 0.4).
    Returns:
        dict with
        `boxes` `[B, A, 4]` yxyx box of each anchor's matched object (zeros for images
        without objects), `classes` `[B, A]` int32 class id, `num_classes` where not
        positive, `positive` `[B, A]` bool, `gt_overlap` `[B, A]` float32,
        `gt_idx` `[B, A]` int32 row of `y_true` each anchor is matched to.
    No input checks here (`SSDLoss` validates); padding rows may hold anything.
    Outside XLA only the real rows are matched (`_map_objects`); under XLA the padded batch.
    """
    anchors = AnchorConfig.coerce(anchors)
    y_true = tf.convert_to_tensor(y_true, tf.float32)
    if y_true.shape[1] is None or y_true.shape[1] == 0:
        # No rows at all (max_boxes = 0): add one padding row so the padded form's gathers
        # have a source (and M is known to be >= 1).
        extra = tf.maximum(1 - tf.shape(y_true)[1], 0)
        y_true = tf.pad(y_true, [[0, 0], [0, extra], [0, 0]], constant_values=-1.0)
    gt_cls = tf.cast(y_true[..., 4], tf.int32)
    valid = gt_cls >= 0
    if in_xla_context() is False:  # XLA needs static shapes
        return _match_objects(y_true, gt_cls, valid, anchors, num_classes, pos_threshold)
    # Zero the padding rows so whatever they hold cannot leak NaN into the loss.
    gt_boxes = tf.where(valid[..., None], y_true[..., :4], 0.0)
    overlaps = jaccard(gt_boxes, anchors.corners)  # [B, M, A]
    gt_overlap, gt_idx = _map(overlaps, valid)
    positive = gt_overlap > pos_threshold
    boxes = tf.gather(gt_boxes, gt_idx, batch_dims=1)
    classes = tf.where(positive, tf.gather(gt_cls, gt_idx, batch_dims=1), num_classes)
    return {
        "boxes": boxes,
        "classes": classes,
        "positive": positive,
        "gt_overlap": gt_overlap,
        "gt_idx": gt_idx,
    }


def _match_objects(y_true, gt_cls, valid, anchors, num_classes, pos_threshold):
    """`match_anchors` outside XLA: the real objects gathered into one list (`_map_objects`)."""
    where = tf.where(valid)  # [N, 2] (image, row), image by image, rows in order
    image, row = tf.unstack(tf.cast(where, tf.int32), axis=1)
    boxes = tf.gather_nd(y_true[..., :4], where)  # [N, 4]
    gt_overlap, gt_obj = _map_objects(jaccard(boxes, anchors.corners), image, tf.shape(y_true)[0])
    positive = gt_overlap > pos_threshold
    # Object N, for anchors of images without objects: a zero box, row 0, background.
    boxes = tf.concat([boxes, tf.zeros([1, 4])], axis=0)
    classes = tf.concat([tf.gather_nd(gt_cls, where), [num_classes]], axis=0)
    rows = tf.concat([row, [0]], axis=0)
    return {
        "boxes": tf.gather(boxes, gt_obj),
        "classes": tf.where(positive, tf.gather(classes, gt_obj), num_classes),
        "positive": positive,
        "gt_overlap": gt_overlap,
        "gt_idx": tf.gather(rows, gt_obj),
    }
