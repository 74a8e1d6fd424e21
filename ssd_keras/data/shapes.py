"""`shapes`: the embedded default data set, a deterministic synthetic multi-object set.

Each image has a smooth random-colour background with noise and thin clutter lines, and 1-6
objects (sometimes up to `max_objects`) of `SHAPE_CLASSES`, with varied size (about 12%-60%
of the image side, within the reach of the lesson's 4x4/2x2/1x1 anchors), aspect ratio,
colour and some overlap. Classes differ by outline only, colour carries no class information.
Boxes are the tight box of each object's drawn pixels, relative yxyx; objects painted later
may cover parts of earlier ones, so placements that hide more than 30% of an earlier object are
rejected.

Generated with numpy (~0.75 ms per 64 px image, ~3.5-3.9 ms at 224 px, one core), no download,
no cache needed: image `i` of split `s` depends only on `(seed, s, i)`, so `count` can change
without changing images, and any image can be made on its own. Hence two forms of the same records:

    make_shapes(count, ...)   # DetectionData, every image made now and kept in memory
    ShapesData(count, ...)    # what load_source("shapes:N") returns: images made on demand, and
                              # generated inside the tf.data pipeline (memory O(batch))
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Sequence

import numpy as np

from ssd_keras._checks import is_whole
from ssd_keras.data.records import DetectionData, Record, log

SHAPE_CLASSES = ("circle", "square", "triangle", "diamond", "cross", "ring")
_SPLITS = {"train": 0, "val": 1, "test": 2}


def _mask(kind: int, h: int, w: int) -> np.ndarray:
    """Boolean mask `[h, w]` of shape `kind` filling an `h x w` box (touches all four sides)."""
    v = (np.arange(h) + 0.5) / h * 2 - 1  # -1..1 top to bottom
    u = (np.arange(w) + 0.5) / w * 2 - 1
    v, u = v[:, None], u[None, :]
    name = SHAPE_CLASSES[kind]
    if name == "circle":
        m = u * u + v * v <= 1.0
    elif name == "square":
        m = np.ones((h, w), bool)
    elif name == "triangle":  # apex up
        m = np.abs(u) <= (v + 1) / 2 + 1.0 / w
    elif name == "diamond":
        m = np.abs(u) + np.abs(v) <= 1.0 + 1.0 / min(h, w)
    elif name == "cross":
        m = (np.abs(u) <= 0.3) | (np.abs(v) <= 0.3)
    else:  # ring
        r = u * u + v * v
        m = (r <= 1.0) & (r >= 0.4)
    return np.broadcast_to(m, (h, w))


def _background(rng, size):
    c0, c1 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    t = np.linspace(0, 1, size, dtype=np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.cos(ang) * t[None, :] + np.sin(ang) * t[:, None])
    g = (g - g.min()) / max(g.max() - g.min(), 1e-6)
    img = (c0 + (c1 - c0) * g[..., None]).astype(np.float32)
    # Clutter: thin random lines, too thin and long to look like an object.
    for _ in range(rng.integers(0, 6)):
        y0, x0, y1, x1 = rng.uniform(0, size, 4)
        n = int(max(abs(y1 - y0), abs(x1 - x0))) + 1
        ys = np.clip(np.linspace(y0, y1, n).astype(int), 0, size - 1)
        xs = np.clip(np.linspace(x0, x1, n).astype(int), 0, size - 1)
        img[ys, xs] = rng.uniform(0, 255, 3)
    return img


def _image(rng, size, min_objects, max_objects, min_size, max_size, noise=True):
    """One image, its relative yxyx boxes and classes. `noise=False` leaves out the last step,
    the pixel noise, which changes no box (for `ground_truths`, ~25% faster)."""
    img = _background(rng, size)
    hi = max(min(6, max_objects), min_objects)
    n = int(rng.integers(min_objects, hi + 1)) if rng.random() > 0.1 else int(rng.integers(min_objects, max_objects + 1))
    owner = np.full((size, size), -1, np.int32)  # which object each pixel shows
    kinds, boxes = [], []
    visible, areas = np.zeros(0, np.int64), np.zeros(0, np.int64)
    for _ in range(n):
        for _try in range(30):
            side = rng.uniform(min_size, max_size) * size
            ar = np.exp(rng.uniform(-0.45, 0.45))  # h / w ratio ~ 0.64 .. 1.57
            h = int(np.clip(round(side * np.sqrt(ar)), 4, size))
            w = int(np.clip(round(side / np.sqrt(ar)), 4, size))
            y, x = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
            kind = int(rng.integers(len(SHAPE_CLASSES)))
            m = _mask(kind, h, w)
            covered = owner[y:y + h, x:x + w][m]
            lost = np.bincount(covered[covered >= 0], minlength=len(boxes))
            # Each earlier object must keep >= 70% of its pixels visible.
            if np.all(visible - lost >= 0.7 * areas):
                break
        else:
            continue
        local_bg = img[y:y + h, x:x + w].reshape(-1, 3).mean(0)
        for _c in range(20):  # a colour that stands out from the background under it
            colour = rng.uniform(0, 255, 3)
            if np.abs(colour - local_bg).sum() > 150:
                break
        img[y:y + h, x:x + w][m] = colour
        owner[y:y + h, x:x + w][m] = len(boxes)
        visible = np.append(visible - lost, m.sum())
        areas = np.append(areas, m.sum())
        kinds.append(kind)
        boxes.append([y, x, y + h, x + w])
    # Tight boxes of what is visible (an object partly covered may shrink).
    out = []
    for j, (y0, x0, y1, x1) in enumerate(boxes):
        ys, xs = np.nonzero(owner[y0:y1, x0:x1] == j)
        out.append([y0 + ys.min(), x0 + xs.min(), y0 + ys.max() + 1, x0 + xs.max() + 1])
    boxes = np.asarray(out, np.float32).reshape(-1, 4) / size
    if not noise:
        return None, boxes, np.asarray(kinds, np.int32)
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img, boxes, np.asarray(kinds, np.int32)


def _settings(image_size, split, seed, min_objects, max_objects, min_size, max_size) -> dict:
    """Checked generation settings; every image is a function of these and its index."""
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 8:
        raise ValueError(f"shapes: image_size must be an int >= 8, got {image_size!r}")
    if not 0 < min_size <= max_size <= 1:
        raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
    # Checked before int(): max_objects=4.5 was cut to 4 and True taken as 1, without a word.
    for arg, value in (("min_objects", min_objects), ("max_objects", max_objects)):
        if not (is_whole(value) and value >= 0):
            raise ValueError(f"shapes: {arg} must be an integer >= 0, got {value!r}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if isinstance(split, str) and split not in _SPLITS:
        raise ValueError(f"shapes: split must be one of {sorted(_SPLITS)} or an int, got {split!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"shapes: seed must be an int >= 0, got {seed!r}")
    return dict(image_size=int(image_size), split=split, seed=int(seed), min_objects=int(min_objects),
                max_objects=int(max_objects), min_size=float(min_size), max_size=float(max_size))


def _check_count(count):
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"shapes: count must be an int >= 0, got {count!r}")
    return int(count)


def _example(s, index, noise=True):
    stream = _SPLITS[s["split"]] if isinstance(s["split"], str) else int(s["split"])
    rng = np.random.default_rng([s["seed"], stream, int(index)])
    return _image(rng, s["image_size"], s["min_objects"], s["max_objects"], s["min_size"], s["max_size"],
                  noise=noise)


def _record(s, index, example=None):
    img, boxes, kinds = _example(s, index) if example is None else example
    return Record(image_id=f"shapes_{s['split']}_{index:05d}", path=None, image=img, boxes=boxes,
                  classes=kinds, difficult=np.zeros(len(kinds), bool), width=s["image_size"],
                  height=s["image_size"])


def shapes_example(index, image_size=128, split="train", seed=0, min_objects=1, max_objects=8,
                   min_size=0.12, max_size=0.6):
    """Image `index` of a `shapes` split: `(uint8 [S, S, 3], boxes [n, 4] relative yxyx float32,
    classes [n] int32)`, the same as `make_shapes(...).records[index]` for the same settings."""
    if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
        raise ValueError(f"shapes: index must be an int >= 0, got {index!r}")
    return _example(_settings(image_size, split, seed, min_objects, max_objects, min_size, max_size), index)


def make_shapes(count=1000, image_size=128, split="train", seed=0, min_objects=1, max_objects=8,
                min_size=0.12, max_size=0.6) -> DetectionData:
    """Generate the `shapes` data set (records with in-memory uint8 images).

    All `count` images are made now and kept: `count x S x S x 3` bytes (24000 at 224 px:
    3.6 GB). `ShapesData` (what `load_source("shapes:N")` returns) gives the same records
    made on demand, and its `tf.data` pipeline generates them on the fly.

    Args:
        count: number of images.
        image_size: side in pixels (square images).
        split: `"train"`, `"val"` or `"test"` (disjoint random streams) or an int stream id.
        seed: base seed; the same arguments always give the same images and boxes.
        min_objects, max_objects: objects per image; most images have min..6, one in ten
            up to `max_objects`.
        min_size, max_size: object side (geometric mean of h and w) as a fraction of the image.
    Returns:
        `DetectionData` with class names `SHAPE_CLASSES`; boxes relative yxyx.
    """
    s = _settings(image_size, split, seed, min_objects, max_objects, min_size, max_size)
    records = [_record(s, i) for i in range(_check_count(count))]
    return DetectionData(records, SHAPE_CLASSES, name=f"shapes:{split}")


class _KeptExamples:
    """The images `ShapesRecords(keep=True)` has made, in preallocated numpy arrays by index.

    Why not a dict of `(image, boxes, classes)` tuples: the demo's 24000 entries are ~100 000
    more objects for every full pass of Python's cyclic garbage collector, and full passes
    already slowed one demo epoch in four by ~45 % (the command line now freezes the objects
    TensorFlow leaves, `ssd_keras._environment.freeze_imported_objects`); here there are five
    arrays, whatever the count. `np.empty` reserves the image memory without touching it, so
    memory still grows as images are made.
    """

    def __init__(self, size, image_size, max_objects):
        self.size, self.image_size, self.max_objects = int(size), int(image_size), int(max_objects)
        self.images = None  # allocated by the first `put`
        self._lock = threading.Lock()  # tf.data's parallel calls may put at the same time

    def _allocate(self):
        n, s, m = self.size, self.image_size, self.max_objects
        try:
            images = np.empty((n, s, s, 3), np.uint8)
        except MemoryError:
            log.warning("shapes: cannot reserve %d x %d x %d x 3 bytes to keep the images; "
                        "making them again every epoch instead", n, s, s)
            self.size = 0
            return
        self.boxes = np.zeros((n, m, 4), np.float32)
        self.classes = np.zeros((n, m), np.int32)
        self.counts = np.zeros(n, np.int32)
        self.filled = np.zeros(n, bool)
        self.images = images  # last: `__contains__` tests it

    def __len__(self):
        """How many images are kept."""
        return 0 if self.images is None else int(self.filled.sum())

    def __contains__(self, index):
        return self.images is not None and 0 <= index < self.size and bool(self.filled[index])

    def get(self, index):
        k = self.counts[index]
        return self.images[index], self.boxes[index, :k], self.classes[index, :k]

    def put(self, index, example):
        with self._lock:
            if self.images is None and self.size:
                self._allocate()
        if not 0 <= index < self.size:
            return
        image, boxes, classes = example
        k = len(classes)
        self.images[index] = image
        self.boxes[index, :k], self.classes[index, :k], self.counts[index] = boxes, classes, k
        self.filled[index] = True


class ShapesRecords(Sequence):
    """The records of a `shapes` split, each generated when it is read (nothing is stored).

    `records[i]` is `make_shapes(...).records[i]` (a few ms to make); `records[a:b]` and
    `records[index_array]` are again lazy. `make_dataset` recognises this sequence (its
    `example`, `image_shape`, `max_objects`) and generates the images inside the `tf.data`
    pipeline. `list(records)` materialises every image: `len x S x S x 3` bytes. With
    `keep=True` each image is kept once made (see `ShapesData`).
    """

    def __init__(self, settings: dict, indices, keep=False, _shared=None):
        self.settings = settings
        # A `range` until fancy-indexed: `ShapesData(10**9)` costs nothing.
        self.indices = indices if isinstance(indices, range) else np.asarray(indices, np.int64).reshape(-1)
        self.keep = bool(keep)
        # Shared by slices: index -> (boxes, classes), so ground truths are made once per image;
        # with `keep`, the images made so far (`_KeptExamples`).
        if _shared is None:
            idx = self.indices
            size = 0 if not len(idx) else (idx[-1] + 1 if isinstance(idx, range) else int(np.max(idx)) + 1)
            _shared = ({}, _KeptExamples(size, settings["image_size"], settings["max_objects"]))
        self._targets, self._kept = _shared

    @property
    def image_shape(self):
        return (self.settings["image_size"], self.settings["image_size"], 3)

    @property
    def max_objects(self) -> int:
        """No image has more objects (placements that do not fit are dropped, never added)."""
        return self.settings["max_objects"]

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, key):
        shared = (self._targets, self._kept)
        if isinstance(key, slice):
            return ShapesRecords(self.settings, self.indices[key], self.keep, shared)
        if np.ndim(key) == 1:  # index array or boolean mask
            idx = np.asarray(self.indices, np.int64)[np.asarray(key)]
            return ShapesRecords(self.settings, idx, self.keep, shared)
        i = operator.index(key)
        return _record(self.settings, int(self.indices[i]), self.example(i))

    def example(self, i):
        """`(uint8 image [S, S, 3], boxes [n, 4] relative yxyx, classes [n])` of element `i`."""
        index = int(self.indices[i])
        if index in self._kept:
            return self._kept.get(index)
        out = _example(self.settings, index)
        if self.keep:  # (parallel pipeline calls may both make an image: same result, one kept)
            self._kept.put(index, out)
        return out

    def targets(self, i):
        """`(boxes [n, 4] relative yxyx, classes [n])` of element `i` (generated without the
        noise, cached)."""
        index = int(self.indices[i])
        if index in self._kept:
            return self._kept.get(index)[1:]
        if index not in self._targets:
            self._targets[index] = _example(self.settings, index, noise=False)[1:]
        return self._targets[index]

    def __eq__(self, other):
        return (isinstance(other, ShapesRecords) and self.settings == other.settings
                and np.array_equal(np.asarray(self.indices), np.asarray(other.indices)))

    def __repr__(self):
        return (f"ShapesRecords({len(self)} records of shapes:{self.settings['split']} at "
                f"{self.settings['image_size']} px, generated on demand{', kept' if self.keep else ''})")


class ShapesData(DetectionData):
    """A `shapes` split as a `DetectionData` whose images are made on demand (memory O(1) in
    `count`): what `load_source("shapes:N")` returns.

        data = ShapesData(24000, image_size=224)           # instant
        ds = data.dataset(224, batch_size=16, shuffle=True)  # images generated inside tf.data

    Same arguments and the same records as `make_shapes`, and `keep`: False (default) makes each
    image whenever it is read, every epoch again (~0.75 ms of CPU per 64 px image, ~3.5-3.9 ms at
    224 px); True keeps each image once made (memory grows to `count x S x S x 3` bytes during
    the first epoch, the first batch still comes at once): for several epochs over data that
    fits in memory, e.g. the demo's 24000 images at 64 px (295 MB).

    `records` is a lazy `ShapesRecords`;
    `ground_truths()`, `summary()`, `num_objects` generate every image once (without keeping
    pixels; ~2-10 ms each, cached boxes); `split()` gives lazy parts. Assigning a list to
    `records` (e.g. `data.records = list(data.records)`, which costs `count x S x S x 3` bytes)
    turns it into ordinary in-memory data.
    """

    def __init__(self, count=1000, image_size=128, split="train", seed=0, min_objects=1, max_objects=8,
                 min_size=0.12, max_size=0.6, keep=False):
        s = _settings(image_size, split, seed, min_objects, max_objects, min_size, max_size)
        records = ShapesRecords(s, range(_check_count(count)), keep=keep)
        super().__init__(records, SHAPE_CLASSES, name=f"shapes:{split}")

    @property
    def records(self):
        return self._records

    @records.setter
    def records(self, value):
        self._records = value

    def _lazy(self):
        return isinstance(self._records, ShapesRecords)

    def ground_truths(self) -> list:
        if not self._lazy():
            return super().ground_truths()
        out = []
        for i in range(len(self._records)):
            boxes, classes = self._records.targets(i)
            out.append((boxes, classes, np.zeros(len(classes), bool)))
        return out

    @property
    def num_objects(self) -> int:
        return sum(len(c) for _, c, _ in self.ground_truths())

    def multi_labels(self) -> list:
        return [{self.class_names[c] for c in classes} for _, classes, _ in self.ground_truths()]

    def split(self, fraction: float, seed: int = 0):
        """`DetectionData.split` (the same images on each side), keeping both parts lazy."""
        if not self._lazy():
            return super().split(fraction, seed)
        order = np.random.default_rng(seed).permutation(len(self._records))
        cut = int(round(fraction * len(order)))

        def pick(idx):
            part = object.__new__(ShapesData)
            DetectionData.__init__(part, self._records[np.sort(idx)], self.class_names, self.name)
            return part

        return pick(order[:cut]), pick(order[cut:])

    def summary(self) -> str:
        if not self._lazy():
            return super().summary()
        classes = [c for _, c, _ in self.ground_truths()]
        counts = np.bincount(np.concatenate(classes or [np.zeros(0, int)]), minlength=self.num_classes)
        return (f"{self.name or 'data'}: {len(self)} images, {int(counts.sum())} objects "
                f"(0 difficult), {self.num_classes} classes; per class "
                + ", ".join(f"{c}={n}" for c, n in zip(self.class_names, counts)))
