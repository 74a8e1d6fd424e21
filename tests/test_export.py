"""ssd_keras.export: `.keras` + metadata round trip, SavedModel with in-graph NMS, TFLite.

Every exported output is compared with the reference path `model.predict` +
`decode_detections` on the same images (tiny body, 64 px, the lesson's 189 anchors).
"""

import json
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.decode import decode_detections
from ssd_keras.export import (
    METADATA_NAME,
    export_savedmodel,
    export_tflite,
    load_model,
    read_metadata,
    run_tflite,
    save_model,
    write_metadata,
)
from ssd_keras.model import build_ssd

NAMES = ["circle", "square", "triangle"]
DECODE = dict(score_threshold=0.01, iou_threshold=0.45, max_detections=20)


@pytest.fixture(scope="module")
def tiny():
    anchors = AnchorConfig()
    model = build_ssd(len(NAMES), anchors, backbone="tiny", image_size=64)
    images = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3)).astype(np.uint8)
    return model, anchors, images


def _reference(model, anchors, images):
    y_pred = model.predict(np.asarray(images, np.float32), verbose=0)
    return {k: v.numpy() for k, v in decode_detections(y_pred, anchors, **DECODE).items()}


def _assert_same_detections(got, want, atol=1e-4):
    np.testing.assert_array_equal(np.asarray(got["num_detections"]), want["num_detections"])
    assert want["num_detections"].sum() > 0, "test needs some detections to compare"
    for i, n in enumerate(want["num_detections"]):
        n = int(n)
        np.testing.assert_array_equal(np.asarray(got["classes"])[i, :n], want["classes"][i, :n])
        np.testing.assert_allclose(np.asarray(got["scores"])[i, :n], want["scores"][i, :n], atol=atol)
        np.testing.assert_allclose(np.asarray(got["boxes"])[i, :n], want["boxes"][i, :n], atol=atol)


def test_keras_round_trip_keeps_predictions_and_metadata(tiny, tmp_path):
    model, anchors, images = tiny
    path = tmp_path / "m.keras"
    save_model(model, path, NAMES, anchors, extra={"backbone": "tiny"})
    with zipfile.ZipFile(path) as zf:  # the metadata travels inside the one file
        assert METADATA_NAME in zf.namelist()
    loaded, info = load_model(path)
    assert info.class_names == NAMES and info.anchors == anchors
    assert info.image_size == 64 and info.extra == {"backbone": "tiny"}
    x = images.astype(np.float32)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)


def test_metadata_found_next_to_plain_keras_files(tiny, tmp_path):
    model, anchors, _ = tiny
    ckpt_dir = tmp_path / "run" / "checkpoints"
    ckpt_dir.mkdir(parents=True)
    path = ckpt_dir / "epoch_1.keras"
    model.save(path)  # e.g. written by ModelCheckpoint: no metadata inside
    with pytest.raises(FileNotFoundError, match="epoch_1.keras: no ssd_keras metadata"):
        read_metadata(path)
    write_metadata(tmp_path / "run" / METADATA_NAME, NAMES, anchors, 64)  # the train folder
    assert read_metadata(path).class_names == NAMES
    path.with_suffix(".json").write_text(json.dumps(  # a sidecar wins over the folder's file
        {"class_names": ["a", "b", "c"], "anchors": anchors.get_config()}))
    assert read_metadata(path).class_names == ["a", "b", "c"]


def test_metadata_that_does_not_fit_the_model_is_an_error(tiny, tmp_path):
    model, anchors, _ = tiny
    with pytest.raises(ValueError, match="predicts 3 classes but the metadata names 2"):
        save_model(model, tmp_path / "m.keras", NAMES[:2], anchors)
    with pytest.raises(ValueError, match="has 189 anchors but"):
        save_model(model, tmp_path / "m.keras", NAMES, AnchorConfig.single_grid(4))
    with pytest.raises(ValueError, match="must end in .keras"):
        save_model(model, tmp_path / "m.h5", NAMES, anchors)
    with pytest.raises(FileNotFoundError, match="model file not found"):
        load_model(tmp_path / "missing.keras")


def test_savedmodel_serves_the_same_detections_as_predict_and_decode(tiny, tmp_path):
    model, anchors, images = tiny
    path = export_savedmodel(model, anchors, tmp_path / "sm", class_names=NAMES, **DECODE)
    want = _reference(model, anchors, images)
    loaded = tf.saved_model.load(str(path))
    _assert_same_detections(loaded.serve(tf.constant(images, tf.float32)), want)
    _assert_same_detections(loaded.serve_uint8(tf.constant(images)), want)
    sig = loaded.signatures["serving_default"]  # what TF Serving calls
    _assert_same_detections(sig(images=tf.constant(images, tf.float32)), want)
    # Another batch size and another image size (squashed in-graph, as the lesson's CropType.NO).
    big = tf.image.resize(tf.constant(images[:1], tf.float32), (96, 80))
    want_big = _reference(model, anchors, tf.image.resize(big, (64, 64)).numpy())
    _assert_same_detections(loaded.serve(big), want_big)
    meta = json.loads((path / METADATA_NAME).read_text())
    assert meta["class_names"] == NAMES and meta["anchors"] == anchors.get_config()


def test_tflite_raw_output_equals_predict(tiny, tmp_path):
    model, anchors, images = tiny
    path = export_tflite(model, tmp_path / "m.tflite", anchors=anchors, class_names=NAMES)
    got = run_tflite(path, images.astype(np.float32))["y_pred"]
    want = model.predict(images.astype(np.float32), verbose=0)
    np.testing.assert_allclose(got, want, atol=1e-4)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["extra"]["tflite_outputs"] == "y_pred" and meta["class_names"] == NAMES


def test_tflite_with_builtin_nms_equals_predict_and_decode(tiny, tmp_path):
    model, anchors, images = tiny
    path = export_tflite(model, tmp_path / "nms.tflite", anchors=anchors, include_nms=True, **DECODE)
    for i in range(len(images)):  # one image per call (the on-device case)
        one = images[i : i + 1].astype(np.float32)
        _assert_same_detections(run_tflite(path, one), _reference(model, anchors, one))
    with pytest.raises(ValueError, match="include_nms=True needs anchors"):
        export_tflite(model, tmp_path / "x.tflite", include_nms=True)
