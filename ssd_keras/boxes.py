"""Box utilities. Boxes are relative yxyx `(ymin, xmin, ymax, xmax)` in [0, 1] unless a
docstring says otherwise (the lesson's `(top, left, bottom, right)`).

Why not `keras.utils.bounding_boxes.compute_iou`: it adds `epsilon` to the union and needs an
image shape for relative formats, so its IoUs differ from the lesson's in the 6th digit, which
changes ties in matching. `jaccard` below is the lesson's formula, batched.
Format conversion at the file/drawing edges uses `keras.utils.bounding_boxes.convert_format`.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def centers_to_corners(centers):
    """`(cy, cx, h, w)` → yxyx. The lesson's `hw2corners`. numpy in, numpy out; else TF."""
    if isinstance(centers, np.ndarray):
        ctr, hw = centers[..., :2], centers[..., 2:4]
        return np.concatenate([ctr - hw / 2, ctr + hw / 2], axis=-1)
    centers = tf.convert_to_tensor(centers)
    ctr, hw = centers[..., :2], centers[..., 2:4]
    return tf.concat([ctr - hw / 2, ctr + hw / 2], axis=-1)


def corners_to_centers(corners):
    """yxyx → `(cy, cx, h, w)`. numpy in, numpy out; else TF."""
    if isinstance(corners, np.ndarray):
        tl, br = corners[..., :2], corners[..., 2:4]
        return np.concatenate([(tl + br) / 2, br - tl], axis=-1)
    corners = tf.convert_to_tensor(corners)
    tl, br = corners[..., :2], corners[..., 2:4]
    return tf.concat([(tl + br) / 2, br - tl], axis=-1)


def _is_numpy(*arrays):
    return all(isinstance(a, np.ndarray) for a in arrays)


def box_area(boxes):
    """Area of yxyx boxes `[..., 4]` → `[...]` (the lesson's `box_sz`). numpy in, numpy out
    (in its dtype); else TF float32."""
    if not isinstance(boxes, np.ndarray):
        boxes = tf.convert_to_tensor(boxes, tf.float32)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def intersection(boxes_a, boxes_b):
    """Pairwise intersection areas of yxyx boxes: `[..., N, 4]`, `[..., M, 4]` → `[..., N, M]`.
    numpy arrays in, numpy out (the evaluation computes in float64); else TF float32.

    Written per coordinate: TF's CPU kernels broadcast `[B, N, 1]` against `[M]` several times
    faster than `[B, N, 1, 2]` against `[M, 2]` (it was the largest cost in the batched loss).
    """
    xp = np if _is_numpy(boxes_a, boxes_b) else tf.math
    if xp is tf.math:
        boxes_a = tf.convert_to_tensor(boxes_a, tf.float32)
        boxes_b = tf.convert_to_tensor(boxes_b, tf.float32)
    ay0, ax0, ay1, ax1 = (boxes_a[..., :, None, i] for i in range(4))  # [..., N, 1]
    by0, bx0, by1, bx1 = (boxes_b[..., None, :, i] for i in range(4))  # [..., 1, M]
    inter_h = xp.maximum(xp.minimum(ay1, by1) - xp.maximum(ay0, by0), 0.0)
    inter_w = xp.maximum(xp.minimum(ax1, bx1) - xp.maximum(ax0, bx0), 0.0)
    return inter_h * inter_w


def jaccard(boxes_a, boxes_b):
    """IoU matrix of yxyx boxes: `[N, 4]`, `[M, 4]` → `[N, M]`; batched `[B, N, 4]` against
    `[M, 4]` or `[B, M, 4]` → `[B, N, M]`.

    The lesson's `jaccard`, same float32 operations in the same order (bit-identical values).
    Two zero-area boxes give 0, not NaN. The one IoU of the package: the loss's matching runs
    it in TF; the evaluation and anchor coverage pass numpy arrays and get numpy back (in
    their dtype, float64 there).
    """
    inter = intersection(boxes_a, boxes_b)
    union = box_area(boxes_a)[..., :, None] + box_area(boxes_b)[..., None, :] - inter
    if isinstance(inter, np.ndarray):
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)
    return tf.math.divide_no_nan(inter, union)


#: Mixes per-anchor moves `(centre_dy, centre_dx, edge_dy, edge_dx)` into corner offsets
#: `(centre_dy - edge_dy, centre_dx - edge_dx, centre_dy + edge_dy, centre_dx + edge_dx)`.
_CENTER_SIZE_TO_CORNERS = np.array(
    [[1, 0, 1, 0], [0, 1, 0, 1], [-1, 0, 1, 0], [0, -1, 0, 1]], np.float32
)


def activations_to_boxes(box_activations, anchors):
    """The lesson's `actn_to_bb`: raw box activations → yxyx boxes.

    `tanh` squashes each activation to [-1, 1]; the centre moves up to half a grid cell from
    the anchor's centre and height/width scale between 0.5x and 1.5x the anchor's.

    The lesson computes centre and size, then corners (`hw2corners`). Expanded, the same
    formula is affine in `t = tanh(activations)`: `ymin = anchor_ymin + t0 * cell / 2 -
    t2 * h / 4`, and so on. It is computed as one 4x4 matmul, because the slices and concats
    of the lesson's form are slow to differentiate (they were a fifth of the loss's time;
    bench/README.md, issue 13). On a CPU the values equal the lesson's to float32 rounding
    (~1e-7). On an Ampere or newer GPU, TensorFlow runs matmuls in TF32 by default
    (`tf.config.experimental.enable_tensor_float_32_execution`), which rounds the moves to 11
    significant bits first: up to ~1e-4 of the image side, the order of the TF32 rounding of
    the convolutions that computed the activations.

    Args:
        box_activations: `[A, 4]` or `[batch, A, 4]` (the first 4 channels of `y_pred`).
        anchors: an `AnchorConfig` with `A` anchors.
    Returns:
        yxyx boxes with the same shape.
    """
    acts = tf.tanh(tf.convert_to_tensor(box_activations, tf.float32))
    cell = anchors.grid_sizes[:, 0]
    # Per anchor, for t = 1: the centre moves half a cell; the size grows by half the anchor's,
    # so each edge moves a quarter of it.
    scale = np.stack([cell / 2, cell / 2, anchors.centers[:, 2] / 4, anchors.centers[:, 3] / 4], axis=1)
    offsets = tf.reshape(tf.reshape(acts * scale, [-1, 4]) @ _CENTER_SIZE_TO_CORNERS, tf.shape(acts))
    return offsets + anchors.corners


def validate_boxes(boxes, name="boxes", clip=False):
    """Check numpy yxyx relative boxes `[N, 4]`; raise ValueError naming the problem.

    NaN/inf or `ymax <= ymin` / `xmax <= xmin` always raise. Coordinates outside [0, 1] raise
    unless `clip=True`, in which case they are clipped (and boxes that become empty raise).
    Returns the (possibly clipped) float32 array.
    """
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name}: NaN or infinite coordinates in rows {np.where(~np.isfinite(boxes).all(1))[0].tolist()}")
    if clip:
        boxes = np.clip(boxes, 0.0, 1.0)
    else:
        bad = np.where(((boxes < 0) | (boxes > 1)).any(1))[0]
        if len(bad):
            raise ValueError(
                f"{name}: coordinates outside [0, 1] (relative yxyx expected) in rows "
                f"{bad.tolist()}, e.g. {boxes[bad[0]].tolist()}"
            )
    bad = np.where((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))[0]
    if len(bad):
        raise ValueError(
            f"{name}: degenerate boxes (ymax <= ymin or xmax <= xmin; yxyx order expected) in "
            f"rows {bad.tolist()}, e.g. {boxes[bad[0]].tolist()}"
        )
    return boxes
