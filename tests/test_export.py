"""ssd_keras.export: a SavedModel whose signature serves the detector's own detections, and TFLite
(raw y_pred, or builtin-op NMS), each equal to `SSDDetector.predict`."""

import json

import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.detector import SSDDetector
from ssd_keras.export import METADATA_NAME, export_savedmodel, export_tflite, run_tflite

NAMES = ["circle", "square", "triangle"]


@pytest.fixture(scope="module")
def tiny():
    detector = SSDDetector(NAMES, backbone="tiny", image_size=64, max_detections=20)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    return detector, images


def assert_same_detections(got, want, atol=1e-4):
    """Same number of detections, same classes, boxes and scores within `atol`."""
    got = {k: np.asarray(v) for k, v in got.items()}
    want = {k: np.asarray(v) for k, v in want.items()}
    np.testing.assert_array_equal(got["num_detections"], want["num_detections"])
    assert want["num_detections"].sum() > 0, "test needs some detections to compare"
    for i, n in enumerate(want["num_detections"]):
        n = int(n)
        np.testing.assert_array_equal(got["classes"][i, :n], want["classes"][i, :n])
        np.testing.assert_allclose(got["scores"][i, :n], want["scores"][i, :n], atol=atol)
        np.testing.assert_allclose(got["boxes"][i, :n], want["boxes"][i, :n], atol=atol)


def test_savedmodel_serves_the_same_detections_as_predict(tiny, tmp_path):
    detector, images = tiny
    path = export_savedmodel(detector, tmp_path / "sm")
    meta = json.loads((path / METADATA_NAME).read_text())
    assert meta["class_names"] == NAMES and meta["anchors"] == detector.anchors.get_config()
    assert meta["decoder"]["max_detections"] == 20 and meta["box_format"] == "rel_yxyx"
    served = tf.saved_model.load(str(path))
    want = detector.predict(images.astype(np.float32), verbose=0)
    assert_same_detections(served.serve(tf.constant(images, tf.float32)), want)
    assert_same_detections(served.serve_uint8(tf.constant(images)), want)
    # Another size is resized in the graph: the same as resizing first.
    big = tf.image.resize(tf.cast(images, tf.float32), (96, 80))
    assert_same_detections(served.serve(big), detector.predict(big.numpy(), verbose=0))


def test_savedmodel_decoder_overrides_are_recorded(tiny, tmp_path):
    detector, images = tiny
    path = export_savedmodel(detector, tmp_path / "sm", score_threshold=0.5)
    assert json.loads((path / METADATA_NAME).read_text())["decoder"]["score_threshold"] == 0.5
    served = tf.saved_model.load(str(path))  # kept: its variables die with it
    out = served.serve(tf.constant(images, tf.float32))
    assert np.all(out["scores"].numpy()[out["classes"].numpy() >= 0] > 0.5)


def test_tflite_raw_output_equals_the_model(tiny, tmp_path):
    detector, images = tiny
    path = export_tflite(detector, tmp_path / "m.tflite")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["outputs"] == "y_pred" and meta["class_names"] == NAMES
    got = run_tflite(path, images)["y_pred"]
    np.testing.assert_allclose(got, detector(images.astype(np.float32), training=False), atol=1e-4)


def test_tflite_with_builtin_nms_equals_predict(tiny, tmp_path):
    detector, images = tiny
    path = export_tflite(detector, tmp_path / "nms.tflite", include_nms=True)
    for i in range(len(images)):
        got = run_tflite(path, images[i:i + 1].astype(np.float32))
        assert_same_detections(got, detector.predict(images[i:i + 1].astype(np.float32), verbose=0))


def test_exports_need_a_detector(tiny, tmp_path):
    from ssd_keras.model import build_ssd

    with pytest.raises(TypeError, match="expected an SSDDetector"):
        export_savedmodel(build_ssd(3, backbone="tiny", image_size=64), tmp_path / "x")
