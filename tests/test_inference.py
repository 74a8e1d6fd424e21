"""ssd_keras.inference: the one images → detections path. `predict`, `evaluate_model`, the val_map
callback, the SavedModel and the TFLite export all give the same detections for the same images."""

import numpy as np
import pytest
import tensorflow as tf

from ssd_keras.callbacks import MeanAveragePrecisionCallback
from ssd_keras.decode import decode_detections
from ssd_keras.detector import SSDDetector
from ssd_keras.evaluation import detections_from_decoded, evaluate_model
from ssd_keras.export import export_savedmodel, export_tflite, run_tflite
from ssd_keras.inference import detect, detect_files, detection_function, prepare_images

from test_export import assert_same_detections


@pytest.fixture(scope="module")
def tiny():
    detector = SSDDetector(["circle", "square", "triangle"], backbone="tiny", image_size=64,
                           max_detections=20)
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3)).astype(np.uint8)
    y_true = np.full((4, 1, 5), -1, np.float32)
    y_true[:, 0] = [0.1, 0.2, 0.6, 0.7, 1]
    return detector, images, y_true


def test_predict_is_model_then_decode(tiny):
    detector, images, _ = tiny
    want = decode_detections(detector(images.astype(np.float32)), detector.anchors,
                             **detector.decoder_settings)
    assert_same_detections(detector.predict(images, verbose=0), want, atol=1e-6)


def test_every_consumer_gives_predicts_detections(tiny, tmp_path):
    detector, images, y_true = tiny
    want = detector.predict(images.astype(np.float32), verbose=0)
    per_image = detections_from_decoded(want)
    threshold = detector.decoder_settings["score_threshold"] + 1e-3

    def same_lists(got):
        # Detections scoring above threshold + 1e-3: equal classes, boxes/scores within 1e-4.
        assert len(got) == len(per_image)
        for (gb, gs, gc), (wb, ws, wc) in zip(got, per_image):
            keep_g, keep_w = gs > threshold, ws > threshold
            np.testing.assert_array_equal(gc[keep_g], wc[keep_w])
            np.testing.assert_allclose(gs[keep_g], ws[keep_w], atol=1e-4)
            np.testing.assert_allclose(gb[keep_g], wb[keep_w], atol=1e-4)

    ds = tf.data.Dataset.from_tensor_slices((images.astype(np.float32), y_true)).batch(3)
    same_lists(evaluate_model(detector, ds)["detections"])
    same_lists(MeanAveragePrecisionCallback(ds).evaluate(detector)["detections"])
    served = tf.saved_model.load(str(export_savedmodel(detector, tmp_path / "sm")))
    same_lists(detections_from_decoded({k: v.numpy() for k, v in served.serve_uint8(images).items()}))
    path = export_tflite(detector, tmp_path / "m.tflite", include_nms=True)
    tflite = [run_tflite(path, images[i:i + 1].astype(np.float32)) for i in range(len(images))]
    same_lists([detections_from_decoded(t)[0] for t in tflite])


def test_images_of_any_size_and_dtype(tiny):
    detector, images, _ = tiny
    as_float = prepare_images(images, 64)
    assert as_float.dtype == tf.float32
    np.testing.assert_array_equal(as_float.numpy(), images.astype(np.float32))  # no resize at size
    big = prepare_images(images, 32)
    assert big.shape == (4, 32, 32, 3)
    np.testing.assert_allclose(big, tf.image.resize(images.astype(np.float32), (32, 32)))
    other = tf.image.resize(images.astype(np.float32), (50, 90))
    got = detect(detector, other, detector.anchors, 64)
    want = detect(detector, tf.image.resize(other, (64, 64)), detector.anchors, 64)
    assert_same_detections(got, want, atol=1e-6)


def test_detection_function_needs_anchors_for_a_raw_model():
    from ssd_keras.model import build_ssd

    raw = build_ssd(3, backbone="tiny", image_size=64)
    with pytest.raises(ValueError, match="pass anchors="):
        detection_function(raw)
    run = detection_function(raw, detector_anchors := SSDDetector(3, backbone="tiny", image_size=64).anchors)
    assert run(np.zeros((1, 64, 64, 3), np.float32))["boxes"].shape == (1, 100, 4)
    del detector_anchors


def test_bad_images_are_named(tiny, tmp_path):
    detector = tiny[0]
    with pytest.raises(ValueError, match=r"images must be \[batch, height, width, 3\]"):
        prepare_images(np.zeros((2, 8, 8), np.float32), 64)
    with pytest.raises(ValueError, match="nms must be one of"):
        detect(detector, np.zeros((1, 64, 64, 3)), detector.anchors, nms="soft")
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG broken")
    with pytest.raises(ValueError, match="bad.png: not a readable image"):
        detect_files(detector, [bad])
    results, skipped = detect_files(detector, [bad, tmp_path / "missing.jpg"], on_error="skip")
    assert results == [] and [s[0] for s in skipped] == [str(bad), str(tmp_path / "missing.jpg")]
    assert skipped[1][1] == "file not found"
    # A function traced for any shape (a second image size retraces it so) checks the channels
    # when it runs, instead of failing inside the first convolution.
    run = detection_function(detector)
    run(np.zeros((1, 64, 64, 3), np.uint8))
    run(np.zeros((1, 32, 32, 3), np.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"detect: images must be \[batch, height, width, 3\]"):
        run(np.zeros((1, 48, 48, 1), np.uint8))
    # TensorFlow's reason, without its function-node and op decorations.
    assert skipped[0][1].startswith("not a readable image (") and "function_node" not in skipped[0][1]
    assert "[Op:" not in skipped[0][1]
