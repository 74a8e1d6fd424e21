"""Shipping a trained detector: `.keras` with its metadata, SavedModel with in-graph NMS, TFLite.

A detector is more than its weights: to turn `y_pred` into boxes you need the anchor
configuration, and to name the boxes you need the class names. The lesson keeps both as
notebook globals (`anchors`, `id2cat`); here they travel with the model as a small JSON
document (`ssd_keras.json`):

- `save_model` writes the `.keras` archive and adds `ssd_keras.json` inside it (Keras ignores
  extra members of the zip), so one file is enough for `evaluate` / `predict` / `export`.
- `load_model` reads it back; for `.keras` files written by plain `model.save` or by a
  `ModelCheckpoint` it falls back to a sidecar `<name>.json` or an `ssd_keras.json` in the same
  folder or the folder above (the `train` command writes one into its output folder).
- `export_savedmodel` writes a SavedModel whose serving signature takes images and returns
  decoded, NMS-filtered detections (`tf.image.combined_non_max_suppression` via
  `ssd_keras.decode.decode_detections`), and copies `ssd_keras.json` next to it.
- `export_tflite` converts to TFLite with builtin ops only. The default exports the raw
  `y_pred` (any batch; decode on the host with the anchors from the JSON written next to it).
  `include_nms=True` puts decoding and NMS in the graph for one image per call: TFLite has no
  builtin for `combined_non_max_suppression` (it would need SELECT_TF_OPS and the Flex
  delegate, which TF 2.21's Python interpreter does not link), so it runs the builtin
  single-class NMS once per class instead, with the same results.

Boxes in every output are relative yxyx (DESIGN.md).
"""

from __future__ import annotations

import json
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.boxes import activations_to_boxes

METADATA_NAME = "ssd_keras.json"
METADATA_FORMAT = "ssd_keras/1"


@dataclass
class ModelInfo:
    """What a saved detector needs besides its weights.

    Attributes:
        class_names: one name per class id (background excluded).
        anchors: the `AnchorConfig` the head was built for.
        image_size: the square input size the model was trained at (pixels).
        extra: free-form settings (backbone, training settings, decode defaults).
    """

    class_names: list
    anchors: AnchorConfig
    image_size: int | None = None
    extra: dict = field(default_factory=dict)

    @property
    def num_classes(self):
        return len(self.class_names)

    def to_json(self):
        return {
            "format": METADATA_FORMAT,
            "class_names": list(self.class_names),
            "anchors": self.anchors.get_config(),
            "image_size": self.image_size,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data, source="metadata"):
        if not isinstance(data, dict) or "class_names" not in data or "anchors" not in data:
            raise ValueError(
                f"{source}: not an ssd_keras metadata document (needs 'class_names' and 'anchors')"
            )
        return cls(
            class_names=[str(c) for c in data["class_names"]],
            anchors=AnchorConfig.from_config(data["anchors"]),
            image_size=data.get("image_size"),
            extra=dict(data.get("extra") or {}),
        )


def _check_model_matches(model, info, source):
    """Fail early (naming the file) when the metadata does not fit the model's output."""
    out = model.outputs[0].shape if getattr(model, "outputs", None) else None
    if out is None or len(out) != 3:
        return
    num_anchors, channels = out[1], out[2]
    if channels is not None and channels != 4 + info.num_classes + 1:
        raise ValueError(
            f"{source}: the model predicts {channels - 5} classes but the metadata names "
            f"{info.num_classes} ({info.class_names[:5]}...)"
        )
    if num_anchors is not None and num_anchors != info.anchors.num_anchors:
        raise ValueError(
            f"{source}: the model has {num_anchors} anchors but the metadata's {info.anchors!r} "
            f"has {info.anchors.num_anchors}"
        )


def _model_image_size(model):
    shape = model.inputs[0].shape
    return int(shape[1]) if shape[1] is not None else None


def save_model(model, path, class_names, anchors, image_size=None, extra=None):
    """Save `model` as `.keras` with `ssd_keras.json` (class names, anchors) inside the archive.

    Args:
        model: an `ssd_keras.build_ssd` model (images -> `y_pred`).
        path: file name ending in `.keras`.
        class_names: names of classes `0..num_classes-1` (background excluded).
        anchors: the `AnchorConfig` (or its config dict) the head was built for.
        image_size: input size in pixels; defaults to the model's input shape.
        extra: JSON-serialisable settings to keep with the model (backbone, epochs, ...).

    Returns:
        The `ModelInfo` written.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"save_model: path must end in .keras, got {str(path)!r}")
    info = ModelInfo(
        class_names=list(class_names),
        anchors=AnchorConfig.coerce(anchors),
        image_size=image_size or _model_image_size(model),
        extra=dict(extra or {}),
    )
    _check_model_matches(model, info, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    # Keras' loader reads only the members it knows (config.json, metadata.json, weights), so an
    # extra member keeps the metadata inside the one file users copy around.
    with zipfile.ZipFile(path, "a") as zf:
        zf.writestr(METADATA_NAME, json.dumps(info.to_json(), indent=1))
    return info


def write_metadata(path, class_names, anchors, image_size=None, extra=None):
    """Write a stand-alone `ssd_keras.json` (e.g. into a training folder for its checkpoints)."""
    info = ModelInfo(list(class_names), AnchorConfig.coerce(anchors), image_size, dict(extra or {}))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(info.to_json(), indent=1))
    return info


def read_metadata(path):
    """Find the `ModelInfo` of a saved model (`.keras` file or SavedModel folder).

    Looks, in order, inside the `.keras` archive, at a sidecar `<name>.json`, and at an
    `ssd_keras.json` in the model's folder (or inside a SavedModel folder), then the folder above.
    Raises FileNotFoundError naming the places it looked.
    """
    path = Path(path)
    if path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if METADATA_NAME in zf.namelist():
                return ModelInfo.from_json(json.loads(zf.read(METADATA_NAME)), str(path))
    candidates = [
        path.with_suffix(".json"),
        path / METADATA_NAME,
        path.parent / METADATA_NAME,
        path.parent.parent / METADATA_NAME,
    ]
    for cand in candidates:
        if cand.is_file() and cand != path:
            return ModelInfo.from_json(json.loads(cand.read_text()), str(cand))
    raise FileNotFoundError(
        f"{path}: no ssd_keras metadata (class names, anchors) found inside the archive or at "
        f"{', '.join(str(c) for c in candidates)}; save with ssd_keras.export.save_model or "
        f"write one with ssd_keras.export.write_metadata"
    )


def load_model(path, compile=False):
    """Load a `.keras` detector and its metadata. Returns `(model, ModelInfo)`.

    `compile=False` by default: inference and export need no loss or optimizer.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model file not found: {path}")
    if path.suffix != ".keras":
        raise ValueError(f"{path}: expected a .keras file")
    import ssd_keras  # noqa: F401  (registers the custom layers and the loss for deserialisation)

    info = read_metadata(path)
    model = keras.saving.load_model(path, compile=compile)
    _check_model_matches(model, info, str(path))
    if info.image_size is None:
        info.image_size = _model_image_size(model)
    return model, info


def _decode(y_pred, anchors, decode_kwargs):
    from ssd_keras.decode import decode_detections

    return decode_detections(y_pred, anchors, **decode_kwargs)


def make_serving_function(model, anchors, image_size=None, **decode_kwargs):
    """A `tf.function`-able images -> detections function (the body of the serving signature).

    Images: `[batch, height, width, 3]`, uint8 or float 0–255 RGB, any size (squashed to the
    model's square input, as the lesson's `CropType.NO` does). Returns the dict of
    `ssd_keras.decode.decode_detections`: `boxes` `[B, N, 4]` relative yxyx, `scores` `[B, N]`,
    `classes` `[B, N]` (-1 padding), `num_detections` `[B]`.
    """
    anchors = AnchorConfig.coerce(anchors)
    size = image_size or _model_image_size(model)

    def serve(images):
        x = tf.cast(images, tf.float32)
        if size is not None and tuple(x.shape[1:3]) != (size, size):
            x = tf.image.resize(x, (size, size))
        y_pred = model(x, training=False)
        return _decode(y_pred, anchors, decode_kwargs)

    return serve


def export_savedmodel(model, anchors, path, class_names=None, image_size=None, **decode_kwargs):
    """Write a SavedModel with decoding and NMS in the graph.

    Signatures:
        `serving_default` (alias of `serve`): float32 images `[B, H, W, 3]` 0–255;
        `serve_uint8`: the same for uint8 images.
    Each returns `boxes` (relative yxyx), `scores`, `classes` (int, -1 padding) and
    `num_detections`. Images of another size than the model's are resized (squashed) in-graph.

    Args:
        model: images -> `y_pred` (a `build_ssd` model).
        anchors: its `AnchorConfig`.
        path: output folder.
        class_names: written with the anchors to `<path>/ssd_keras.json`.
        image_size: the model's input size (default: from the model's input shape).
        **decode_kwargs: `score_threshold`, `iou_threshold`, `max_detections` for
            `decode_detections`.

    Reload with `tf.saved_model.load(path).serve(images)` or
    `.signatures["serving_default"](images=...)`.
    """
    anchors = AnchorConfig.coerce(anchors)
    serve = make_serving_function(model, anchors, image_size, **decode_kwargs)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serve", serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name="images")]
    )
    archive.add_endpoint(
        "serve_uint8", serve, input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
    )
    path = Path(path)
    archive.write_out(str(path), verbose=False)
    meta = {
        "format": METADATA_FORMAT,
        "class_names": list(class_names) if class_names is not None else None,
        "anchors": anchors.get_config(),
        "image_size": image_size or _model_image_size(model),
        "extra": {"decode": decode_kwargs, "box_format": "rel_yxyx"},
    }
    (path / METADATA_NAME).write_text(json.dumps(meta, indent=1))
    return path


def _decode_one_image_builtin_nms(y_pred, anchors, score_threshold=0.05, iou_threshold=0.45,
                                  max_detections=100):
    """`decode_detections` for one image with ops TFLite has as builtins.

    Why not `decode_detections`: it uses `combined_non_max_suppression`, which TFLite only runs
    as a Flex (SELECT_TF_OPS) op, and the Python `tf.lite.Interpreter` of TF 2.21 has no Flex
    delegate linked in. Single-class `NonMaxSuppressionV4` *is* a builtin, so this runs it once
    per class (a static loop: C is known) and keeps the best `max_detections` overall: the same
    per-class greedy NMS, score cut (`score > score_threshold`) and padding (`classes = -1`).

    Args:
        y_pred: `[1, A, 4 + C + 1]`. Returns the `decode_detections` dict with batch 1
        (boxes relative yxyx).
    """
    y_pred = tf.cast(y_pred[0], tf.float32)
    boxes = tf.clip_by_value(activations_to_boxes(y_pred[:, :4], anchors), 0.0, 1.0)
    scores = tf.sigmoid(y_pred[:, 4:-1])
    num_classes = y_pred.shape[-1] - 5
    cand_boxes, cand_scores, cand_classes = [], [], []
    for c in range(num_classes):
        idx, valid = tf.raw_ops.NonMaxSuppressionV4(
            boxes=boxes, scores=scores[:, c], max_output_size=max_detections,
            iou_threshold=iou_threshold, score_threshold=score_threshold,
            pad_to_max_output_size=True)
        keep = tf.range(max_detections) < valid
        cand_boxes.append(tf.gather(boxes, idx))
        cand_scores.append(tf.where(keep, tf.gather(scores[:, c], idx), -1.0))
        cand_classes.append(tf.fill([max_detections], c))
    top_scores, top = tf.math.top_k(tf.concat(cand_scores, 0), k=max_detections)
    valid = top_scores > -1.0
    num = tf.reduce_sum(tf.cast(valid, tf.int32))
    return {
        "boxes": tf.where(valid[:, None], tf.gather(tf.concat(cand_boxes, 0), top), 0.0)[None],
        "scores": tf.where(valid, top_scores, 0.0)[None],
        "classes": tf.where(valid, tf.gather(tf.concat(cand_classes, 0), top), -1)[None],
        "num_detections": num[None],
    }


def export_tflite(model, path, anchors=None, include_nms=False, class_names=None, quantize=False,
                  score_threshold=0.05, iou_threshold=0.45, max_detections=100):
    """Convert the detector to a `.tflite` flatbuffer (builtin ops only). Returns the path.

    Args:
        model: images (float32 0–255, `[B, S, S, 3]`) -> `y_pred`.
        path: output file (`.tflite`); a `<name>.json` next to it holds the anchors and class
            names (needed to decode the raw output).
        anchors: the `AnchorConfig` (required with `include_nms=True`; stored in the JSON).
        include_nms: False (default): input `[B, S, S, 3]`, output the raw `y_pred`
            `[B, A, 4 + C + 1]`; decode on the host (`ssd_keras.decode.decode_detections`).
            True: input `[1, S, S, 3]` (one image, the usual on-device case), outputs the decoded
            `boxes`, `scores`, `classes`, `num_detections` like `decode_detections`, with
            per-class builtin NMS (see `_decode_one_image_builtin_nms` for why not
            `combined_non_max_suppression`: it would need the Flex delegate).
        quantize: dynamic-range weight quantisation (`tf.lite.Optimize.DEFAULT`).
        score_threshold, iou_threshold, max_detections: the decoding settings (`include_nms`).
    """
    if include_nms and anchors is None:
        raise ValueError("export_tflite: include_nms=True needs anchors=")
    size = _model_image_size(model)
    if include_nms:
        anchors = AnchorConfig.coerce(anchors)
        spec = tf.TensorSpec([1, size, size, 3], tf.float32, name="images")

        def fn(images):
            return _decode_one_image_builtin_nms(
                model(images, training=False), anchors, score_threshold, iou_threshold,
                int(max_detections))
    else:
        spec = tf.TensorSpec([None, size, size, 3], tf.float32, name="images")

        def fn(images):
            return {"y_pred": model(images, training=False)}

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Going through a SavedModel is the converter's best-supported route for Keras 3 models
    # (`from_keras_model` expects tf.keras internals).
    with tempfile.TemporaryDirectory() as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", fn, input_signature=[spec])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        if quantize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        path.write_bytes(converter.convert())
    decode = dict(score_threshold=score_threshold, iou_threshold=iou_threshold,
                  max_detections=max_detections)
    meta = {
        "format": METADATA_FORMAT,
        "class_names": list(class_names) if class_names is not None else None,
        "anchors": AnchorConfig.coerce(anchors).get_config() if anchors is not None else None,
        "image_size": size,
        "extra": {
            "tflite_outputs": "detections" if include_nms else "y_pred",
            "decode": decode if include_nms else None,
            "box_format": "rel_yxyx",
        },
    }
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
