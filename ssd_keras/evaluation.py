"""Evaluation: Pascal VOC mean average precision (the devkit's), COCO AP, and running a model.

All boxes here are relative yxyx `(ymin, xmin, ymax, xmax)` in [0, 1] (docs/ARCHITECTURE.md).

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

import numbers

import numpy as np

from ssd_keras._checks import is_whole
from ssd_keras.boxes import jaccard
from ssd_keras.inference import detection_function

__all__ = [
    "evaluate_detections",
    "evaluate_model",
    "voc_ap",
    "detections_from_decoded",
    "ground_truths_from_y_true",
    "coco_map",
]

# The devkit's 11 recall thresholds, computed the devkit's way: 0.30000000000000004 etc.
# (a recall of exactly 0.3 does not reach the "0.3" threshold, in the devkit and here).
_VOC07_THRESHOLDS = np.arange(0.0, 1.1, 0.1)


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
    _check_ids(classes, f"detections[{index}]")
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
    _check_ids(classes, f"ground_truths[{index}]")
    keep = classes >= 0  # y_true padding rows
    boxes, classes, difficult = boxes[keep], classes[keep].astype(np.int64), difficult[keep]
    _check(boxes, None, classes, f"ground_truths[{index}]", num_classes)
    return boxes, classes, difficult


def _check_ids(classes, name):
    """Class ids are whole numbers, -1 for padding: 1.9 must not count as class 1, nor -5 vanish."""
    classes = np.asarray(classes, np.float64)
    bad = ~np.isfinite(classes) | (classes != np.round(classes)) | (classes < -1)
    if bad.any():
        raise ValueError(f"{name}: class ids must be integers >= 0 (-1 for padding), got {classes[bad][0]:g}")


#: How far outside [0, 1] a relative coordinate may lie: ground truth by rounding only; detections
#: by up to one image side, as undecoded-and-unclipped predictions do (`decode_detections` clips;
#: the lesson's anchors reach -0.975 .. 1.975 before clipping). Pixel boxes lie far beyond either.
_GT_SLACK, _DETECTION_SLACK = 0.01, 1.0


def _check(boxes, scores, classes, name, num_classes):
    if not np.all(np.isfinite(boxes)):
        raise ValueError(f"{name}: NaN or infinite box coordinates")
    # Pixel boxes against relative ones overlap nowhere: every AP would be 0 without an error.
    slack = _GT_SLACK if scores is None else _DETECTION_SLACK
    if len(boxes) and (boxes.min() < -slack or boxes.max() > 1 + slack):
        where = "in [0, 1]" if scores is None else "in [0, 1] (unclipped: up to one image side beyond)"
        raise ValueError(
            f"{name}: boxes must be relative yxyx (ymin, xmin, ymax, xmax) {where}, got coordinates in "
            f"[{boxes.min():g}, {boxes.max():g}]; pixel boxes? divide y by the image height and x by its "
            f"width (VOC's 1-based pixel boxes: ssd_keras.data.voc_to_relative)"
        )
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
            Boxes are relative, not pixels: a ground-truth coordinate outside [0, 1] (beyond
            0.01 for rounding), or a detection's beyond one image side of it (unclipped
            predictions), is a ValueError rather than an AP of 0.
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
    if not (is_whole(num_classes) and num_classes >= 1):  # int() would cut 2.5 to 2 classes
        raise ValueError(f"evaluate_detections: num_classes must be an integer >= 1, got {num_classes!r}")
    num_classes = int(num_classes)
    if not isinstance(iou_threshold, numbers.Real) or not 0.0 < iou_threshold <= 1.0:  # NaN too
        raise ValueError(f"evaluate_detections: iou_threshold must be in (0, 1] (VOC: 0.5), got {iou_threshold!r}")
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
                iou = jaccard(db[dsel], gb[gsel])
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


def evaluate_model(model, dataset, anchors=None, num_classes=None, ground_truths=None,
                   difficult=None, iou_threshold=0.5, use_07_metric=True, nms_iou_threshold=None,
                   **decode_kwargs):
    """VOC mAP of `model` over a data set read once, in its order.

    Args:
        model: an `SSDDetector` (its anchors, class count and decoder settings are used), or a
            `build_ssd` model with `anchors` and `num_classes` given.
        dataset: `(images, y_true)` or `(images, y_true, difficult)` batches; y_true
            `[batch, max_boxes, 5]` (relative yxyx + class, padding class -1).
        ground_truths: optional per-image `(boxes, classes, difficult)` in data-set order (e.g.
            `DetectionData.ground_truths()`), used instead of the non-padding rows of y_true.
        difficult: optional per-image bool arrays (non-padding rows), when the data set does
            not carry the flag.
        iou_threshold: the IoU a detection needs with an object to be a true positive (VOC:
            0.5). Not the NMS overlap, which is `nms_iou_threshold`.
        nms_iou_threshold: the decoder's NMS overlap (default: the model's, or 0.45).
        decode_kwargs: override the other decoder settings (`score_threshold`,
            `max_detections`, `max_per_class`); images go through `ssd_keras.inference.detect`,
            like `predict`.
    Returns:
        `evaluate_detections`' dict (`map`, `ap`, ...) plus the per-image `detections`
        `(boxes, scores, classes)` and `ground_truths` `(boxes, classes, difficult)` it scored.
    """
    if num_classes is None:
        num_classes = getattr(model, "num_classes", None)
        if num_classes is None:
            raise ValueError("evaluate_model: pass num_classes= for a model that is not an SSDDetector")
    if nms_iou_threshold is not None:
        decode_kwargs["iou_threshold"] = nms_iou_threshold
    detect = detection_function(model, anchors, **decode_kwargs)
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
