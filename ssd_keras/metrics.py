"""Evaluation: Pascal VOC mean average precision, a Keras mAP callback, anchor coverage.

All boxes here are relative yxyx `(ymin, xmin, ymax, xmax)` in [0, 1] (see DESIGN.md).

`evaluate_detections` follows the VOC devkit's definition of AP (`VOCevaldet.m` and its
Python transcription `voc_eval.py` from py-faster-rcnn), which `keras-cv`/`keras-hub` do not
ship and COCO's 101-point AP (pycocotools) does not reproduce, so it is written out here:

* per class, detections from all images are sorted by descending score (a stable sort, so
  equal scores keep their input order; the devkit's quicksort leaves that order undefined);
* each detection is compared with the ground-truth objects of its class in its image and
  goes to the one with the highest IoU (already matched or not, as in the devkit);
* IoU >= `iou_threshold` (the MATLAB devkit's `ovmax >= minoverlap`; `voc_eval.py` writes
  `>`, which differs only for an IoU exactly equal to the threshold) and that object is
  "difficult": the detection is ignored (neither true nor false positive);
  not difficult and not yet matched: true positive; already matched: false positive
  (a duplicate); IoU below the threshold: false positive;
* difficult objects do not count in the number of positives;
* AP is the 11-point interpolated AP (`use_07_metric=True`, VOC2007 test server, the
  lesson's era), with the devkit's thresholds `np.arange(0, 1.1, 0.1)` including their
  floating point values, or the area under the monotone precision envelope (VOC2010+).

The devkit adds 1 to pixel widths and heights (`x2 - x1 + 1`) because its boxes are inclusive
integer pixel indices. Relative boxes are continuous, so IoU here is the plain area ratio
(the same `jaccard` as the loss). Converting the devkit's pixel boxes `(x1 - 1) / W ...
x2 / W` makes the two agree.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "evaluate_detections",
    "evaluate_model",
    "detection_function",
    "voc_ap",
    "detections_from_decoded",
    "ground_truths_from_y_true",
    "coco_map",
    "MeanAveragePrecisionCallback",
    "anchor_coverage",
    "plot_anchor_coverage",
]

# The devkit's 11 recall thresholds, computed the devkit's way: 0.30000000000000004 etc.
# (a recall of exactly 0.3 does not reach the "0.3" threshold, in the devkit and here).
_VOC07_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


def _iou_matrix(a, b):
    """IoU `[N, M]` of numpy yxyx boxes `[N, 4]`, `[M, 4]` (no pixel +1; 0 for empty union)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.maximum(ymax - ymin, 0.0) * np.maximum(xmax - xmin, 0.0)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def voc_ap(recall, precision, use_07_metric=True):
    """The devkit's `voc_ap`: AP from a recall/precision list (detections in score order).

    `use_07_metric=True`: mean over the 11 recall thresholds 0, 0.1, ..., 1 of the highest
    precision at recall >= threshold (0 where none). Else: area under the precision envelope
    (precision made monotonically decreasing from the right), summed where recall changes.
    """
    rec = np.asarray(recall, np.float64)
    prec = np.asarray(precision, np.float64)
    if use_07_metric:
        ap = 0.0
        for t in _VOC07_THRESHOLDS:
            above = rec >= t
            ap += (np.max(prec[above]) if above.any() else 0.0) / 11.0
        return float(ap)
    mrec = np.concatenate([[0.0], rec, [1.0]])
    mpre = np.concatenate([[0.0], prec, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _as_image_detections(det, index, num_classes):
    if isinstance(det, dict):
        det = (det["boxes"], det["scores"], det["classes"])
    if len(det) != 3:
        raise ValueError(
            f"detections[{index}]: expected (boxes [n, 4], scores [n], classes [n]), "
            f"got a {type(det).__name__} of length {len(det)}"
        )
    boxes = np.asarray(det[0], np.float64).reshape(-1, 4)
    scores = np.asarray(det[1], np.float64).reshape(-1)
    classes = np.asarray(det[2]).reshape(-1)
    if not (len(boxes) == len(scores) == len(classes)):
        raise ValueError(
            f"detections[{index}]: boxes, scores and classes differ in length "
            f"({len(boxes)}, {len(scores)}, {len(classes)})"
        )
    keep = classes >= 0  # decode_detections pads with class -1
    boxes, scores, classes = boxes[keep], scores[keep], classes[keep].astype(np.int64)
    _check(boxes, scores, classes, f"detections[{index}]", num_classes)
    return boxes, scores, classes


def _as_image_ground_truth(gt, index, num_classes):
    if isinstance(gt, dict):
        gt = (gt["boxes"], gt["classes"], gt.get("difficult"))
    if len(gt) not in (2, 3):
        raise ValueError(
            f"ground_truths[{index}]: expected (boxes [m, 4], classes [m], difficult [m]), "
            f"got a {type(gt).__name__} of length {len(gt)}"
        )
    boxes = np.asarray(gt[0], np.float64).reshape(-1, 4)
    classes = np.asarray(gt[1]).reshape(-1)
    difficult = gt[2] if len(gt) == 3 and gt[2] is not None else np.zeros(len(classes), bool)
    difficult = np.asarray(difficult).reshape(-1).astype(bool)
    if not (len(boxes) == len(classes) == len(difficult)):
        raise ValueError(
            f"ground_truths[{index}]: boxes, classes and difficult differ in length "
            f"({len(boxes)}, {len(classes)}, {len(difficult)})"
        )
    keep = classes >= 0  # y_true padding rows
    boxes, classes, difficult = boxes[keep], classes[keep].astype(np.int64), difficult[keep]
    _check(boxes, None, classes, f"ground_truths[{index}]", num_classes)
    return boxes, classes, difficult


def _check(boxes, scores, classes, name, num_classes):
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name}: NaN or infinite box coordinates")
    if scores is not None and not np.all(np.isfinite(scores)):
        raise ValueError(f"{name}: NaN or infinite scores")
    if len(classes) and classes.max() >= num_classes:
        raise ValueError(
            f"{name}: class id {int(classes.max())} >= num_classes ({num_classes})"
        )


def evaluate_detections(
    detections, ground_truths, num_classes, iou_threshold=0.5, use_07_metric=True
):
    """Pascal VOC average precision per class and their mean (the devkit's definition).

    Args:
        detections: one entry per image, `(boxes [n, 4], scores [n], classes [n])`
            (boxes relative yxyx; rows with class -1, decode_detections' padding, are
            dropped), or a dict with those keys.
        ground_truths: one entry per image, in the same order, `(boxes [m, 4], classes [m],
            difficult [m])` (boxes relative yxyx; `difficult` may be omitted → all False;
            rows with class -1, y_true's padding, are dropped).
        num_classes: number of object classes (class ids `0 .. num_classes - 1`).
        iou_threshold: minimum IoU for a true positive (VOC: 0.5, `>=` as in VOCevaldet.m).
        use_07_metric: 11-point interpolated AP (VOC2007) if True, else all-point AP.

    Returns:
        dict with `"map"` (float, NaN-ignoring mean of `ap`), `"ap"` (np.float64
        `[num_classes]`, NaN for classes without non-difficult ground truth),
        `"num_positives"` (int `[num_classes]`), and `"precision"` / `"recall"` (one array
        per class, over that class's detections in score order, as the devkit computes them).

    See the module docstring for the matching rules. Boxes are compared without the
    devkit's pixel +1.
    """
    num_classes = int(num_classes)
    if num_classes < 1:
        raise ValueError(f"evaluate_detections: num_classes must be >= 1, got {num_classes}")
    detections, ground_truths = list(detections), list(ground_truths)
    if len(detections) != len(ground_truths):
        raise ValueError(
            f"evaluate_detections: {len(detections)} detection entries but "
            f"{len(ground_truths)} ground-truth entries; pass one of each per image"
        )
    dets = [_as_image_detections(d, i, num_classes) for i, d in enumerate(detections)]
    gts = [_as_image_ground_truth(g, i, num_classes) for i, g in enumerate(ground_truths)]

    ap = np.full(num_classes, np.nan)
    npos = np.zeros(num_classes, np.int64)
    precisions, recalls = [], []
    for c in range(num_classes):
        # Per detection of class c: its image, score, best IoU and that object's index. The
        # devkit's best object does not depend on earlier matches, so only the "already
        # matched" flags are sequential.
        img_ids, scores, ovmax, jmax, gt_difficult = [], [], [], [], []
        for i, ((db, ds, dc), (gb, gc, gd)) in enumerate(zip(dets, gts)):
            gsel = gc == c
            npos[c] += int(np.sum(gsel & ~gd))
            dsel = dc == c
            n = int(dsel.sum())
            if n == 0:
                continue
            img_ids.append(np.full(n, i))
            scores.append(ds[dsel])
            if gsel.any():
                iou = _iou_matrix(db[dsel], gb[gsel])
                j = np.argmax(iou, axis=1)
                ovmax.append(iou[np.arange(n), j])
                jmax.append(j)
                gt_difficult.append(gd[gsel][j])
            else:
                ovmax.append(np.full(n, -np.inf))
                jmax.append(np.zeros(n, np.int64))
                gt_difficult.append(np.zeros(n, bool))
        if not scores:
            tp = fp = np.zeros(0)
        else:
            order = np.argsort(-np.concatenate(scores), kind="stable")
            img_ids = np.concatenate(img_ids)[order]
            ovmax = np.concatenate(ovmax)[order]
            jmax = np.concatenate(jmax)[order]
            gt_difficult = np.concatenate(gt_difficult)[order]
            hit = ovmax >= iou_threshold
            ignored = hit & gt_difficult
            candidate = hit & ~gt_difficult
            # The first (highest-scoring) hit on an object is the TP; later ones duplicates.
            tp = np.zeros(len(order))
            idx = np.where(candidate)[0]
            if len(idx):
                keys = img_ids[idx] * (1 << 32) + jmax[idx]
                _, first = np.unique(keys, return_index=True)
                tp[idx[first]] = 1.0
            fp = (~ignored & (tp == 0)).astype(np.float64)
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        with np.errstate(divide="ignore", invalid="ignore"):
            rec = tp / float(npos[c]) if npos[c] else np.full(len(tp), np.nan)
        prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        precisions.append(prec)
        recalls.append(rec)
        if npos[c] > 0:
            ap[c] = voc_ap(rec, prec, use_07_metric)
    with np.errstate(all="ignore"):
        mean_ap = float(np.nanmean(ap)) if np.isfinite(ap).any() else float("nan")
    return {
        "map": mean_ap,
        "ap": ap,
        "num_positives": npos,
        "precision": precisions,
        "recall": recalls,
    }


def detections_from_decoded(decoded):
    """`decode_detections`' batched dict → a list of per-image `(boxes, scores, classes)`.

    Uses `num_detections` to cut each image's padded rows (boxes relative yxyx).
    """
    boxes = np.asarray(decoded["boxes"])
    scores = np.asarray(decoded["scores"])
    classes = np.asarray(decoded["classes"])
    num = np.asarray(decoded.get("num_detections", [boxes.shape[1]] * len(boxes)))
    return [
        (boxes[b, : num[b]], scores[b, : num[b]], classes[b, : num[b]])
        for b in range(len(boxes))
    ]


def ground_truths_from_y_true(y_true, difficult=None):
    """Padded `y_true` `[batch, max_boxes, 5]` (relative yxyx + class, padding class -1) →
    a list of per-image `(boxes, classes, difficult)` without the padding rows.

    `difficult`: optional bool `[batch, max_boxes]` aligned with `y_true`'s rows.
    """
    y_true = np.asarray(y_true)
    if y_true.ndim != 3 or y_true.shape[-1] < 5:
        raise ValueError(f"y_true must be [batch, max_boxes, 5], got shape {y_true.shape}")
    out = []
    for b in range(len(y_true)):
        keep = y_true[b, :, 4] >= 0
        d = (
            np.zeros(int(keep.sum()), bool)
            if difficult is None
            else np.asarray(difficult[b]).astype(bool)[keep]
        )
        out.append((y_true[b, keep, :4], y_true[b, keep, 4].astype(np.int64), d))
    return out


def coco_map(detections, ground_truths, num_classes, image_size=(1000, 1000)):
    """COCO-style AP through pycocotools (101-point, IoU 0.5:0.95): a different metric from
    VOC's, reported by many papers. Same inputs as `evaluate_detections`; difficult objects
    become COCO "iscrowd" regions, so detections on them are ignored as in VOC (COCO's
    crowd overlap is intersection over the detection's area, not IoU).

    Boxes are scaled to `image_size` `(height, width)` pixels because COCO's small/medium/
    large areas are in pixels. Returns a dict with `"map"` (AP@[.5:.95]), `"map_50"`,
    `"map_75"` and pycocotools' full `"stats"` (12 numbers).
    """
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "coco_map needs pycocotools: pip install 'pycocotools>=2.0.8'"
        ) from e
    import contextlib
    import io

    h, w = image_size
    images, annotations, results = [], [], []
    for i, (det, gt) in enumerate(zip(detections, ground_truths)):
        images.append({"id": i, "height": h, "width": w})
        gb, gc, gd = _as_image_ground_truth(gt, i, num_classes)
        for box, c, d in zip(gb, gc, gd):
            bw, bh = (box[3] - box[1]) * w, (box[2] - box[0]) * h
            annotations.append({
                "id": len(annotations) + 1, "image_id": i, "category_id": int(c),
                "bbox": [box[1] * w, box[0] * h, bw, bh], "area": bw * bh,
                "iscrowd": int(d),
            })
        db, ds, dc = _as_image_detections(det, i, num_classes)
        for box, s, c in zip(db, ds, dc):
            results.append({
                "image_id": i, "category_id": int(c), "score": float(s),
                "bbox": [box[1] * w, box[0] * h, (box[3] - box[1]) * w, (box[2] - box[0]) * h],
            })
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO()
        coco.dataset = {
            "images": images, "annotations": annotations,
            "categories": [{"id": c} for c in range(num_classes)],
        }
        coco.createIndex()
        if not results:
            return {"map": 0.0, "map_50": 0.0, "map_75": 0.0, "stats": np.zeros(12)}
        coco_dt = coco.loadRes(results)
        ev = COCOeval(coco, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {"map": ev.stats[0], "map_50": ev.stats[1], "map_75": ev.stats[2], "stats": ev.stats}


def _keras():
    import keras

    return keras


def detection_function(model, anchors, decode_fn=None, **decode_kwargs):
    """A compiled `images -> detections` function: `model` and the decoder in one graph (one
    call per batch instead of many small eager ops).

    `decode_fn` defaults to `ssd_keras.decode.decode_detections`; `decode_kwargs` go to it
    (score_threshold, iou_threshold, max_detections). Boxes come back relative yxyx.
    """
    import tensorflow as tf

    decode = decode_fn
    if decode is None:
        from ssd_keras.decode import decode_detections as decode

    @tf.function(reduce_retracing=True)
    def detect(images):
        return decode(model(images, training=False), anchors, **decode_kwargs)

    return detect


def evaluate_model(model, dataset, anchors, num_classes, ground_truths=None, difficult=None,
                   iou_threshold=0.5, use_07_metric=True, decode_fn=None, **decode_kwargs):
    """VOC mAP of `model` over a data set read once, in its order.

    Args:
        dataset: `(images, y_true)` or `(images, y_true, difficult)` batches; y_true
            `[batch, max_boxes, 5]` (relative yxyx + class, padding class -1).
        anchors: the model's `AnchorConfig`.
        ground_truths: optional per-image `(boxes, classes, difficult)` in data-set order (e.g.
            `DetectionData.ground_truths()`), used instead of the non-padding rows of y_true.
        difficult: optional per-image bool arrays (non-padding rows), when the data set does
            not carry the flag.
        decode_fn: the decoder (default `ssd_keras.decode.decode_detections`); `decode_kwargs`
            go to it (score_threshold, iou_threshold, max_detections).
    Returns:
        `evaluate_detections`' dict (`map`, `ap`, ...) plus the per-image `detections`
        `(boxes, scores, classes)` and `ground_truths` `(boxes, classes, difficult)` it scored.
    """
    detect = detection_function(model, anchors, decode_fn, **decode_kwargs)
    detections, truths = [], []
    for batch in dataset:
        images, y_true = batch[0], batch[1]
        diff = batch[2] if len(batch) > 2 else None
        detections += detections_from_decoded({k: np.asarray(v) for k, v in detect(images).items()})
        truths += ground_truths_from_y_true(np.asarray(y_true), None if diff is None else np.asarray(diff))
    for given, what in ((difficult, "difficult"), (ground_truths, "ground_truths")):
        if given is not None and len(given) != len(truths):
            raise ValueError(f"evaluate_model: {what} has {len(given)} entries but the data set "
                             f"has {len(truths)} images")
    if difficult is not None:
        truths = [(b, c, d) for (b, c, _), d in zip(truths, difficult)]
    if ground_truths is not None:
        truths = ground_truths
    result = evaluate_detections(detections, truths, num_classes, iou_threshold, use_07_metric)
    # Kept so that other thresholds or groupings can be scored without running the model again.
    result.update(detections=detections, ground_truths=truths)
    return result


class MeanAveragePrecisionCallback(_keras().callbacks.Callback):
    """Computes VOC mAP on a validation set every `every` epochs and logs it as `val_map`.

    The value is written into the epoch's `logs`, so it shows in the progress bar, in
    `History` and in TensorBoard/ModelCheckpoint placed after this callback in the list (they
    can `monitor="val_map"`, `mode="max"`).

    Args:
        dataset: a `tf.data.Dataset` (or iterable) of `(images, y_true)` batches with y_true
            `[batch, max_boxes, 5]` (relative yxyx + class, padding class -1), or of
            `(images, y_true, difficult)` with difficult bool `[batch, max_boxes]`.
        anchors: the model's `AnchorConfig`.
        num_classes: number of object classes.
        every: run every N epochs (and never on other epochs; the key is absent then).
        decode_kwargs: passed to `decode_detections` (score_threshold, iou_threshold,
            max_detections). The default keeps low-scoring boxes (0.05): mAP needs them.
        difficult: optional list of per-image bool arrays (non-padding rows, dataset order),
            used when the dataset does not carry a difficult flag.
        iou_threshold, use_07_metric: as in `evaluate_detections`.
        decode_fn: the decoder (default `ssd_keras.decode.decode_detections`).
        name: the log key.
    """

    def __init__(
        self,
        dataset,
        anchors,
        num_classes,
        every=1,
        decode_kwargs=None,
        difficult=None,
        iou_threshold=0.5,
        use_07_metric=True,
        decode_fn=None,
        name="val_map",
        verbose=0,
    ):
        super().__init__()
        if int(every) < 1:
            raise ValueError(f"MeanAveragePrecisionCallback: every must be >= 1, got {every}")
        self.dataset = dataset
        self.anchors = anchors
        self.num_classes = int(num_classes)
        self.every = int(every)
        self.decode_kwargs = {"score_threshold": 0.05, **(decode_kwargs or {})}
        self.difficult = difficult
        self.iou_threshold = iou_threshold
        self.use_07_metric = use_07_metric
        self.decode_fn = decode_fn
        self.name = name
        self.verbose = verbose
        self.history = []  # (epoch, result dict)

    def evaluate(self, model=None):
        """Run the model over the data set and return `evaluate_detections`' dict."""
        return evaluate_model(
            model or self.model, self.dataset, self.anchors, self.num_classes,
            difficult=self.difficult, iou_threshold=self.iou_threshold,
            use_07_metric=self.use_07_metric, decode_fn=self.decode_fn, **self.decode_kwargs,
        )

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        result = self.evaluate()
        self.history.append((epoch, result))
        if logs is not None:
            logs[self.name] = result["map"]
        if self.verbose:
            print(f"Epoch {epoch + 1}: {self.name} = {result['map']:.4f}")


def _boxes_list(boxes_per_image):
    """Accept a list of [m, 4] (or [m, 5+] y_true rows), a y_true array, or a tf.data set
    of (images, y_true) → one numpy [N, 4] array of all objects (padding dropped)."""
    if hasattr(boxes_per_image, "as_numpy_iterator"):
        rows = []
        for batch in boxes_per_image.as_numpy_iterator():
            y = batch[1] if isinstance(batch, tuple) else batch
            rows += [r[r[:, 4] >= 0, :4] for r in np.asarray(y)]
        boxes_per_image = rows
    if isinstance(boxes_per_image, np.ndarray) and boxes_per_image.ndim == 3:
        boxes_per_image = list(boxes_per_image)
    out = []
    for i, b in enumerate(boxes_per_image):
        b = np.asarray(b, np.float64)
        if b.size == 0:
            continue
        if b.ndim != 2 or b.shape[1] < 4:
            raise ValueError(f"anchor_coverage: image {i}: expected boxes [m, 4], got {b.shape}")
        if b.shape[1] >= 5:
            b = b[b[:, 4] >= 0]
        b = b[:, :4]
        bad = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1]) | ~np.isfinite(b).all(1)
        if bad.any():
            raise ValueError(
                f"anchor_coverage: image {i}: invalid yxyx boxes in rows "
                f"{np.where(bad)[0].tolist()}, e.g. {b[bad][0].tolist()}"
            )
        out.append(b)
    return np.concatenate(out) if out else np.zeros((0, 4))


def anchor_coverage(boxes_per_image, anchors, threshold=0.5, size_edges=(0.1, 0.3), bins=20):
    """How well an `AnchorConfig` covers a data set's objects.

    For each object the best IoU with any anchor: an object whose best IoU is not above
    `threshold` gets no anchor by IoU and is matched only by `map_to_ground_truth`'s forced
    rule (overlap 1.99 on its best anchor), so it trains one anchor whose box is a poor fit.
    That is the lesson's argument for more zooms and ratios. Pass `threshold=0.4` to mirror
    `SSDLoss(pos_threshold=0.4)` (the lesson's `gt_overlap > 0.4`).

    Args:
        boxes_per_image: list of `[m, 4]` relative yxyx arrays (or y_true rows `[m, 5]`, padding
            class -1 dropped), a y_true array `[B, max_boxes, 5]`, or a tf.data set of
            `(images, y_true)`.
        anchors: an `AnchorConfig`.
        threshold: IoU an object's best anchor must exceed.
        size_edges: `sqrt(area)` edges (relative) of the small / medium / large buckets.
        bins: number of histogram bins on [0, 1].

    Returns:
        dict: `num_objects`, `num_uncovered`, `fraction_uncovered`, `best_iou [N]`,
        `best_anchor [N]`, `positives_per_object [N]` (anchors above threshold),
        `histogram` (counts, bin_edges), `by_size` {small, medium, large: {num_objects,
        num_uncovered, fraction_uncovered, mean_best_iou}}, `threshold`, `size_edges`.
    """
    boxes = _boxes_list(boxes_per_image)
    iou = _iou_matrix(boxes, anchors.corners)
    n = len(boxes)
    best = iou.max(axis=1) if n else np.zeros(0)
    uncovered = ~(best > threshold)
    size = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    lo, hi = size_edges
    buckets = {"small": size < lo, "medium": (size >= lo) & (size < hi), "large": size >= hi}
    by_size = {}
    for name, sel in buckets.items():
        m = int(sel.sum())
        by_size[name] = {
            "num_objects": m,
            "num_uncovered": int((uncovered & sel).sum()),
            "fraction_uncovered": float((uncovered & sel).sum() / m) if m else float("nan"),
            "mean_best_iou": float(best[sel].mean()) if m else float("nan"),
        }
    counts, edges = np.histogram(best, bins=bins, range=(0.0, 1.0))
    return {
        "num_objects": n,
        "num_uncovered": int(uncovered.sum()),
        "fraction_uncovered": float(uncovered.mean()) if n else float("nan"),
        "best_iou": best,
        "best_anchor": iou.argmax(axis=1) if n else np.zeros(0, np.int64),
        "positives_per_object": (iou > threshold).sum(axis=1),
        "histogram": (counts, edges),
        "by_size": by_size,
        "threshold": threshold,
        "size_edges": tuple(size_edges),
    }


def plot_anchor_coverage(coverage, title=None):
    """A matplotlib `Figure` for `anchor_coverage`'s result: the best-IoU histogram with the
    threshold, and the uncovered fraction per size bucket."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 3.8))
    ax1, ax2 = fig.subplots(1, 2)
    counts, edges = coverage["histogram"]
    ax1.bar(edges[:-1], counts, width=np.diff(edges), align="edge", edgecolor="k", alpha=0.7)
    ax1.axvline(coverage["threshold"], color="r", ls="--", label=f"threshold {coverage['threshold']}")
    ax1.set(xlabel="best anchor IoU per object", ylabel="objects",
            title=f"{coverage['num_uncovered']}/{coverage['num_objects']} objects below threshold")
    ax1.legend()
    names = list(coverage["by_size"])
    frac = [coverage["by_size"][k]["fraction_uncovered"] for k in names]
    lo, hi = coverage["size_edges"]
    labels = [f"small\n<{lo}", f"medium\n{lo}-{hi}", f"large\n>={hi}"]
    bars = ax2.bar(labels, np.nan_to_num(frac), color=["tab:red", "tab:orange", "tab:green"])
    for bar, k in zip(bars, names):
        d = coverage["by_size"][k]
        ax2.annotate(f"{d['num_uncovered']}/{d['num_objects']}",
                     (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                     ha="center", va="bottom")
    ax2.set(ylim=(0, 1.05), ylabel="fraction uncovered", title="by size (sqrt(area))")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig
