"""The `tf.data` pipeline: records -> `(images, y_true)` batches for `model.fit`.

    ds = make_dataset(data.records, image_size=224, batch_size=32, augment=lesson_augmentations(),
                      shuffle=True, seed=0)
    images, y_true = next(iter(ds))   # float32 [32, 224, 224, 3] (0-255), [32, max_boxes, 5]

Per element: read + decode a file or bytes, take an in-memory array by index (no stacked copy of
the data set), or generate the image on the fly (`load_source("shapes:N")`: memory O(batch) for
any N) -- all in parallel (`AUTOTUNE`) -- then resize (the lesson's squash,
`CropType.NO`, or letterbox with the boxes moved), augment, clip, pad the boxes to
`max_boxes` rows `(ymin, xmin, ymax, xmax, class_id)` with padding rows class -1; then batch
and prefetch. The order and the augmentations follow from `seed` alone: shuffling uses a seeded
buffer and each element's augmentation draws from stateless random ops seeded by
`tf.data.Dataset.random(seed)`, which gives fresh (but reproducible) numbers every epoch.
"""

from __future__ import annotations

import logging
import os

import numpy as np
import tensorflow as tf

from ssd_keras._checks import is_whole
from ssd_keras.data.augment import apply_augmentations

# The pipeline does not import `records` at module level (records.DetectionData.dataset imports
# the pipeline; the image checks import it inside the function that uses them): it takes
# anything with `.records`, or a list of Record-like objects.
log = logging.getLogger("ssd_keras.data")

AUTOTUNE = tf.data.AUTOTUNE


def _check_records(records):
    for r in records:
        b = r.boxes
        if len(b) and (not np.all(np.isfinite(b)) or b.min() < 0 or b.max() > 1
                       or np.any(b[:, 2] <= b[:, 0]) or np.any(b[:, 3] <= b[:, 1])):
            raise ValueError(f"record {r.image_id} ({r.path or 'in memory'}): boxes must be relative yxyx "
                             f"in [0, 1] with ymax > ymin and xmax > xmin, got {b.tolist()[:3]}...")
        if r.path is None and r.image is None:
            raise ValueError(f"record {r.image_id}: neither a path nor image data")
        if r.image is not None and not isinstance(r.image, (bytes, np.ndarray)):
            # A file name here, say, would otherwise fail as `None.encode()`.
            raise ValueError(f"make_dataset: record {r.image_id!r}: image must be None (read from its path), "
                             f"a uint8 array [H, W, 3] (or grayscale [H, W]) or encoded image bytes, "
                             f"got {type(r.image).__name__}")


def pad_targets(boxes, classes, max_boxes):
    """`[n, 4]` yxyx boxes + `[n]` classes -> `y_true` rows `[max_boxes, 5]`, padding class -1.

    Rows beyond `max_boxes` are cut (make_dataset cuts and counts them before this)."""
    rows = tf.concat([boxes, tf.cast(classes, tf.float32)[:, None]], axis=1)[:max_boxes]
    pad = tf.tile(tf.constant([[0.0, 0.0, 0.0, 0.0, -1.0]]), [max_boxes - tf.shape(rows)[0], 1])
    out = tf.concat([rows, pad], axis=0)
    out.set_shape([max_boxes, 5])
    return out


def letterbox(image, boxes, image_size, fill_value=0.0):
    """Resize keeping the aspect ratio and pad to a centred square; boxes (relative yxyx)
    are moved onto the padded canvas."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    size = float(image_size)
    scale = tf.minimum(size / shape[0], size / shape[1])
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    off = (image_size - new) // 2
    image = tf.image.resize(image, new)
    image = tf.pad(image - fill_value, [[off[0], image_size - new[0] - off[0]],
                                        [off[1], image_size - new[1] - off[1]], [0, 0]]) + fill_value
    newf, offf = tf.cast(new, tf.float32), tf.cast(off, tf.float32)
    boxes = (boxes * tf.tile(newf, [2]) + tf.tile(offf, [2])) / size
    return image, boxes


def _is_generated(records) -> bool:
    """A source that makes its examples on demand (`shapes.ShapesRecords`): it has `len()`,
    `example(i) -> (uint8 image [H, W, 3], boxes [n, 4] relative yxyx, classes [n])`, the
    common `image_shape` `(H, W, 3)` and `max_objects`, a bound on `n`."""
    return all(hasattr(records, a) for a in ("example", "image_shape", "max_objects"))


def _as_uint8(image, record):
    """An in-memory image as uint8, refusing values a cast would change: float images in [0, 1]
    (they would come out black), values outside 0–255 (they would wrap), NaN."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == bool or not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
        raise ValueError(f"make_dataset: record {record.image_id!r}: in-memory images must be uint8 0–255, "
                         f"got dtype {image.dtype}")
    if image.size and not (np.all(np.isfinite(image)) and image.min() >= 0 and image.max() <= 255
                           and np.all(image == np.round(image))):
        raise ValueError(f"make_dataset: record {record.image_id!r}: in-memory images must hold whole "
                         f"numbers 0–255 (uint8), got {image.dtype} values in [{image.min()}, {image.max()}]"
                         f"{' (floats in [0, 1]? multiply by 255)' if image.max() <= 1 else ''}")
    return image.astype(np.uint8)


def _rgb_shape(shape, record):
    """The `[H, W, 3]` an in-memory image of `shape` is read as (`_as_rgb`); a ValueError naming
    the record for a shape that is not an image."""
    if len(shape) == 2 or (len(shape) == 3 and shape[-1] in (1, 2, 3, 4)):
        return (*shape[:2], 3)
    raise ValueError(f"make_dataset: record {record.image_id!r}: in-memory images must be [H, W, 3] "
                     f"(RGB; grayscale [H, W] or [H, W, 1] and an alpha channel are accepted too), "
                     f"got shape {shape}")


def _as_rgb(image):
    """An in-memory image `[H, W]` or `[H, W, 1|2|3|4]` as `[H, W, 3]`, the way
    `tf.io.decode_image(..., channels=3)` reads such a file (and PIL's `convert("RGB")`): grey
    repeated into the three channels, alpha dropped. An RGB array is returned as it is."""
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] in (1, 2):
        return np.repeat(image[..., :1], 3, axis=-1)
    return image[..., :3] if image.shape[-1] == 4 else image


def in_memory_rgb(image, record):
    """A `Record`'s in-memory array as the uint8 `[H, W, 3]` the pipeline reads (`_rgb_shape`,
    `_as_uint8`, `_as_rgb`); a ValueError naming the record for a shape or values it refuses."""
    _rgb_shape(image.shape, record)
    return _as_rgb(_as_uint8(image, record))


def make_dataset(records, image_size, batch_size, max_boxes=None, augment=None, shuffle=False,
                 seed=None, resize="squash", repeat=False, drop_remainder=False, min_box_size=1e-3,
                 num_parallel_calls=AUTOTUNE, prefetch=AUTOTUNE) -> tf.data.Dataset:
    """Build the training/evaluation `tf.data.Dataset`.

    Args:
        records: list of `Record` (boxes relative yxyx), a `DetectionData`, or a generated
            source (`load_source("shapes:N")`, whose images are made on the fly in the pipeline:
            memory stays O(batch) whatever N).
        image_size: side `S` of the square output images.
        batch_size: images per batch.
        max_boxes: rows of `y_true`; default the largest object count in `records` (for a
            generated source, its bound `max_objects`, known without generating every image).
            Images with more objects keep their first `max_boxes` (file order) and a warning
            logs how many objects were dropped (for a generated source: that some may be).
        augment: None or a list of `ssd_keras.data.augment` transforms, applied after resizing.
        shuffle: reshuffle the images every epoch (seeded buffer over the whole data set; the
            buffer holds indices and boxes, not pixels).
        seed: int for reproducible order and augmentation; None for fresh randomness.
        resize: `"squash"` (the lesson's `CropType.NO`: stretch to S x S, boxes unchanged) or
            `"letterbox"` (keep the aspect ratio, pad with zeros, boxes moved).
        repeat: repeat forever (then pass `steps_per_epoch` to `fit`).
        drop_remainder: drop the last partial batch.
        min_box_size: boxes thinner than this (relative) after augmentation are removed.
    Returns:
        `tf.data.Dataset` of `(images float32 [B, S, S, 3] 0-255, y_true float32 [B, max_boxes, 5])`.
    """
    records = getattr(records, "records", records)  # a DetectionData
    if not _is_generated(records):
        records = list(records)
    if not len(records):
        raise ValueError("make_dataset: no records")
    if resize not in ("squash", "letterbox"):
        raise ValueError(f'make_dataset: resize must be "squash" or "letterbox", got {resize!r}')
    # Checked before int(): image_size=64.5 or batch_size=2.5 were cut without a word.
    for arg, value in (("image_size", image_size), ("batch_size", batch_size), ("max_boxes", max_boxes)):
        if arg == "max_boxes" and value is None:
            continue
        if not is_whole(value):
            raise ValueError(f"make_dataset: {arg} must be an integer, got {value!r}")
        if value < 1:
            raise ValueError(f"make_dataset: {arg} must be "
                             f"{'>= 1' if arg == 'max_boxes' else 'positive'}, got {value!r}")
    max_boxes = None if max_boxes is None else int(max_boxes)
    if isinstance(augment, str) or not all(callable(a) for a in (augment or [])):
        raise ValueError(f"make_dataset: augment must be None or a list of transforms (e.g. "
                         f"ssd_keras.data.augment.augmentations_by_name({augment!r}) for a name), got {augment!r}")
    image_size, batch_size = int(image_size), int(batch_size)
    make_items = _generated_items if _is_generated(records) else _record_items
    items, gather, fetch, max_boxes = make_items(records, max_boxes)
    element = _element_fn(image_size, resize, list(augment or []), min_box_size, max_boxes)

    ds = items
    if shuffle:
        ds = ds.shuffle(len(records), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    if gather is not None:
        ds = gather(ds)
        if not repeat:  # unbatch forgets the length, which fit_one_cycle and Keras' progress need
            ds = ds.apply(tf.data.experimental.assert_cardinality(len(records)))
    rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    ds = tf.data.Dataset.zip((ds, rnd))
    ds = ds.map(lambda item, r: element(*fetch(item), r), num_parallel_calls=num_parallel_calls,
                deterministic=True)
    ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=num_parallel_calls,
                  deterministic=True)
    return ds.prefetch(prefetch) if prefetch else ds


def _element_fn(image_size, resize, augment, min_box_size, max_boxes):
    """One element, whatever its source: float32 image, its boxes and classes, a random int ->
    resized, augmented image and padded `y_true` rows."""

    def element(image, b, c, rnd):
        if resize == "squash":
            image = tf.image.resize(image, [image_size, image_size])
        else:
            image, b = letterbox(image, b, image_size)
        image, b, c = apply_augmentations(augment, image, b, c, tf.stack([rnd, tf.constant(0, tf.int64)]),
                                          min_size=min_box_size)
        image.set_shape([image_size, image_size, 3])
        return image, pad_targets(b, c, max_boxes)

    return element


#: Indices per Python call where images come from numpy inside the pipeline.
_CHUNK = 32


def _in_chunks(load_chunk):
    """A `gather` step: `load_chunk` (one `tf.numpy_function` call) on `_CHUNK` indices at a
    time, after shuffling, in order, then one element per image again."""

    def gather(ds):
        return ds.batch(_CHUNK).map(load_chunk, num_parallel_calls=AUTOTUNE, deterministic=True).unbatch()

    return gather


def _generated_items(source, max_boxes):
    """Indices `0..n-1`, a `gather` step that runs the source's numpy generator inside the
    pipeline on chunks of shuffled indices (`_in_chunks`), and a `fetch` that cuts each image's
    boxes to its object count; only the images in flight exist.

    One Python call per chunk rather than per image: parallel calls share the GIL, and per
    image the call and its hand-over between tf.data's threads cost more than making a 64 px
    image (the demo's pipeline alone, one core: first epoch 41.1 → 20.5 s;
    bench/results/20261201-issue13.md)."""
    bound = int(source.max_objects)
    if max_boxes is None:
        max_boxes = max(1, bound)
    elif max_boxes < bound:
        log.warning("make_dataset: max_boxes=%d may drop objects: the generated images have up to %d "
                    "(each keeps its first %d)", max_boxes, bound, max_boxes)
    shape = tuple(int(d) for d in source.image_shape)
    if len(shape) != 3 or shape[-1] != 3:
        raise ValueError(f"make_dataset: generated images must be [H, W, 3], got {shape}")

    def generate(indices):
        n = len(indices)
        images = np.empty((n, *shape), np.uint8)
        boxes = np.zeros((n, max_boxes, 4), np.float32)
        classes = np.full((n, max_boxes), -1, np.int32)
        counts = np.zeros(n, np.int32)
        for row, i in enumerate(indices):
            image, b, c = source.example(int(i))
            k = min(len(c), max_boxes)
            images[row] = image
            boxes[row, :k] = np.asarray(b, np.float32).reshape(-1, 4)[:k]
            classes[row, :k] = np.asarray(c, np.int32).reshape(-1)[:k]
            counts[row] = k
        return images, boxes, classes, counts

    def generate_chunk(indices):
        out = tf.numpy_function(generate, [indices], (tf.uint8, tf.float32, tf.int32, tf.int32),
                                name="generate_examples")
        for t, s in zip(out, ([None, *shape], [None, max_boxes, 4], [None, max_boxes], [None])):
            t.set_shape(s)
        return out

    def fetch(item):
        image, b, c, k = item
        return tf.cast(image, tf.float32), b[:k], c[:k]

    return tf.data.Dataset.range(len(source)), _in_chunks(generate_chunk), fetch, max_boxes


def _record_items(records, max_boxes):
    """Records -> a dataset of `(source, boxes, classes, count)`, `gather` (None, or a step
    applied after shuffling) and `fetch` to load one.

    In-memory arrays of one size (`make_shapes`) are read by index from the records' own
    arrays (no stacked copy of all the pixels), in chunks of indices (`_in_chunks`; one call per
    image cost ~35% more CPU per image); anything else is decoded from bytes
    or files."""
    _check_records(records)
    counts = np.array([r.num_objects for r in records])
    if max_boxes is None:
        max_boxes = max(1, int(counts.max()))
    dropped = np.maximum(counts - max_boxes, 0)
    if dropped.sum():
        log.warning("make_dataset: max_boxes=%d drops %d object(s) in %d image(s) (each keeps its first %d)",
                    max_boxes, dropped.sum(), (dropped > 0).sum(), max_boxes)
    n = len(records)
    boxes = np.zeros((n, max_boxes, 4), np.float32)
    classes = np.full((n, max_boxes), -1, np.int32)
    for i, r in enumerate(records):
        k = min(r.num_objects, max_boxes)
        boxes[i, :k], classes[i, :k] = r.boxes[:k], r.classes[:k]
    counts = np.minimum(counts, max_boxes).astype(np.int32)

    arrays = [r.image for r in records if isinstance(r.image, np.ndarray)]
    # Every array's shape is checked now, naming its record; TensorFlow's EncodePng / a
    # numpy_function would fail mid-epoch, naming none.
    for r in records:
        if isinstance(r.image, np.ndarray):
            _rgb_shape(r.image.shape, r)
    if len(arrays) == n and len({a.shape for a in arrays}) == 1:
        # Grayscale or RGBA arrays are made RGB a chunk at a time (`take`), not all at once here:
        # that would be a second copy of every image.
        shape = _rgb_shape(arrays[0].shape, records[0])
        # References to the records' arrays, not a copy (uint8 ones, i.e. all of `shapes`).
        arrays = [_as_uint8(a, r) for a, r in zip(arrays, records)]  # uint8 ones as they are
        source = np.arange(n)

        def take(idx):  # a chunk of images, stacked: memory O(chunk)
            return np.stack([_as_rgb(arrays[j]) for j in idx])

        def load_chunk(idx, b, c, k):
            images = tf.numpy_function(take, [idx], tf.uint8, name="in_memory_images")
            images.set_shape([None, *shape])
            return images, b, c, k

        gather = _in_chunks(load_chunk)

        def load(image):
            return tf.cast(image, tf.float32)
    else:
        gather = None
        from ssd_keras.data.records import check_image_bytes, check_image_file

        def to_bytes(r):
            if isinstance(r.image, bytes):
                # The readers check their files (`check_image_file`); bytes made by hand would
                # otherwise fail inside TensorFlow, mid-epoch, naming no record. Header only
                # (~40 µs an image), not a full decode, to stay cheap for big in-memory sources.
                problem = check_image_bytes(r.image)
                if problem:
                    where = f" ({r.path})" if r.path else ""
                    raise ValueError(f"make_dataset: record {r.image_id!r}{where}: its image bytes are {problem}")
                return r.image, False
            if isinstance(r.image, np.ndarray):  # mixed sizes: encode once here
                return tf.io.encode_png(in_memory_rgb(r.image, r)).numpy(), False
            # A missing or unreadable file failed inside TensorFlow, mid-epoch, naming no record.
            # The readers check their files when they read them, so theirs are only looked for
            # (a stat, ~3 µs); a record made by hand has its header read (~0.1 ms; a decode would
            # be ~1 ms), so corrupt data behind an intact header still fails in the pipeline.
            if getattr(r, "_from_reader", False):
                problem = None if os.path.exists(r.path) else "image file missing"
            else:
                problem = check_image_file(r.path, decode=False)
            if problem:
                raise ValueError(f"make_dataset: record {r.image_id!r} ({r.path}): {problem}")
            return r.path.encode(), True

        data, is_path = zip(*(to_bytes(r) for r in records))
        source = (np.array(data, dtype=object), np.array(is_path))

        def load(src):
            data, is_path = src
            raw = tf.cond(is_path, lambda: tf.io.read_file(data), lambda: data)
            img = tf.io.decode_image(raw, channels=3, expand_animations=False)
            img.set_shape([None, None, 3])
            return tf.cast(img, tf.float32)

    def fetch(item):
        src, b, c, k = item
        return load(src), b[:k], c[:k]

    return tf.data.Dataset.from_tensor_slices((source, boxes, classes, counts)), gather, fetch, max_boxes
