"""ssd_keras.evaluation: VOC AP against hand-computed cases and a transcription of the devkit's
voc_eval.py, COCO AP through pycocotools, and evaluate_model (the one inference path)."""

import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig
from ssd_keras.evaluation import (
    evaluate_detections,
    evaluate_model,
    ground_truths_from_y_true,
    voc_ap,
)
from ssd_keras.inference import detection_function

BOX_A = [0.1, 0.1, 0.4, 0.4]
BOX_B = [0.5, 0.5, 0.9, 0.8]



# --- independent transcription of py-faster-rcnn's voc_eval.py (loops, as written there) ---
def devkit_voc_ap(rec, prec, use_07_metric):
    if use_07_metric:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            if np.sum(rec >= t) == 0:
                p = 0
            else:
                p = np.max(prec[rec >= t])
            ap = ap + p / 11.0
    else:
        mrec = np.concatenate(([0.0], rec, [1.0]))
        mpre = np.concatenate(([0.0], prec, [0.0]))
        for i in range(mpre.size - 1, 0, -1):
            mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
        i = np.where(mrec[1:] != mrec[:-1])[0]
        ap = np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])
    return ap


def devkit_voc_eval(dets, gts, cls, ovthresh, use_07_metric):
    """voc_eval.py for one class, boxes yxyx relative (no +1), `>=` as VOCevaldet.m."""
    class_recs, npos = {}, 0
    for img, (gb, gc, gd) in enumerate(gts):
        sel = gc == cls
        class_recs[img] = {"bbox": gb[sel], "difficult": gd[sel], "det": [False] * int(sel.sum())}
        npos += int(np.sum(~gd[sel]))
    image_ids, confidence, BB = [], [], []
    for img, (db, ds, dc) in enumerate(dets):
        for b, s, c in zip(db, ds, dc):
            if c == cls:
                image_ids.append(img)
                confidence.append(s)
                BB.append(b)
    if npos == 0:
        return float("nan")
    if not BB:
        return 0.0
    sorted_ind = np.argsort(-np.asarray(confidence), kind="stable")
    BB = np.asarray(BB)[sorted_ind]
    image_ids = [image_ids[x] for x in sorted_ind]
    nd = len(image_ids)
    tp, fp = np.zeros(nd), np.zeros(nd)
    for d in range(nd):
        R = class_recs[image_ids[d]]
        bb = BB[d]
        ovmax = -np.inf
        BBGT = R["bbox"]
        if BBGT.size > 0:
            iymin = np.maximum(BBGT[:, 0], bb[0])
            ixmin = np.maximum(BBGT[:, 1], bb[1])
            iymax = np.minimum(BBGT[:, 2], bb[2])
            ixmax = np.minimum(BBGT[:, 3], bb[3])
            iw = np.maximum(ixmax - ixmin, 0.0)
            ih = np.maximum(iymax - iymin, 0.0)
            inters = iw * ih
            uni = (bb[2] - bb[0]) * (bb[3] - bb[1]) + (BBGT[:, 2] - BBGT[:, 0]) * (
                BBGT[:, 3] - BBGT[:, 1]
            ) - inters
            overlaps = inters / uni
            ovmax = np.max(overlaps)
            jmax = np.argmax(overlaps)
        if ovmax >= ovthresh:
            if not R["difficult"][jmax]:
                if not R["det"][jmax]:
                    tp[d] = 1.0
                    R["det"][jmax] = 1
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp = np.cumsum(fp)
    tp = np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    return devkit_voc_ap(rec, prec, use_07_metric)


def _gt(boxes, classes, difficult=None):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult)
    return boxes, np.asarray(classes), difficult


def _det(boxes, scores, classes):
    return np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(scores), np.asarray(classes)


def test_perfect_detector_is_one():
    gts = [_gt([BOX_A, BOX_B], [0, 1]), _gt([BOX_B], [1])]
    dets = [_det([BOX_A, BOX_B], [0.9, 0.8], [0, 1]), _det([BOX_B], [0.7], [1])]
    for use_07 in (True, False):
        r = evaluate_detections(dets, gts, num_classes=2, use_07_metric=use_07)
        np.testing.assert_allclose(r["ap"], [1.0, 1.0])
        assert r["map"] == pytest.approx(1.0)


def test_duplicate_detection_is_false_positive():
    # Two objects of class 0; detections in score order: TP(obj 0), duplicate of obj 0 (FP),
    # TP(obj 1). precision = [1, 1/2, 2/3], recall = [.5, .5, 1].
    gts = [_gt([BOX_A, BOX_B], [0, 0])]
    dets = [_det([BOX_A, BOX_A, BOX_B], [0.9, 0.8, 0.7], [0, 0, 0])]
    r = evaluate_detections(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(r["precision"][0], [1, 0.5, 2 / 3])
    np.testing.assert_allclose(r["recall"][0], [0.5, 0.5, 1.0])
    # all-point: 0.5 * 1 + 0.5 * 2/3
    assert r["ap"][0] == pytest.approx(0.5 + 1 / 3)
    # 11-point: thresholds 0..0.5 → 1 (6 of them), 0.6..1.0 → 2/3 (5 of them)
    r07 = evaluate_detections(dets, gts, 1, use_07_metric=True)
    assert r07["ap"][0] == pytest.approx((6 * 1 + 5 * 2 / 3) / 11)


def test_difficult_only_class_is_nan_and_map_ignores_it():
    gts = [_gt([BOX_A, BOX_B], [0, 1], difficult=[False, True])]
    dets = [_det([BOX_A, BOX_B], [0.9, 0.8], [0, 1])]
    r = evaluate_detections(dets, gts, 3)
    assert r["ap"][0] == pytest.approx(1.0)
    assert np.isnan(r["ap"][1]) and np.isnan(r["ap"][2])  # difficult only; no objects at all
    assert r["map"] == pytest.approx(1.0)
    np.testing.assert_array_equal(r["num_positives"], [1, 0, 0])


def test_detection_on_difficult_is_ignored():
    # class 0: one normal object, one difficult. The difficult hit scores highest and must
    # neither count as TP nor FP: AP stays 1.0 (it would be lower if it were an FP).
    gts = [_gt([BOX_A, BOX_B], [0, 0], difficult=[False, True])]
    dets = [_det([BOX_B, BOX_A], [0.95, 0.9], [0, 0])]
    for use_07 in (True, False):
        r = evaluate_detections(dets, gts, 1, use_07_metric=use_07)
        assert r["ap"][0] == pytest.approx(1.0)
    # devkit rows: the ignored detection is a row with tp = fp = 0 (precision 0 at recall 0)
    np.testing.assert_allclose(r["precision"][0], [0.0, 1.0])
    np.testing.assert_allclose(r["recall"][0], [0.0, 1.0])


def test_hand_worked_precision_recall_list():
    # 4 objects in 2 images; 6 detections: TP FP TP FP FP TP (by score)
    # precision 1, 1/2, 2/3, 2/4, 2/5, 3/6 ; recall .25 .25 .5 .5 .5 .75
    far = [0.0, 0.0, 0.05, 0.05]
    o1, o2, o3, o4 = BOX_A, BOX_B, [0.1, 0.5, 0.3, 0.9], [0.6, 0.1, 0.9, 0.3]
    gts = [_gt([o1, o2], [0, 0]), _gt([o3, o4], [0, 0])]
    dets = [
        _det([o1, far, far], [0.9, 0.8, 0.5], [0, 0, 0]),
        _det([o3, far, o4], [0.7, 0.6, 0.3], [0, 0, 0]),
    ]
    r = evaluate_detections(dets, gts, 1, use_07_metric=False)
    np.testing.assert_allclose(r["precision"][0], [1, 1 / 2, 2 / 3, 2 / 4, 2 / 5, 3 / 6])
    np.testing.assert_allclose(r["recall"][0], [0.25, 0.25, 0.5, 0.5, 0.5, 0.75])
    # envelope: recall .25 → 1, .5 → 2/3, .75 → 1/2, beyond → 0
    assert r["ap"][0] == pytest.approx(0.25 * 1 + 0.25 * 2 / 3 + 0.25 * 0.5)
    # 11-point: t=0,.1,.2 → 1; .3,.4,.5 → 2/3; .6,.7 → 1/2; .8,.9,1 → 0
    r07 = evaluate_detections(dets, gts, 1, use_07_metric=True)
    assert r07["ap"][0] == pytest.approx((3 * 1 + 3 * 2 / 3 + 2 * 0.5) / 11)


def test_voc07_threshold_float_quirk_matches_devkit():
    # recall exactly 0.3 does not reach the devkit's 0.30000000000000004 threshold
    rec, prec = np.array([0.3]), np.array([1.0])
    assert voc_ap(rec, prec, True) == pytest.approx(3 / 11)
    assert voc_ap(rec, prec, True) == pytest.approx(devkit_voc_ap(rec, prec, True))


def test_iou_threshold_boundary_and_wrong_class():
    gt = [_gt([[0.0, 0.0, 1.0, 0.5]], [0])]
    half = [[0.0, 0.0, 1.0, 0.25]]  # IoU exactly 0.5
    assert evaluate_detections([_det(half, [1], [0])], gt, 1)["ap"][0] == pytest.approx(1.0)
    assert evaluate_detections([_det(half, [1], [0])], gt, 1, iou_threshold=0.51)["ap"][0] == 0
    r = evaluate_detections([_det([[0.0, 0.0, 1.0, 0.5]], [1], [1])], gt, 2)
    assert r["ap"][0] == 0.0 and np.isnan(r["ap"][1])


def _random_case(rng, num_images, num_classes):
    dets, gts = [], []
    for _ in range(num_images):
        m = rng.integers(0, 6)
        yx = rng.uniform(0, 0.7, (m, 2))
        hw = rng.uniform(0.05, 0.3, (m, 2))
        gb = np.concatenate([yx, yx + hw], 1)
        gc = rng.integers(0, num_classes, m)
        gd = rng.uniform(size=m) < 0.2
        gts.append((gb, gc, gd))
        # detections: jittered copies of the objects (some duplicated), plus random boxes
        src = np.concatenate([gb, gb[rng.uniform(size=m) < 0.3]]) if m else np.zeros((0, 4))
        cls = np.concatenate([gc, gc[: len(src) - m]]) if m else np.zeros(0, int)
        cls = np.where(rng.uniform(size=len(cls)) < 0.1, rng.integers(0, num_classes, len(cls)), cls)
        jit = src + rng.normal(0, 0.03, src.shape)
        k = rng.integers(0, 4)
        ryx = rng.uniform(0, 0.7, (k, 2))
        rb = np.concatenate([ryx, ryx + rng.uniform(0.05, 0.3, (k, 2))], 1)
        db = np.concatenate([jit, rb])
        db = np.concatenate([np.minimum(db[:, :2], db[:, 2:]), np.maximum(db[:, :2], db[:, 2:])], 1)
        dc = np.concatenate([cls, rng.integers(0, num_classes, k)])
        dets.append((db, rng.uniform(size=len(db)), dc))
    return dets, gts


@pytest.mark.parametrize("use_07", [True, False])
@pytest.mark.parametrize("thresh", [0.5, 0.7])
def test_agrees_with_devkit_transcription_on_random_data(use_07, thresh):
    rng = np.random.default_rng(7)
    for trial in range(5):
        dets, gts = _random_case(rng, 30, 4)
        r = evaluate_detections(dets, gts, 4, iou_threshold=thresh, use_07_metric=use_07)
        ref = [devkit_voc_eval(dets, gts, c, thresh, use_07) for c in range(4)]
        np.testing.assert_allclose(r["ap"], ref, rtol=1e-12, atol=1e-12)
        assert r["map"] == pytest.approx(np.nanmean(ref))
        assert 0 < np.nanmean(ref) < 1  # not a trivial case


def test_pycocotools_ap50_agrees_when_interpolations_coincide():
    # COCO's AP is 101-point; on a perfect detector and on a case with no false positives it
    # equals VOC's, which is all we can compare.
    pytest.importorskip("pycocotools")
    from ssd_keras.evaluation import coco_map

    gts = [_gt([BOX_A, BOX_B], [0, 1]), _gt([BOX_B], [1])]
    dets = [_det([BOX_A, BOX_B], [0.9, 0.8], [0, 1]), _det([BOX_B], [0.7], [1])]
    assert coco_map(dets, gts, 2)["map_50"] == pytest.approx(1.0)
    assert coco_map(dets, gts, 2)["map"] == pytest.approx(1.0)
    dets_half = [_det([BOX_A], [0.9], [0]), _det([BOX_B], [0.7], [1])]  # recall 1/2 for class 1
    voc = evaluate_detections(dets_half, gts, 2, use_07_metric=False)
    assert coco_map(dets_half, gts, 2)["map_50"] == pytest.approx(voc["map"], abs=1e-2)


def test_bad_input_errors_name_the_argument():
    gts = [_gt([BOX_A], [0])]
    with pytest.raises(ValueError, match="1 detection entries but 2 ground-truth"):
        evaluate_detections([_det([BOX_A], [1], [0])], gts * 2, 1)
    with pytest.raises(ValueError, match=r"detections\[0\].*class id 3 >= num_classes"):
        evaluate_detections([_det([BOX_A], [1], [3])], gts, 2)
    with pytest.raises(ValueError, match=r"detections\[0\].*differ in length"):
        evaluate_detections([_det([BOX_A], [1, 2], [0])], gts, 1)
    with pytest.raises(ValueError, match=r"ground_truths\[0\].*NaN"):
        evaluate_detections([_det([BOX_A], [1], [0])], [_gt([[np.nan] * 4], [0])], 1)
    for bad in (1.5, 0.0, -1.0, float("nan"), "0.5"):
        with pytest.raises(ValueError, match=r"iou_threshold must be in \(0, 1\]"):
            evaluate_detections([_det([BOX_A], [1], [0])], gts, 1, iou_threshold=bad)
    assert evaluate_detections([_det([BOX_A], [1], [0])], gts, 1, iou_threshold=np.float32(0.5))["map"] == pytest.approx(1.0)
    # Class ids are whole numbers: 0.7 is not class 0, and -5 is not padding.
    with pytest.raises(ValueError, match=r"detections\[0\]: class ids must be integers >= 0 \(-1 for padding\), got 0.7"):
        evaluate_detections([_det([BOX_A], [1], [0.7])], gts, 1)
    with pytest.raises(ValueError, match=r"ground_truths\[0\]: class ids must be integers .*got -5"):
        evaluate_detections([_det([BOX_A], [1], [0])], [_gt([BOX_A], [-5])], 1)
    for bad in (1.5, 0, True):  # int() cut 1.5 to 1 class
        with pytest.raises(ValueError, match=r"num_classes must be an integer >= 1"):
            evaluate_detections([_det([BOX_A], [1], [0])], gts, bad)
    assert evaluate_detections([_det([BOX_A], [1], [0])], gts, 1.0)["map"] == pytest.approx(1.0)


def test_pixel_boxes_are_refused_not_scored_zero():
    # Pixel ground truth against relative detections overlaps nowhere: AP 0 without a word.
    dets = [_det([BOX_A], [1], [0])]
    pixels = [_gt([[30, 30, 120, 120]], [0])]
    with pytest.raises(ValueError, match=r"ground_truths\[0\]: boxes must be relative yxyx \(ymin, xmin, ymax, "
                                         r"xmax\) in \[0, 1\], got coordinates in \[30, 120\]; pixel boxes\?"):
        evaluate_detections(dets, pixels, 1)
    with pytest.raises(ValueError, match=r"detections\[0\]: boxes must be relative yxyx .*got coordinates in \[30, 120\]"):
        evaluate_detections([_det([[30, 30, 120, 120]], [1], [0])], [_gt([BOX_A], [0])], 1)
    # Rounding at the edges of ground truth, and unclipped predictions sticking out, still score.
    edge = [0.0, 0.0, 1.005, 1.0]
    assert evaluate_detections([_det([edge], [1], [0])], [_gt([edge], [0])], 1)["map"] == pytest.approx(1.0)
    unclipped = [_det([[-0.5, -0.5, 1.5, 1.5]], [1], [0])]
    assert evaluate_detections(unclipped, [_gt([[0.0, 0.0, 1.0, 1.0]], [0])], 1, iou_threshold=0.25)["map"] == pytest.approx(1.0)


def test_padding_rows_are_dropped():
    y_true = np.array([[BOX_A + [0], BOX_B + [1], [0, 0, 0, 0, -1]]], np.float32)
    gts = ground_truths_from_y_true(y_true)
    assert len(gts[0][0]) == 2
    dets = [_det([BOX_A, BOX_B, [0, 0, 0, 0]], [0.9, 0.8, 0.0], [0, 1, -1])]
    assert evaluate_detections(dets, gts, 2)["map"] == pytest.approx(1.0)


def test_detection_function_and_evaluate_model_match_predict_plus_decode():
    import tensorflow as tf

    from ssd_keras.decode import decode_detections
    from ssd_keras.model import build_ssd

    anchors = AnchorConfig()
    model = build_ssd(2, anchors, backbone="tiny", image_size=64)
    images = np.random.default_rng(3).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    y_true = np.array([[BOX_A + [0], [0, 0, 0, 0, -1]], [BOX_B + [1], BOX_A + [0]],
                       [BOX_B + [0], [0, 0, 0, 0, -1]]], np.float32)
    want = decode_detections(model.predict(images, verbose=0), anchors, score_threshold=0.01)
    got = detection_function(model, anchors, score_threshold=0.01)(images)
    assert int(tf.reduce_sum(got["num_detections"])) > 0  # so that the comparison shows
    for key in ("boxes", "scores", "classes", "num_detections"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=key)

    ds = tf.data.Dataset.from_tensor_slices((images, y_true)).batch(2)
    result = evaluate_model(model, ds, anchors, 2, score_threshold=0.01)
    # The detections and ground truths it scored come back, in data-set order.
    assert len(result["detections"]) == len(result["ground_truths"]) == 3
    np.testing.assert_array_equal(result["ground_truths"][1][0], y_true[1, :, :4])
    again = evaluate_detections(result["detections"], result["ground_truths"], 2)
    assert again["map"] == pytest.approx(result["map"], nan_ok=True)
    np.testing.assert_allclose(again["ap"], result["ap"])

    # iou_threshold is the true-positive IoU; the NMS overlap is nms_iou_threshold.
    strict = decode_detections(model.predict(images, verbose=0), anchors, score_threshold=0.01,
                               iou_threshold=0.1)
    assert int(tf.reduce_sum(strict["num_detections"])) < int(tf.reduce_sum(want["num_detections"]))
    nms01 = evaluate_model(model, ds, anchors, 2, score_threshold=0.01, nms_iou_threshold=0.1)
    assert [len(d[0]) for d in nms01["detections"]] == [int(n) for n in strict["num_detections"]]
    loose = evaluate_model(model, ds, anchors, 2, score_threshold=0.01, iou_threshold=0.1)
    assert [len(d[0]) for d in loose["detections"]] == [int(n) for n in want["num_detections"]]
