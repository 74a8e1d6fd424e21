"""The one path from images to detections: resize in the graph → model → decode + NMS.

    images [B, H, W, 3] uint8 or float 0–255, any H, W
      → float32, squashed to the model's S × S (the lesson's `CropType.NO`; no-op at size S)
      → model → y_pred [B, A, 4 + C + 1]
      → decode_detections (per-class NMS) → {boxes (relative yxyx), scores, classes, num_detections}

`SSDDetector.predict`, `evaluate_model` (and so the `val_map` callback and the CLI's `evaluate`),
the CLI's `predict` and picture, the SavedModel signature and the TFLite export with
`include_nms=True` all call `detect`, so they decode identically (the default TFLite export is
the raw `y_pred`, decoded on the host). Boxes are relative to the image as given, so they hold for the
original size too.
"""

from __future__ import annotations

import tensorflow as tf

from ssd_keras.anchors import AnchorConfig
from ssd_keras.data.records import tf_error_text
from ssd_keras.decode import DECODERS


def prepare_images(images, image_size):
    """uint8 or float 0–255 images `[B, H, W, 3]` → float32 `[B, S, S, 3]` (squash-resized, in
    the graph). Images already `S × S` are only cast."""
    images = tf.convert_to_tensor(images)
    if images.shape.rank != 4 or (images.shape[-1] is not None and images.shape[-1] != 3):
        raise ValueError(f"detect: images must be [batch, height, width, 3] (RGB), got shape {images.shape}")
    if images.shape[-1] is None:  # a graph traced for any shape: check when it runs
        with tf.control_dependencies([tf.debugging.assert_equal(
                tf.shape(images)[-1], 3, message="detect: images must be [batch, height, width, 3] (RGB)")]):
            images = tf.identity(images)
    x = tf.cast(images, tf.float32)
    if image_size is not None and tuple(x.shape[1:3]) != (image_size, image_size):
        x = tf.image.resize(x, (image_size, image_size))
    return x


def detect(model, images, anchors, image_size=None, nms="combined", **decode_kwargs):
    """Images → decoded detections (the dict of `ssd_keras.decode.decode_detections`).

    Args:
        model: images `[B, S, S, 3]` (0–255) → `y_pred` (an `SSDDetector` or a `build_ssd` model).
        images: `[B, H, W, 3]` uint8 or float 0–255, any size (resized to `image_size`).
        anchors: the model's `AnchorConfig`.
        image_size: the model's input side `S` (default: from the model's input shape).
        nms: "combined" (`tf.image.combined_non_max_suppression`, any batch) or "builtin"
            (TFLite's builtin single-class NMS, batch of one: `decode_detections_builtin_nms`).
        decode_kwargs: `score_threshold`, `iou_threshold`, `max_detections`, `max_per_class`.
    """
    if nms not in DECODERS:
        raise ValueError(f"detect: nms must be one of {sorted(DECODERS)}, got {nms!r}")
    if image_size is None:
        image_size = model.inputs[0].shape[1] if getattr(model, "inputs", None) else None
    y_pred = model(prepare_images(images, image_size), training=False)
    return DECODERS[nms](y_pred, AnchorConfig.coerce(anchors), **decode_kwargs)


def detection_function(model, anchors=None, image_size=None, **decode_kwargs):
    """`detect` for `model` compiled once as a `tf.function` (one graph per batch, not many
    small eager ops). For an `SSDDetector`, the anchors, image size and decoder settings default
    to its own; `decode_kwargs` override them."""
    settings = _settings(model, anchors, image_size, decode_kwargs)

    @tf.function(reduce_retracing=True)
    def run(images):
        return detect(model, images, **settings)

    return run


def _settings(model, anchors, image_size, decode_kwargs):
    """`detect`'s keyword arguments for `model`: its own where it is a detector."""
    own = model.detection_settings() if hasattr(model, "detection_settings") else {}
    settings = dict(own, **decode_kwargs)
    if anchors is not None:
        settings["anchors"] = anchors
    if image_size is not None:
        settings["image_size"] = image_size
    if "anchors" not in settings:
        raise ValueError("detection_function: pass anchors= for a model that is not an SSDDetector")
    return settings


def read_image_file(path):
    """uint8 `[H, W, 3]` from a JPEG/PNG/BMP/GIF file; ValueError naming the file if unreadable."""
    path = str(path)
    try:
        raw = tf.io.read_file(path)
        return tf.io.decode_image(raw, channels=3, expand_animations=False).numpy()
    except (tf.errors.NotFoundError, FileNotFoundError):
        raise ValueError(f"{path}: file not found") from None
    except tf.errors.OpError as e:
        raise ValueError(f"{path}: not a readable image ({tf_error_text(e)})") from None


def detect_files(detector, paths, on_error="raise", **decode_overrides):
    """Run `detector.detect` on image files, one at a time (any sizes).

    Returns `(results, skipped)`: per good file a JSON-able dict `{"image", "width", "height",
    "detections": [{"class", "class_id", "score", "box_rel_yxyx", "box_xyxy"}]}` (`box_xyxy` in
    pixels of the file: `(xmin, ymin, xmax, ymax)`) plus the decoded arrays under `"_arrays"`,
    and `(path, reason)` per unreadable file. `on_error="raise"` raises ValueError on the first
    unreadable file instead (before any detection runs).
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}')
    images, skipped = [], []
    for path in paths:
        try:
            images.append((path, read_image_file(path)))
        except ValueError as e:
            if on_error == "raise":
                raise
            skipped.append((str(path), str(e).removeprefix(f"{path}: ")))
    run = detection_function(detector, **decode_overrides)
    results = []
    for path, image in images:
        h, w = image.shape[:2]
        det = {k: v.numpy()[0] for k, v in run(image[None]).items()}
        n = int(det["num_detections"])
        objects = []
        for box, score, cls in zip(det["boxes"][:n], det["scores"][:n], det["classes"][:n]):
            ymin, xmin, ymax, xmax = (float(v) for v in box)
            objects.append({
                "class": detector.class_names[int(cls)], "class_id": int(cls), "score": float(score),
                "box_rel_yxyx": [ymin, xmin, ymax, xmax],
                "box_xyxy": [xmin * w, ymin * h, xmax * w, ymax * h],
            })
        results.append({"image": str(path), "width": int(w), "height": int(h), "detections": objects,
                        "_arrays": (image, {k: v[:n] for k, v in det.items() if k != "num_detections"})})
    return results, skipped
