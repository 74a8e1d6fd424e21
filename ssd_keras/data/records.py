"""Records: one annotated image, in one format for every source.

Every reader (`read_voc`, `read_coco_json`, `read_csv`, `read_tfds`, `make_shapes`) returns
`Record`s with **relative yxyx** boxes; pixels exist only inside the readers. A `DetectionData`
carries the records together with the class names (the class-name <-> id mapping travels with
the data, never as a global like the lesson's `id2cat`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Any, Sequence

import numpy as np

log = logging.getLogger("ssd_keras.data")

#: The 20 Pascal VOC classes in the standard (devkit / tfds / course JSON) order; id = index.
VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)


def class_names_for(found) -> tuple:
    """The class names a reader uses when the caller gives none: the 20 `VOC_CLASSES` (in
    their usual order, so VOC-trained models and files agree) when every name found is one of
    them, else the sorted set of names found."""
    found = set(found)
    return VOC_CLASSES if found <= set(VOC_CLASSES) else tuple(sorted(found))


@dataclasses.dataclass
class Record:
    """One image and its objects.

    Attributes:
        image_id: the file stem (VOC id such as ``"000012"``) or a generated id.
        path: image file, or None when `image` holds the pixels.
        image: None, an in-memory uint8 array `[H, W, 3]`, or encoded image `bytes` (tfds).
        boxes: float32 `[n, 4]` relative yxyx in [0, 1].
        classes: int32 `[n]` ids into the data set's class names.
        difficult: bool `[n]` (VOC `difficult`, or COCO-json `ignore`).
        width, height: image size in pixels.
        truncated: bool `[n]` (VOC `truncated`; False where the source has no such field).
    """

    image_id: str
    path: str | None
    boxes: np.ndarray
    classes: np.ndarray
    difficult: np.ndarray
    width: int
    height: int
    image: Any = None
    truncated: np.ndarray | None = None
    # Set by the file readers, which check each image file when they read it (unless told not
    # to, `check_images=False`): `make_dataset` then checks only that the file still exists,
    # not its header again. Not an argument and not compared; `dataclasses.replace` clears it.
    _from_reader: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.path is not None:  # a pathlib.Path failed later, in make_dataset's path.encode()
            self.path = os.fsdecode(self.path)
        self.boxes = np.asarray(self.boxes, np.float32).reshape(-1, 4)
        self.classes = np.asarray(self.classes, np.int32).reshape(-1)
        self.difficult = np.asarray(self.difficult, bool).reshape(-1)
        if self.truncated is None:
            self.truncated = np.zeros(len(self.classes), bool)
        self.truncated = np.asarray(self.truncated, bool).reshape(-1)
        n = len(self.boxes)
        if not (len(self.classes) == len(self.difficult) == len(self.truncated) == n):
            raise ValueError(f"{self.image_id}: boxes/classes/difficult lengths differ")

    @property
    def num_objects(self) -> int:
        return len(self.classes)

    def pixel_boxes(self) -> np.ndarray:
        """Boxes as continuous pixel yxyx (`(ymin, xmin, ymax, xmax)` in pixels, for drawing)."""
        return self.boxes * np.array([self.height, self.width] * 2, np.float32)

    def load_image(self) -> np.ndarray:
        """uint8 `[H, W, 3]` pixels (decodes the file / bytes with PIL; an in-memory array is
        read as `make_dataset` reads it: grayscale repeated, alpha dropped, other dtypes checked)."""
        if isinstance(self.image, np.ndarray):
            from ssd_keras.data.pipeline import in_memory_rgb

            return in_memory_rgb(self.image, self)
        from PIL import Image
        import io

        src = io.BytesIO(self.image) if isinstance(self.image, bytes) else self.path
        with Image.open(src) as im:
            return np.asarray(im.convert("RGB"))


@dataclasses.dataclass
class DetectionData:
    """Records plus the class names that give their ids a meaning.

    `skipped` lists `(file, reason)` for inputs a reader skipped with `on_error="skip"`.
    """

    records: list
    class_names: tuple
    name: str = ""
    skipped: list = dataclasses.field(default_factory=list)

    def __len__(self):
        return len(self.records)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def class_to_id(self) -> dict:
        return {c: i for i, c in enumerate(self.class_names)}

    @property
    def num_objects(self) -> int:
        return sum(r.num_objects for r in self.records)

    def multi_labels(self) -> list:
        """The lesson's `mc`: per image, the set of class names present."""
        return multi_labels(self.records, self.class_names)

    def ground_truths(self) -> list:
        """`(boxes [m, 4] yxyx, classes [m], difficult [m])` per image, the input of
        `evaluate_detections`."""
        return [(r.boxes, r.classes, r.difficult) for r in self.records]

    def split(self, fraction: float, seed: int = 0):
        """Deterministic random split into two `DetectionData` (`fraction` of images first)."""
        order = np.random.default_rng(seed).permutation(len(self.records))
        cut = int(round(fraction * len(order)))

        def pick(idx):
            return DetectionData([self.records[i] for i in sorted(idx)], self.class_names, self.name)

        return pick(order[:cut]), pick(order[cut:])

    def dataset(self, image_size: int, batch_size: int, **kwargs):
        """`make_dataset(self.records, image_size, batch_size, **kwargs)`."""
        from ssd_keras.data.pipeline import make_dataset

        return make_dataset(self.records, image_size, batch_size, **kwargs)

    def summary(self) -> str:
        counts = np.bincount(np.concatenate([r.classes for r in self.records] or [np.zeros(0, int)]),
                             minlength=self.num_classes)
        diff = sum(int(r.difficult.sum()) for r in self.records)
        return (f"{self.name or 'data'}: {len(self.records)} images, {self.num_objects} objects "
                f"({diff} difficult), {self.num_classes} classes; per class "
                + ", ".join(f"{c}={n}" for c, n in zip(self.class_names, counts)))


def multi_labels(records: Sequence[Record], class_names: Sequence[str]) -> list:
    """The lesson's `mc = [set(cats[p[1]] for p in tm_anno[o]) for o in tm_ids]`."""
    return [{class_names[c] for c in r.classes} for r in records]


class ErrorPolicy:
    """`on_error="raise"`: raise ValueError naming the file; `"skip"`: count, log, go on.

    Readers call `problem(file, reason)`; `finish(name)` logs one summary warning.
    """

    def __init__(self, on_error: str = "raise"):
        if on_error not in ("raise", "skip"):
            raise ValueError(f'on_error must be "raise" or "skip", got {on_error!r}')
        self.on_error = on_error
        self.skipped: list = []

    def problem(self, file, reason: str):
        if self.on_error == "raise":
            raise ValueError(f"{file}: {reason} (pass on_error='skip' to skip such images)")
        self.skipped.append((str(file), reason))
        log.debug("skipping %s: %s", file, reason)

    def finish(self, name: str):
        if self.skipped:
            log.warning("%s: skipped %d image(s) with bad input, e.g. %s: %s", name,
                        len(self.skipped), *self.skipped[0])


#: What `tf.io.decode_image` (the pipeline's decoder) reads; PIL reads more (TIFF, ...).
TF_IMAGE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP")  # MPO: a phone's multi-picture JPEG


def check_image_file(path: str, expect_size=None, decode: bool = True) -> str | None:
    """Check that the pipeline will decode an image file; returns the problem as text, or None.

    The header (PIL) catches a missing, 0-byte or non-image file, a format TensorFlow does not
    decode (TIFF, ...) and a size different from the annotation's (which would make every
    relative box wrong); a JPEG without its end-of-image marker is named as truncated. Then
    the whole file is decoded with the pipeline's own decoder (`tf.io.decode_image`), which
    rejects corrupt data that PIL reads with a warning. Without these checks `make_dataset`
    would stop training inside TensorFlow, mid-epoch, without naming the file. The decode
    costs ~1 ms per VOC image (2.6 s for VOC 2007's 2501 training images); `decode=False`
    checks the header alone (~0.1 ms), as `make_dataset` does for records made by hand.
    """
    import tensorflow as tf

    if not os.path.exists(path):
        return "image file missing"
    size = os.path.getsize(path)
    if size == 0:
        return "image file is empty (0 bytes)"

    def data():
        with open(path, "rb") as f:
            return f.read()

    problem = _header_problem(path, data, expect_size)
    if problem or not decode:
        return problem
    try:
        tf.io.decode_image(tf.io.read_file(path), channels=3, expand_animations=False)
    except tf.errors.OpError as e:
        return f"TensorFlow cannot decode it ({tf_error_text(e)})"
    return None


def check_image_bytes(data: bytes) -> str | None:
    """`check_image_file`'s header checks for an encoded image held in memory (a `Record`'s
    `image` bytes); returns the problem as text, or None.

    Empty or non-image bytes, a format TensorFlow does not decode and a JPEG without its end
    marker are caught. Unlike `check_image_file` the data is not decoded: `make_dataset` runs
    this on every in-memory image each time it is called, and the header costs ~40 µs where a
    decode costs ~1 ms, so corrupt data behind an intact header still fails in the pipeline.
    """
    import io

    if not data:
        return "empty (0 bytes)"
    return _header_problem(io.BytesIO(data), lambda: data, None,
                           unreadable=f"not a readable image (no known image format; it starts with {data[:8]!r})")


def _jpeg_truncated(data: bytes) -> bool:
    """True when a JPEG's last scan has no end-of-image marker after it: the file was cut.

    The marker is looked for after the last start-of-scan, not at the very end, since data
    after it (zero padding, a camera's trailer) is common and TensorFlow decodes such files.
    A scan's coded data cannot hold either marker (a 0xFF byte there is followed by 0x00)."""
    scan = data.rfind(b"\xff\xda")
    return scan < 0 or data.find(b"\xff\xd9", scan + 2) < 0


def _header_problem(src, read_all, expect_size, unreadable=None) -> str | None:
    """What the header of an image (a path or a file object) tells: not an image, a format
    TensorFlow does not decode, a truncated JPEG (`read_all()`: the image's bytes, read only
    for a JPEG), a size other than `expect_size` `(w, h)`."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(src) as im:
            fmt, (w, h) = im.format, im.size
    except UnidentifiedImageError as e:
        return unreadable or f"not a readable image ({e.__class__.__name__}: {e})"
    except OSError as e:
        return f"not a readable image ({e.__class__.__name__}: {e})"
    except Image.DecompressionBombError as e:  # not an OSError; a header claiming ~20000 x 20000
        return f"too large to decode safely ({e})"
    if fmt not in TF_IMAGE_FORMATS:
        return f"a {fmt} image; TensorFlow decodes only JPEG, PNG, GIF, BMP and WebP (convert it)"
    if fmt in ("JPEG", "MPO") and _jpeg_truncated(read_all()):
        return "truncated JPEG (no end-of-image marker)"
    if expect_size is not None and (w, h) != tuple(expect_size):
        return f"image is {w}x{h} but the annotation says {expect_size[0]}x{expect_size[1]}"
    return None


def tf_error_text(error) -> str:
    """A TensorFlow op error in one line for a person: "{{function_node ...}} jpeg::Uncompress
    failed. ... [Op:DecodeImage] name:" -> "jpeg::Uncompress failed. ..."."""
    text = re.sub(r"\{\{function_node [^}]*\}\}|\[Op:.*", "", getattr(error, "message", None) or str(error))
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0][:200] if lines else type(error).__name__
