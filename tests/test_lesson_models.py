"""Tests of ssd_keras.lesson_models: targets against hand-computed cases, losses and metrics
against numpy references, serialisation round trips, and a few training steps."""

import logging

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssd_keras import lesson_models as lm
from ssd_keras.data import Record, make_shapes


def _record(boxes, classes, size=32, image_id="r"):
    image = np.random.default_rng(len(classes)).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Record(image_id=image_id, path=None, image=image, boxes=np.asarray(boxes, np.float32).reshape(-1, 4),
                  classes=classes, difficult=np.zeros(len(classes), bool), width=size, height=size)


def _pad(rows, m):
    out = np.tile(np.array([[0, 0, 0, 0, -1]], np.float32), (m, 1))
    out[: len(rows)] = np.asarray(rows, np.float32).reshape(-1, 5)
    return out


# ------------------------------------------------------------------------------------------
# Targets
# ------------------------------------------------------------------------------------------

# (boxes relative yxyx, classes, expected index of the largest object)
CASES = [
    ([[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.9, 0.9]], [3, 1], 1),       # later one larger (0.64 > 0.25)
    ([[0.0, 0.0, 0.5, 0.2], [0.5, 0.5, 0.7, 1.0], [0, 0, .1, .1]], [2, 4, 0], 0),  # tie 0.1 = 0.1: first
    ([[0.2, 0.2, 0.3, 0.3], [0.0, 0.0, 0.4, 0.5], [0.5, 0.5, 0.9, 1.0]], [5, 0, 1], 1),  # tie of 2nd/3rd
    ([[0.25, 0.25, 0.75, 0.75]], [2], 0),                              # one object
    (np.zeros((0, 4)), [], -1),                                        # no object
]


@pytest.mark.parametrize("boxes,classes,expect", CASES)
def test_largest_object_index_and_targets(boxes, classes, expect):
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    assert lm.largest_object_index(boxes) == expect
    want = [0, 0, 0, 0, -1] if expect < 0 else [*boxes[expect], classes[expect]]
    got = lm.largest_object_targets([_record(boxes, classes)])
    np.testing.assert_allclose(got, [want])
    y_true = _pad(np.concatenate([boxes, np.asarray(classes, np.float32)[:, None]], 1), 4)[None]
    np.testing.assert_allclose(lm.largest_object_targets(y_true).numpy(), [want])


def test_largest_object_targets_batch_padding_and_rounding():
    # Pixel boxes of equal area (30 x 40 = 40 x 30 px) at 224 px: the relative float32 areas
    # differ in the last bits (b's is larger), still a tie -> the first, as with the lesson's
    # integer pixel areas.
    a = np.array([0, 0, 30, 40], np.float32) / np.float32(224)
    b = np.array([1, 3, 41, 33], np.float32) / np.float32(224)
    area = lambda x: (x[2] - x[0]) * (x[3] - x[1])
    assert area(a) < area(b)  # the rounding this test is about
    assert lm.largest_object_index(np.stack([a, b])) == 0
    y_true = np.stack([
        _pad([[*b, 1], [*a, 2]], 4),                       # tie: b first
        _pad([[*a, 2], [*b, 1]], 4),                       # tie: a first
        _pad([], 4),                                       # no object
        _pad([[0.1, 0.1, 0.2, 0.2, 3], [0.0, 0.0, 0.9, 0.9, 5]], 4),
    ])
    # Padding rows with a (bogus) large box must never win.
    y_true[3, 3] = [0, 0, 1, 1, -1]
    got = lm.largest_object_targets(y_true).numpy()
    np.testing.assert_allclose(got, [[*b, 1], [*a, 2], [0, 0, 0, 0, -1], [0, 0, 0.9, 0.9, 5]])


def test_largest_object_targets_records_agree_with_y_true():
    data = make_shapes(12, image_size=32, split="val", min_size=0.2, max_size=0.6, max_objects=4)
    from_records = lm.largest_object_targets(data)
    _, y_true = next(iter(data.dataset(32, 12)))
    np.testing.assert_allclose(lm.largest_object_targets(y_true).numpy(), from_records, atol=1e-6)


def test_largest_object_targets_bad_shape():
    with pytest.raises(ValueError, match=r"\[batch, max_boxes, 5\]"):
        lm.largest_object_targets(np.zeros((2, 5), np.float32))


def test_multi_hot():
    recs = [_record([[0, 0, .5, .5], [.5, .5, 1, 1], [0, 0, .2, .2]], [2, 0, 2]), _record(np.zeros((0, 4)), [])]
    want = np.array([[1, 0, 1, 0], [0, 0, 0, 0]], np.float32)  # repeats count once; empty: zeros
    np.testing.assert_array_equal(lm.multi_hot(recs, 4), want)
    y_true = np.stack([_pad([[0, 0, .5, .5, 2], [.5, .5, 1, 1, 0], [0, 0, .2, .2, 2]], 5), _pad([], 5)])
    np.testing.assert_array_equal(lm.multi_hot(y_true, 4).numpy(), want)
    with pytest.raises(ValueError, match="outside"):
        lm.multi_hot(recs, 2)


def test_single_object_dataset_skips_empty_images(caplog):
    recs = [_record([[0, 0, .5, .5], [0, 0, 1, 1]], [1, 3], image_id="a"), _record(np.zeros((0, 4)), [], image_id="b"),
            _record([[.2, .2, .4, .6]], [0], image_id="c")]
    with caplog.at_level(logging.WARNING, logger="ssd_keras.lesson_models"):
        ds = lm.single_object_dataset(recs, 32, 8)
    assert "skipped 1 of 3 image(s) without objects" in caplog.text
    images, targets = next(iter(ds))
    assert images.shape == (2, 32, 32, 3)
    np.testing.assert_allclose(targets.numpy(), [[0, 0, 1, 1, 3], [.2, .2, .4, .6, 0]], atol=1e-6)
    with pytest.raises(ValueError, match="no image has an object"):
        lm.single_object_dataset(recs[1:2], 32, 8)


def test_multilabel_dataset():
    data = make_shapes(6, image_size=32, split="val", max_objects=4)
    images, targets = next(iter(lm.multilabel_dataset(data, 32, 6)))
    assert images.shape == (6, 32, 32, 3)
    np.testing.assert_array_equal(targets.numpy(), lm.multi_hot(data, data.num_classes))


# ------------------------------------------------------------------------------------------
# Models
# ------------------------------------------------------------------------------------------


def test_model_output_shapes():
    x = np.random.default_rng(0).uniform(0, 255, (3, 64, 64, 3)).astype(np.float32)
    det = lm.build_single_object_detector(5, backbone="tiny", image_size=64)
    y = det.predict(x, verbose=0)
    assert y.shape == (3, 9) and y.dtype == np.float32
    assert np.all((y[:, :4] > 0) & (y[:, :4] < 1))  # sigmoid boxes
    assert det.get_layer("flatten").output.shape == (None, 4 * 4 * 128)
    assert det.get_layer("hidden").units == 256
    for pooling, width in (("concat", 256), ("avg", 128), ("max", 128)):
        clf = lm.build_multilabel_classifier(5, backbone="tiny", image_size=64, pooling=pooling)
        assert clf.get_layer("pool").output.shape == (None, width)
        assert clf.predict(x, verbose=0).shape == (3, 5)
    with pytest.raises(ValueError, match="pooling"):
        lm.build_multilabel_classifier(5, backbone="tiny", image_size=64, pooling="mean")


def test_lesson_resnet34_head_width():
    # The lesson's head_reg4: Linear(25088, 256) on ResNet34's 7 x 7 x 512 map at 224 px.
    det = lm.build_single_object_detector(20, backbone="resnet34", image_size=224)
    assert det.get_layer("flatten").output.shape == (None, 25088)
    assert det.output.shape == (None, 24)


# ------------------------------------------------------------------------------------------
# Loss and metrics against numpy
# ------------------------------------------------------------------------------------------

Y_TRUE = np.array([[0.1, 0.2, 0.5, 0.6, 2], [0.0, 0.0, 1.0, 1.0, 0], [0, 0, 0, 0, -1]], np.float32)
Y_PRED = np.array([[0.1, 0.3, 0.4, 0.6, 0.5, -1.0, 2.0],
                   [0.2, 0.1, 0.7, 0.5, 3.0, 1.0, -2.0],
                   [0.9, 0.9, 0.1, 0.1, 9.0, 9.0, 9.0]], np.float32)


def _np_ce(logits, label):
    z = logits - logits.max()
    return np.log(np.exp(z).sum()) - z[label]


def test_single_object_loss_matches_numpy():
    for w in (lm.LESSON_BOX_WEIGHT, 1.0, 0.0):
        want = [w * np.abs(Y_PRED[i, :4] - Y_TRUE[i, :4]).mean() + _np_ce(Y_PRED[i, 4:], int(Y_TRUE[i, 4]))
                for i in range(2)] + [0.0]  # the row without an object adds 0
        got = lm.SingleObjectLoss(w)(Y_TRUE, Y_PRED).numpy()
        np.testing.assert_allclose(got, np.mean(want), rtol=1e-6)


def test_single_object_loss_is_lesson_detn_loss_over_20():
    # detn_loss = l1(224 * box) + 20 * cross_entropy, batch means (all rows with an object).
    yt, yp = Y_TRUE[:2], Y_PRED[:2]
    l1_px = np.abs(224 * yp[:, :4] - 224 * yt[:, :4]).mean()
    ce = np.mean([_np_ce(yp[i, 4:], int(yt[i, 4])) for i in range(2)])
    np.testing.assert_allclose(20 * lm.SingleObjectLoss()(yt, yp).numpy(), l1_px + 20 * ce, rtol=1e-5)


def test_single_object_loss_bad_input():
    with pytest.raises(ValueError, match=r"\[batch, 5\]"):
        lm.SingleObjectLoss()(np.zeros((2, 3, 5), np.float32), Y_PRED[:2])
    with pytest.raises(tf.errors.InvalidArgumentError, match="class ids"):
        lm.SingleObjectLoss()(np.array([[0, 0, 1, 1, 3]], np.float32), Y_PRED[:1])  # 3 classes: 0..2
    with pytest.raises(ValueError, match="box_weight"):
        lm.SingleObjectLoss(-1.0)


def test_box_iou_pairs():
    a = np.array([[0, 0, .5, .5], [0, 0, .5, .5], [0, 0, .5, 1], [.5, .5, .2, .2]], np.float32)
    b = np.array([[0, 0, .5, .5], [.5, .5, 1, 1], [0, .5, .5, 1.5], [0, 0, 1, 1]], np.float32)
    # same box; disjoint; half overlap (1/3); inverted predicted box (no area)
    np.testing.assert_allclose(lm.box_iou_pairs(a, b).numpy(), [1, 0, 1 / 3, 0], atol=1e-6)
    from ssd_keras.boxes import jaccard

    np.testing.assert_allclose(lm.box_iou_pairs(a[:3], b[:3]), np.diag(jaccard(a[:3], b[:3])), atol=1e-6)


def test_single_object_metrics():
    acc, iou, l1 = lm.single_object_metrics()
    for m in (acc, iou, l1):
        m.update_state(Y_TRUE[:1], Y_PRED[:1])
        m.update_state(Y_TRUE[1:], Y_PRED[1:])  # with the row without an object, left out
    # row 0: argmax 2 == 2; row 1: argmax 0 == 0
    assert acc.result().numpy() == pytest.approx(1.0)
    ious = [lm.box_iou_pairs(Y_PRED[i:i + 1, :4], Y_TRUE[i:i + 1, :4]).numpy()[0] for i in range(2)]
    # row 0: pred [.1,.3,.4,.6] (0.09) inside true [.1,.2,.5,.6] (0.16): 0.09/0.16
    np.testing.assert_allclose(ious[0], 0.09 / 0.16, rtol=1e-5)
    assert iou.result().numpy() == pytest.approx(np.mean(ious), rel=1e-6)
    assert l1.result().numpy() == pytest.approx(np.abs(Y_PRED[:2, :4] - Y_TRUE[:2, :4]).mean(), rel=1e-6)
    acc.reset_state()
    acc.update_state(Y_TRUE[:2], Y_PRED[[1, 0]])
    assert acc.result().numpy() == pytest.approx(0.0)


def test_multilabel_loss_matches_numpy():
    t = np.array([[1, 0, 1], [0, 0, 0]], np.float32)
    x = np.array([[2.0, -1.0, 0.3], [-3.0, 0.5, 4.0]], np.float32)
    p = 1 / (1 + np.exp(-x.astype(np.float64)))
    want = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean()
    np.testing.assert_allclose(lm.multilabel_loss()(t, x).numpy(), want, rtol=1e-5)


def test_multilabel_f1():
    t = np.array([[1, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0]], np.float32)
    x = np.array([[2.0, 1.0, -1.0, -3.0], [0.0, 3.0, 1.0, -1.0], [-1.0, -1.0, -1.0, -1.0]], np.float32)
    # predicted where logit > 0 (sigmoid > 0.5; logit 0 is not): tp = 2 ((0,0), (1,1)),
    # fp = 2 ((0,1), (1,2)), fn = 1 ((0,2)): F1 = 4 / (4 + 2 + 1)
    f1 = lm.MultiLabelF1()
    f1.update_state(t[:2], x[:2])
    f1.update_state(t[2:], x[2:])
    assert f1.result().numpy() == pytest.approx(4 / 7)
    ref = keras.metrics.F1Score(average="micro", threshold=0.5)
    ref.update_state(t, 1 / (1 + np.exp(-x)))
    assert f1.result().numpy() == pytest.approx(float(ref.result()), rel=1e-6)
    prob = lm.MultiLabelF1(threshold=0.9, from_logits=False)
    prob.update_state(t, np.array([[0.95, 0, .8, 0], [0, .95, 0, 0], [0, 0, 0, 0]], np.float32))
    assert prob.result().numpy() == pytest.approx(2 * 2 / (2 * 2 + 0 + 1))
    empty = lm.MultiLabelF1()
    empty.update_state(t[2:], x[2:])
    assert empty.result().numpy() == 0.0


# ------------------------------------------------------------------------------------------
# Serialisation
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("obj", [
    lm.SingleObjectLoss(3.5), lm.SingleObjectAccuracy(), lm.SingleObjectIoU(name="iou"),
    lm.SingleObjectL1(), lm.MultiLabelF1(threshold=0.3, from_logits=False), lm.BoxSigmoid(name="b"),
    lm.ConcatPooling(name="p"),
])
def test_get_config_round_trip(obj):
    again = type(obj).from_config(obj.get_config())
    assert again.get_config() == obj.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
    assert type(restored) is type(obj) and restored.get_config() == obj.get_config()


def test_keras_save_load_round_trip(tmp_path):
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    det = lm.build_single_object_detector(4, backbone="tiny", image_size=32, hidden=16)
    det.compile("adam", lm.SingleObjectLoss(2.0), metrics=lm.single_object_metrics())
    clf = lm.build_multilabel_classifier(4, backbone="tiny", image_size=32)
    clf.compile("adam", lm.multilabel_loss(), metrics=[lm.MultiLabelF1(threshold=0.4)])
    targets = {det: np.array([[.1, .2, .5, .6, 1], [0, 0, 1, 1, 3]], np.float32),
               clf: np.array([[1, 0, 0, 1], [0, 0, 0, 0]], np.float32)}
    for model in (det, clf):
        model.train_on_batch(x, targets[model])  # builds the optimizer: its state is saved too
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path)  # plain Keras: everything is registered
        np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    loaded = keras.saving.load_model(tmp_path / "single_object.keras")
    assert isinstance(loaded.loss, lm.SingleObjectLoss) and loaded.loss.box_weight == 2.0


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", ["single", "multi"])
def test_a_few_steps_lower_the_loss(task):
    data = make_shapes(16, image_size=32, split="val", min_size=0.2, max_size=0.6, max_objects=4)
    if task == "single":
        model = lm.build_single_object_detector(data.num_classes, backbone="tiny", image_size=32, dropout=0.0)
        model.compile(keras.optimizers.Adam(1e-3), lm.SingleObjectLoss(), metrics=lm.single_object_metrics())
        ds = lm.single_object_dataset(data, 32, 16)
    else:
        model = lm.build_multilabel_classifier(data.num_classes, backbone="tiny", image_size=32, dropout=0.0)
        model.compile(keras.optimizers.Adam(1e-3), lm.multilabel_loss(), metrics=[lm.MultiLabelF1()])
        ds = lm.multilabel_dataset(data, 32, 16)
    x, y = next(iter(ds))
    # Training-mode losses on one batch (batch-norm statistics of the batch, no dropout).
    losses = [float(model.train_on_batch(x, y, return_dict=True)["loss"]) for _ in range(12)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.8 * losses[0], losses
