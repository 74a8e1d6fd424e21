"""Shipping a trained detector: a SavedModel with in-graph NMS, and TFLite.

The SavedModel, and the TFLite file with `include_nms=True`, run `SSDDetector.detect`
(`ssd_keras.inference.detect`), the same images → detections path that `predict` and
`evaluate` use; the default TFLite file is the raw model:

- `export_savedmodel` writes a SavedModel whose serving signature takes images (uint8 or float
  0–255, any size) and returns decoded, NMS-filtered detections
  (`tf.image.combined_non_max_suppression`), plus `ssd_keras.json` (class names, anchors,
  decoder settings) for whoever reads the outputs.
- `export_tflite` converts to TFLite with builtin ops only. The default exports the raw
  `y_pred` (any batch; decode on the host with the anchors in the `.json` written next to it).
  `include_nms=True` puts decoding and NMS in the graph for one image per call, with
  `ssd_keras.decode.decode_detections_builtin_nms` (TFLite has no builtin for combined NMS).

Boxes in every output are relative yxyx.
"""

from __future__ import annotations

import json
import tempfile
import warnings
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

__all__ = ["export_savedmodel", "export_tflite", "run_tflite", "METADATA_NAME"]

#: The JSON document written beside an export (class names, anchors, decoder settings).
METADATA_NAME = "ssd_keras.json"
METADATA_FORMAT = "ssd_keras/2"


def _check_detector(detector, where):
    if not callable(getattr(detector, "detection_settings", None)):
        raise TypeError(f"{where}: expected an SSDDetector, got {type(detector).__name__} "
                        "(wrap a build_ssd model's training in SSDDetector)")


def export_metadata(detector, **extra):
    """What a consumer of an export needs besides the graph (JSON-serialisable)."""
    return {
        "format": METADATA_FORMAT,
        "class_names": list(detector.class_names),
        "anchors": detector.anchors.get_config(),
        "image_size": detector.image_size,
        "decoder": dict(detector.decoder_settings),
        "box_format": "rel_yxyx",
        **extra,
    }


def export_savedmodel(detector, path, **decode_overrides):
    """Write a SavedModel with decoding and NMS in the graph. Returns the path.

    Signatures:
        `serving_default` (alias of `serve`): float32 images `[B, H, W, 3]` 0–255;
        `serve_uint8`: the same for uint8 images.
    Each returns `boxes` (relative yxyx), `scores`, `classes` (int, -1 padding) and
    `num_detections`, from `detector.detect` (images of another size are squashed in-graph).
    `decode_overrides` (`score_threshold`, `iou_threshold`, `max_detections`) replace the
    detector's decoder settings. Reload with `tf.saved_model.load(path).serve(images)`.
    """
    _check_detector(detector, "export_savedmodel")

    def serve(images):
        return detector.detect(images, **decode_overrides)

    archive = keras.export.ExportArchive()
    archive.track(detector)
    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]
    )
    archive.add_endpoint(
        "serve_uint8", serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    )
    path = Path(path)
    archive.write_out(str(path), verbose=False)
    meta = export_metadata(detector, outputs="detections")
    meta["decoder"].update(decode_overrides)
    (path / METADATA_NAME).write_text(json.dumps(meta, indent=1))
    return path


def export_tflite(detector, path, include_nms=False, quantize=False, **decode_overrides):
    """Convert the detector to a `.tflite` flatbuffer (builtin ops only). Returns the path.

    Args:
        detector: an `SSDDetector`.
        path: output file (`.tflite`); a `<name>.json` next to it holds the anchors, class
            names and decoder settings (needed to decode the raw output).
        include_nms: False (default): input `[B, S, S, 3]` float32 0–255, output the raw `y_pred`
            `[B, A, 4 + C + 1]`; decode on the host (`ssd_keras.decode.decode_detections`).
            True: input `[1, S, S, 3]` (one image, the usual on-device case), outputs the decoded
            `boxes`, `scores`, `classes`, `num_detections` of `detector.detect(images,
            nms="builtin")` (per-class builtin NMS; combined NMS would need the Flex delegate).
        quantize: dynamic-range weight quantisation (`tf.lite.Optimize.DEFAULT`).
        decode_overrides: replace the detector's decoder settings (`include_nms`).
    """
    _check_detector(detector, "export_tflite")
    size = detector.image_size
    if include_nms:
        spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="images")

        def fn(images):
            return detector.detect(images, nms="builtin", **decode_overrides)
    else:
        spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")

        def fn(images):
            return {"y_pred": detector(images, training=False)}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Going through a SavedModel is the converter's best-supported route for Keras 3 models
    # (`from_keras_model` expects tf.keras internals).
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(detector)
        archive.add_endpoint("serve", fn, input_signature=[spec])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path.write_bytes(converter.convert())
    meta = export_metadata(detector, outputs="detections" if include_nms else "y_pred")
    meta["decoder"].update(decode_overrides)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    return path


def run_tflite(path, images):
    """Run a `.tflite` file from `export_tflite` on a float32 batch; returns a dict of numpy arrays.

    A convenience for tests and checks on the host (`tf.lite.Interpreter`; TF warns that it
    moves to the `ai_edge_litert` package, whose `Interpreter` has the same interface).
    """
    with warnings.catch_warnings():  # the "moving to ai_edge_litert" deprecation notice
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=str(path))
    (key,) = interpreter.get_signature_list()  # the converter names it "serving_default"
    runner = interpreter.get_signature_runner(key)
    out = runner(images=np.asarray(images, np.float32))
    return {k: np.asarray(v) for k, v in out.items()}
