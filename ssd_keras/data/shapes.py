"""`shapes`: the embedded default data set, a deterministic synthetic multi-object set.

Each image has a smooth random-colour background with noise and thin clutter lines, and 1-6
objects (sometimes up to `max_objects`) of `SHAPE_CLASSES`, with varied size (about 12%-60%
of the image side, within the reach of the lesson's 4x4/2x2/1x1 anchors), aspect ratio,
colour and some overlap. Classes differ by outline only, colour carries no class information.
Boxes are the tight box of each object's drawn pixels, relative yxyx; objects painted later
may cover parts of earlier ones, so placements that hide more than 30% of an earlier object are
rejected.

Generated with numpy (a few ms per 128 px image), no download, no cache needed: image `i`
of split `s` depends only on `(seed, s, i)`, so `count` can change without changing images.
"""

from __future__ import annotations

import numpy as np

from ssd_keras.data.records import DetectionData, Record

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


def _image(rng, size, min_objects, max_objects, min_size, max_size):
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
    img += rng.normal(0, 6, img.shape).astype(np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img, np.asarray(out, np.float32).reshape(-1, 4) / size, np.asarray(kinds, np.int32)


def make_shapes(count=1000, image_size=128, split="train", seed=0, min_objects=1, max_objects=8,
                min_size=0.12, max_size=0.6) -> DetectionData:
    """Generate the `shapes` data set (records with in-memory uint8 images).

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
    if not 0 < min_size <= max_size <= 1:
        raise ValueError(f"need 0 < min_size <= max_size <= 1, got {min_size}, {max_size}")
    if not 0 <= min_objects <= max_objects:
        raise ValueError(f"need 0 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if isinstance(split, str) and split not in _SPLITS:
        raise ValueError(f"shapes: split must be one of {sorted(_SPLITS)} or an int, got {split!r}")
    stream = _SPLITS[split] if isinstance(split, str) else int(split)
    records = []
    for i in range(count):
        rng = np.random.default_rng([seed, stream, i])
        img, boxes, kinds = _image(rng, image_size, min_objects, max_objects, min_size, max_size)
        records.append(Record(image_id=f"shapes_{split}_{i:05d}", path=None, image=img, boxes=boxes,
                              classes=kinds, difficult=np.zeros(len(kinds), bool),
                              width=image_size, height=image_size))
    return DetectionData(records, SHAPE_CLASSES, name=f"shapes:{split}")
