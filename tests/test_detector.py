"""ssd_keras.detector.SSDDetector: owns anchors, class names, loss and decoder; fit with y_true
or keras-hub label dicts; loc/clas from one matching; building from presets; errors."""

import keras
import numpy as np
import pytest

from ssd_keras.anchors import AnchorConfig
from ssd_keras.detector import SSDDetector
from ssd_keras.losses import SSDLoss
from ssd_keras.presets import PRESETS


def _batch(n=4, size=64, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, size, size, 3)).astype("float32")
    y = np.full((n, 3, 5), -1, np.float32)
    y[:, 0] = [0.1, 0.2, 0.6, 0.7, 1]
    y[1:, 1] = [0.5, 0.5, 0.9, 0.95, 0]
    return x, y


@pytest.fixture(scope="module")
def detector():
    return SSDDetector.from_preset("demo_tiny64", class_names=["a", "b", "c"])


def test_compile_defaults_to_its_own_ssd_loss_and_logs_loc_and_clas(detector):
    detector.compile()
    assert isinstance(detector.loss, SSDLoss) and detector.loss.anchors == detector.anchors
    assert detector.loss.focal == (0.25, 1.0) and detector.loss.pos_threshold == 0.3
    assert detector.loss.loc_weight == 4.0  # the demo preset's
    x, y = _batch()
    logs = detector.evaluate(x, y, batch_size=4, return_dict=True, verbose=0)
    parts = detector.default_loss().components(y, detector(x))
    assert logs["loc"] == pytest.approx(float(np.mean(parts["loc"])), rel=1e-5)
    assert logs["clas"] == pytest.approx(float(np.mean(parts["clas"])), rel=1e-5)
    assert logs["loss"] == pytest.approx(4.0 * logs["loc"] + logs["clas"], rel=1e-5)


def test_other_losses_log_no_loc_clas(detector):
    clone = SSDDetector.from_config(detector.get_config())
    clone.compile(loss="mse")
    x, y = _batch()
    logs = clone.evaluate(x, np.zeros((4, detector.anchors.num_anchors, 8), np.float32), return_dict=True,
                          verbose=0)
    assert set(logs) == {"loss"}
    del y


@pytest.mark.parametrize("fmt, scale", [("rel_yxyx", None), ("xyxy", "pixels"), ("rel_xywh", "xywh")])
def test_keras_hub_label_dicts_give_the_same_loss_as_y_true(detector, fmt, scale):
    x, y = _batch()
    boxes = y[..., :4].copy()
    if scale == "pixels":
        boxes = boxes[..., [1, 0, 3, 2]] * 64
    elif scale == "xywh":
        boxes = np.stack([boxes[..., 1], boxes[..., 0], boxes[..., 3] - boxes[..., 1],
                          boxes[..., 2] - boxes[..., 0]], -1)
    boxes[y[..., 4] < 0] = -1  # keras-hub pads boxes with -1 too
    d = SSDDetector.from_config(dict(detector.get_config(), bounding_box_format=fmt))
    d.set_weights(detector.get_weights())
    d.compile()
    want = d.evaluate(x, y, return_dict=True, verbose=0)
    got = d.evaluate(x, {"boxes": boxes, "classes": y[..., 4]}, return_dict=True, verbose=0)
    assert got == pytest.approx(want, rel=1e-5)


def test_fit_lowers_the_loss_and_predict_returns_detections(detector):
    x, y = _batch(8)
    d = SSDDetector.from_config(detector.get_config())
    d.compile(optimizer=keras.optimizers.Adam(3e-3))
    hist = d.fit(x, y, epochs=6, batch_size=4, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    out = d.predict(x[:2], verbose=0)
    assert out["boxes"].shape == (2, 100, 4) and out["classes"].dtype == np.int32
    assert out["num_detections"].shape == (2,)


def test_raw_shares_the_weights(detector):
    x, _ = _batch(2)
    np.testing.assert_array_equal(detector.raw(x), detector(x))
    assert detector.raw.get_layer("head") is detector.get_layer("head")


def test_from_preset_builds_each_preset():
    lesson = SSDDetector.from_preset("lesson_resnet34_224")
    assert lesson.num_classes == 20 and lesson.anchors == AnchorConfig() and lesson.image_size == 224
    assert lesson.output_shape == (None, 189, 4 + 20 + 1)
    assert lesson.metadata["preset"] == "lesson_resnet34_224"
    # The demo's: the lesson's grids plus tiny8's own 8x8 map, zooms 1 and 1.3 (k = 6).
    demo = SSDDetector.from_preset("demo_tiny64")
    assert (demo.anchors.grids, demo.anchors.k, demo.anchors.num_anchors) == ((8, 4, 2, 1), 6, 510)
    assert demo.output_shape == (None, 510, 4 + 6 + 1)
    assert f"({demo.anchors.num_anchors} anchors)" in PRESETS["demo_tiny64"]["description"]
    with pytest.raises(ValueError, match="unknown preset 'yolo'"):
        SSDDetector.from_preset("yolo")


def test_bad_settings_fail_at_construction():
    with pytest.raises(ValueError, match="bounding_box_format must be one of"):
        SSDDetector(["a"], backbone="tiny", image_size=64, bounding_box_format="cxcywh")
    with pytest.raises(ValueError, match="at least one class"):
        SSDDetector([], backbone="tiny", image_size=64)
    with pytest.raises(ValueError, match="unique"):
        SSDDetector(["a", "a"], backbone="tiny", image_size=64)
    # The first argument is the class names or their number: a float count or a bare string
    # (one class per letter) is neither.
    for bad in (3.0, "cat", True, None):
        with pytest.raises(TypeError, match=rf"SSDDetector: class_names must be a list of class names "
                                            rf"\(e.g. \['cat', 'dog'\]; one class: \['cat'\]\) or an int "
                                            rf"number of classes, got {bad!r}"):
            SSDDetector(bad, backbone="tiny", image_size=64)
    assert SSDDetector(np.int64(2), backbone="tiny", image_size=64).class_names == ["class_0", "class_1"]
    with pytest.raises(ValueError, match="focal"):
        SSDDetector(["a"], backbone="tiny", image_size=64, focal=(2.0, 1.0))
    # int() cut 2.7 detections to 2 and took True as 1; a whole float (a JSON config) is fine.
    for bad in (2.7, True, 0):
        with pytest.raises(ValueError, match=rf"SSDDetector: max_detections must be an integer >= 1, got {bad!r}"):
            SSDDetector(["a"], backbone="tiny", image_size=64, max_detections=bad)
    for whole in (7.0, np.int32(7)):
        settings = SSDDetector(["a"], backbone="tiny", image_size=64, max_detections=whole).decoder_settings
        assert settings["max_detections"] == 7 and type(settings["max_detections"]) is int
    # The decoder's thresholds fail here, not at the first predict.
    for arg, bad, expected in (("score_threshold", 1.0, r"in \[0, 1\)"), ("score_threshold", True, r"in \[0, 1\)"),
                               ("iou_threshold", -0.1, r"in \[0, 1\]"), ("iou_threshold", float("nan"), r"in \[0, 1\]")):
        with pytest.raises(ValueError, match=rf"SSDDetector: {arg} must be a number {expected}, got"):
            SSDDetector(["a"], backbone="tiny", image_size=64, **{arg: bad})
    d = SSDDetector(["a"], backbone="tiny", image_size=64)
    d.compile()
    x, y = _batch(2)
    with pytest.raises(ValueError, match="exactly the keys 'boxes'"):
        d.evaluate(x, {"bboxes": y[..., :4], "classes": y[..., 4]}, verbose=0)


def test_save_refuses_the_legacy_h5_format(detector, tmp_path):
    with pytest.raises(ValueError, match=r"m.h5 is the legacy H5 format, which ssd_keras.load_model does not read; "
                                         r"save as .keras"):
        detector.save(tmp_path / "m.h5")
    assert not (tmp_path / "m.h5").exists()
    detector.save(tmp_path / "m.keras")
    detector.save_weights(tmp_path / "m.weights.h5")  # weights alone stay Keras' business
    assert {p.name for p in tmp_path.iterdir()} == {"m.keras", "m.weights.h5"}
