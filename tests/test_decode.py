"""decode_detections / DecodeDetections: hand-built cases with known answers, equality with a
plain numpy per-class greedy NMS, graph mode, serialisation, errors."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.decode import decode_detections, decode_detections_builtin_nms

# 2x2 grid, two zooms per cell: anchors 2i and 2i+1 share a centre, sizes 0.5 and 0.45, so
# their IoU is 0.81 (> 0.45); anchors of different cells do not overlap.
ANCHORS = AnchorConfig(grids=(2,), zooms=(1.0, 0.9), ratios=((1.0, 1.0),))


def _y_pred(logits):
    """Zero box activations (boxes = the anchors themselves) and the given class logits."""
    logits = np.asarray(logits, "float32")
    return np.concatenate([np.zeros(logits.shape[:-1] + (4,), "float32"), logits], -1)


def _logit(p):
    return float(np.log(p / (1 - p)))


def test_overlapping_boxes_same_class_keep_the_best():
    logits = np.full((1, 8, 3 + 1), -10.0)
    logits[0, 0, 1] = _logit(0.9)
    logits[0, 1, 1] = _logit(0.8)  # same cell, IoU 0.81 with anchor 0: suppressed
    out = decode_detections(_y_pred(logits), ANCHORS)
    assert int(out["num_detections"][0]) == 1
    assert out["classes"].numpy()[0, 0] == 1
    np.testing.assert_allclose(out["scores"].numpy()[0, 0], 0.9, rtol=1e-6)
    np.testing.assert_allclose(out["boxes"].numpy()[0, 0], ANCHORS.corners[0], atol=1e-6)
    assert np.all(out["classes"].numpy()[0, 1:] == -1)  # padding
    assert np.all(out["scores"].numpy()[0, 1:] == 0) and np.all(out["boxes"].numpy()[0, 1:] == 0)


def test_same_boxes_different_classes_both_survive():
    logits = np.full((1, 8, 4), -10.0)
    logits[0, 0, 0] = _logit(0.9)
    logits[0, 1, 2] = _logit(0.7)
    out = decode_detections(_y_pred(logits), ANCHORS)
    assert int(out["num_detections"][0]) == 2
    assert out["classes"].numpy()[0, :2].tolist() == [0, 2]
    np.testing.assert_allclose(out["boxes"].numpy()[0, 1], ANCHORS.corners[1], atol=1e-6)


def test_score_threshold_and_background_column():
    logits = np.full((2, 8, 4), -10.0)
    logits[0, 2, 0] = _logit(0.5)  # exactly at the threshold: dropped (scores must exceed it)
    logits[0, 4, 1] = _logit(0.51)
    logits[1, :, 3] = 10.0  # background column: never a detection
    out = decode_detections(_y_pred(logits), ANCHORS, score_threshold=0.5, max_detections=5)
    assert out["num_detections"].numpy().tolist() == [1, 0]
    assert out["classes"].numpy().tolist() == [[1, -1, -1, -1, -1], [-1] * 5]
    assert out["classes"].dtype == tf.int32 and out["boxes"].shape == (2, 5, 4)


def test_boxes_are_clipped_to_the_image():
    y = _y_pred(np.full((1, 8, 2), 5.0))
    y[0, :, :4] = 10.0  # tanh -> 1: centre moves half a cell down-right, size 1.5x
    out = decode_detections(y, ANCHORS, iou_threshold=1.0, max_detections=8)
    boxes = out["boxes"].numpy()[0, : int(out["num_detections"][0])]
    assert boxes.min() >= 0 and boxes.max() <= 1 and (boxes == 1).any()


def _iou(a, b):
    yx1 = np.maximum(a[:2], b[:, :2])
    yx2 = np.minimum(a[2:], b[:, 2:])
    inter = np.prod(np.clip(yx2 - yx1, 0, None), axis=1)
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def _numpy_decode(y_pred, anchors, score_thr, iou_thr, max_det, max_per_class):
    """Independent reference: lesson's actn_to_bb in numpy + per-class greedy NMS."""
    act = np.tanh(y_pred[..., :4].astype(np.float64))
    ctr = act[..., :2] / 2 * anchors.grid_sizes + anchors.centers[:, :2]
    hw = (act[..., 2:] / 2 + 1) * anchors.centers[:, 2:]
    boxes = np.clip(np.concatenate([ctr - hw / 2, ctr + hw / 2], -1), 0, 1)
    scores = 1 / (1 + np.exp(-y_pred[..., 4:-1].astype(np.float64)))
    results = []
    for b in range(y_pred.shape[0]):
        dets = []
        for c in range(scores.shape[-1]):
            idx = np.where(scores[b, :, c] > score_thr)[0]
            idx = idx[np.argsort(-scores[b, idx, c], kind="stable")]
            keep = []
            while len(idx) and len(keep) < max_per_class:
                i, idx = idx[0], idx[1:]
                keep.append(i)
                idx = idx[_iou(boxes[b, i], boxes[b, idx]) <= iou_thr]
            dets += [(scores[b, i, c], c, boxes[b, i]) for i in keep]
        dets.sort(key=lambda d: -d[0])
        results.append(dets[:max_det])
    return results


@pytest.mark.parametrize("max_per_class", [None, 3])
def test_equals_numpy_greedy_nms_on_random_inputs(max_per_class):
    anchors = AnchorConfig()
    rng = np.random.RandomState(1)
    y = rng.randn(3, anchors.num_anchors, 4 + 5 + 1).astype("float32")
    y[..., :4] *= 0.7
    y[..., 4:] = y[..., 4:] * 2 - 2
    out = decode_detections(y, anchors, 0.3, 0.45, max_detections=20, max_per_class=max_per_class)
    ref = _numpy_decode(y, anchors, 0.3, 0.45, 20, max_per_class or 20)
    for b, dets in enumerate(ref):
        n = int(out["num_detections"][b])
        assert n == len(dets) and n > 3
        np.testing.assert_allclose(out["scores"].numpy()[b, :n], [d[0] for d in dets], rtol=1e-5)
        assert out["classes"].numpy()[b, :n].tolist() == [d[1] for d in dets]
        np.testing.assert_allclose(out["boxes"].numpy()[b, :n], np.stack([d[2] for d in dets]), atol=1e-5)


def test_runs_in_graph_with_unknown_batch_and_matches_eager():
    anchors = AnchorConfig()
    y = np.random.RandomState(2).randn(2, anchors.num_anchors, 8).astype("float32")

    @tf.function(input_signature=[tf.TensorSpec([None, anchors.num_anchors, 8], tf.float32)])
    def f(y_pred):
        return decode_detections(y_pred, anchors, 0.2)

    graph, eager = f(y), decode_detections(y, anchors, 0.2)
    for key in eager:
        np.testing.assert_array_equal(graph[key].numpy(), eager[key].numpy())


@pytest.mark.parametrize("max_per_class", [None, 2])
def test_builtin_nms_variant_equals_combined_nms(max_per_class):
    """The TFLite-builtin decoder (one single-class NMS per class) gives combined NMS's answer,
    also when C * max_per_class < max_detections (padding candidates)."""
    anchors = AnchorConfig()
    y = np.random.RandomState(3).randn(1, anchors.num_anchors, 8).astype("float32") * 2
    want = decode_detections(y, anchors, 0.2, max_detections=9, max_per_class=max_per_class)
    got = decode_detections_builtin_nms(y, anchors, 0.2, max_detections=9, max_per_class=max_per_class)
    assert int(want["num_detections"][0]) > 2
    for key in want:
        np.testing.assert_allclose(np.asarray(got[key]), want[key].numpy(), atol=1e-6, err_msg=key)


def test_mixed_precision_y_pred_is_decoded_in_float32():
    anchors = AnchorConfig()
    y = np.random.RandomState(3).randn(2, anchors.num_anchors, 8).astype("float16")
    got = decode_detections(y, anchors, 0.2)
    want = decode_detections(y.astype("float32"), anchors, 0.2)
    assert got["boxes"].dtype == tf.float32
    for key in want:
        np.testing.assert_array_equal(got[key].numpy(), want[key].numpy())


def test_errors():
    with pytest.raises(ValueError, match="has 16 anchors but anchors has 189"):
        decode_detections(np.zeros((1, 16, 8), "float32"), AnchorConfig())
    with pytest.raises(ValueError, match=r"\[batch, A, 4 \+ C \+ 1\]"):
        decode_detections(np.zeros((16, 8), "float32"), AnchorConfig.single_grid(4))
    with pytest.raises(ValueError, match="iou_threshold"):
        decode_detections(np.zeros((1, 16, 8), "float32"), AnchorConfig.single_grid(4), iou_threshold=1.5)
    for bad in (1.5, 1.0, float("nan"), -0.1):
        with pytest.raises(ValueError, match=r"score_threshold must be in \[0, 1\)"):
            decode_detections(np.zeros((1, 16, 8), "float32"), AnchorConfig.single_grid(4), score_threshold=bad)
    # Counts are whole numbers: int() cut 2.7 to 2 and took True as 1, without a word.
    y = np.zeros((1, 16, 8), "float32")
    for arg, bad in (("max_detections", 2.7), ("max_detections", True), ("max_detections", 0),
                     ("max_per_class", 1.5), ("max_per_class", False)):
        with pytest.raises(ValueError, match=rf"decode: {arg} must be an integer >= 1, got {bad!r}"):
            decode_detections(y, AnchorConfig.single_grid(4), **{arg: bad})
        with pytest.raises(ValueError, match=rf"decode: {arg} must be an integer >= 1"):
            decode_detections_builtin_nms(y, AnchorConfig.single_grid(4), **{arg: bad})
    for whole in (4.0, np.int64(4)):
        out = decode_detections(y, AnchorConfig.single_grid(4), max_detections=whole, max_per_class=whole)
        assert out["boxes"].shape == (1, 4, 4)
    # TFLite's builtin NMS decodes one image; a batch would lose all but the first, silently.
    with pytest.raises(ValueError, match="one image per call .* got a batch of 2"):
        decode_detections_builtin_nms(np.zeros((2, 16, 8), "float32"), AnchorConfig.single_grid(4))
