"""The embedded `shapes` data set: deterministic, varied, tight boxes; made in memory
(`make_shapes`) or on demand (`ShapesData`, `load_source("shapes")`) with the same records."""

import numpy as np
import pytest

from ssd_keras.data import SHAPE_CLASSES, DetectionData, load_source, make_shapes
from ssd_keras.data.shapes import ShapesData, ShapesRecords, shapes_example


def test_deterministic_and_index_stable():
    a = make_shapes(count=6, image_size=64, seed=1)
    b = make_shapes(count=3, image_size=64, seed=1)
    for ra, rb in zip(a.records, b.records):  # image i depends on (seed, split, i) only
        np.testing.assert_array_equal(ra.image, rb.image)
        np.testing.assert_array_equal(ra.boxes, rb.boxes)
    c = make_shapes(count=3, image_size=64, seed=2)
    v = make_shapes(count=3, image_size=64, seed=1, split="val")
    assert not np.array_equal(a.records[0].image, c.records[0].image)
    assert not np.array_equal(a.records[0].image, v.records[0].image)


def test_contents_and_statistics():
    data = make_shapes(count=150, image_size=64, seed=0)
    assert data.class_names == SHAPE_CLASSES and len(SHAPE_CLASSES) >= 4
    counts = np.array([r.num_objects for r in data.records])
    assert counts.min() >= 1 and counts.max() >= 6 and counts.max() <= 8
    classes = np.concatenate([r.classes for r in data.records])
    assert set(classes.tolist()) == set(range(len(SHAPE_CLASSES)))
    assert np.bincount(classes).min() > 0.5 * np.bincount(classes).mean()  # roughly balanced
    boxes = np.concatenate([r.boxes for r in data.records])
    assert boxes.min() >= 0 and boxes.max() <= 1
    h, w = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.sqrt(h * w)
    assert side.min() > 0.05 and side.max() <= 0.7 and np.ptp(side) > 0.3  # varied, anchor-sized
    assert np.ptp(np.log(h / w)) > 0.6  # varied aspect ratios
    r = data.records[0]
    assert r.image.shape == (64, 64, 3) and r.image.dtype == np.uint8 and r.path is None
    assert not r.difficult.any()


def test_boxes_are_tight_around_objects():
    # One object per image on a flat check: the box must be exactly where the pixels changed.
    data = make_shapes(count=20, image_size=64, seed=5, min_objects=1, max_objects=1)
    for r in data.records:
        assert r.num_objects == 1
        y0, x0, y1, x1 = np.round(r.boxes[0] * 64).astype(int)
        img = r.image.astype(float)
        inside = img[y0:y1, x0:x1]
        # Every border row/column of the box holds object pixels: the colour inside differs
        # from the mean of the image outside the box by far more than the noise.
        outside = np.ones((64, 64), bool)
        outside[y0:y1, x0:x1] = False
        for edge in (inside[0], inside[-1], inside[:, 0], inside[:, -1]):
            assert np.abs(edge - img[outside].mean(0)).sum(-1).max() > 60


def test_load_source_shapes_and_bad_arguments():
    d = load_source("shapes", count=4, image_size=32, split="test")
    assert len(d) == 4 and d.records[0].image.shape == (32, 32, 3) and d.name == "shapes:test"
    assert isinstance(d, ShapesData) and isinstance(d, DetectionData)
    assert len(load_source("shapes:5", image_size=32)) == 5
    for make in (make_shapes, ShapesData):
        with pytest.raises(ValueError, match="min_size"):
            make(count=1, min_size=0.8, max_size=0.2)
        with pytest.raises(ValueError, match="split must be one of"):
            make(count=1, split="holdout")
        with pytest.raises(ValueError, match="count must be an int >= 0"):
            make(count=-1)
        with pytest.raises(ValueError, match="count must be an int >= 0"):
            make(count=2.5)
        with pytest.raises(ValueError, match="image_size must be an int >= 8"):
            make(count=1, image_size=4)
        with pytest.raises(ValueError, match="seed must be an int >= 0"):
            make(count=1, seed=-1)
        with pytest.raises(ValueError, match="min_objects <= max_objects"):
            make(count=1, min_objects=3, max_objects=2)
        # int() cut 4.5 objects to 4 and took True as 1, without a word.
        for arg, bad in (("min_objects", 1.5), ("min_objects", True), ("max_objects", 4.5),
                         ("max_objects", np.True_), ("max_objects", -1), ("max_objects", "4")):
            with pytest.raises(ValueError, match=rf"shapes: {arg} must be an integer >= 0, got {bad!r}"):
                make(count=1, **{arg: bad})
        # A whole float (as a JSON config may hold) and numpy ints are integers.
        data = make(count=1, image_size=16, min_objects=1.0, max_objects=np.int64(3))
        assert 1 <= len(data.records[0].boxes) <= 3
    with pytest.raises(ValueError, match=r"shapes: max_objects must be an integer >= 0, got 2\.5"):
        shapes_example(0, max_objects=2.5)
    with pytest.raises(ValueError, match="index must be an int >= 0"):
        shapes_example(-1)


# Settings that exercise every argument: sizes, splits (named and int streams), seeds, object
# counts (including images with no object) and object sizes.
SETTINGS = [
    dict(image_size=64, seed=0, min_size=0.2, max_size=0.6, max_objects=4),  # the demo's
    dict(image_size=97, split="val", seed=5),
    dict(image_size=40, split=7, seed=2, min_objects=0, max_objects=12, min_size=0.3, max_size=0.9),
]


@pytest.mark.parametrize("kw", SETTINGS)
def test_on_demand_records_equal_make_shapes(kw):
    eager = make_shapes(count=9, **kw)
    lazy = ShapesData(count=9, **kw)
    assert len(lazy) == 9 and lazy.name == eager.name and lazy.class_names == eager.class_names
    for i, (a, b) in enumerate(zip(lazy.records, eager.records)):
        assert a.image_id == b.image_id and (a.width, a.height) == (b.width, b.height)
        np.testing.assert_array_equal(a.image, b.image)
        np.testing.assert_array_equal(a.boxes, b.boxes)
        np.testing.assert_array_equal(a.classes, b.classes)
        image, boxes, classes = shapes_example(i, **kw)
        np.testing.assert_array_equal(image, b.image)
        np.testing.assert_array_equal(boxes, b.boxes)
        np.testing.assert_array_equal(classes, b.classes)
    # Ground truths are made without the pixel noise: the boxes must not depend on it.
    for (ba, ca, da), (bb, cb, db) in zip(lazy.ground_truths(), eager.ground_truths()):
        np.testing.assert_array_equal(ba, bb)
        np.testing.assert_array_equal(ca, cb)
        np.testing.assert_array_equal(da, db)
    assert lazy.summary() == eager.summary() and lazy.num_objects == eager.num_objects
    assert lazy.multi_labels() == eager.multi_labels()


def test_on_demand_records_index_slice_split():
    kw = dict(image_size=32, seed=4)
    eager, lazy = make_shapes(count=10, **kw), ShapesData(count=10, **kw)
    recs = lazy.records
    assert recs[-1].image_id == eager.records[-1].image_id == "shapes_train_00009"
    part = recs[3:7]
    assert isinstance(part, ShapesRecords) and len(part) == 4
    assert [r.image_id for r in part] == [r.image_id for r in eager.records[3:7]]
    picked = recs[np.array([8, 1])]
    assert [r.image_id for r in picked] == ["shapes_train_00008", "shapes_train_00001"]
    with pytest.raises(IndexError):
        recs[10]
    assert len(list(recs)) == 10  # iteration stops at the end (and materialises the images)
    # split: the same images on each side as DetectionData.split, both sides still lazy.
    (la, lb), (ea, eb) = lazy.split(0.7, seed=3), eager.split(0.7, seed=3)
    assert isinstance(la.records, ShapesRecords) and isinstance(lb.records, ShapesRecords)
    assert [r.image_id for r in la.records] == [r.image_id for r in ea.records]
    assert [r.image_id for r in lb.records] == [r.image_id for r in eb.records]
    assert la.summary() == ea.summary()
    # A materialised list turns it into ordinary in-memory data.
    lazy.records = list(lazy.records[:2])
    assert len(lazy) == 2 and lazy.summary() == make_shapes(count=2, **kw).summary()


def test_on_demand_costs_nothing_up_front():
    # A billion images: nothing is made or stored until read (indices stay a `range`).
    data = ShapesData(count=10**9, image_size=32, seed=1)
    assert len(data) == 10**9 and isinstance(data.records.indices, range)
    last = data.records[10**9 - 1]
    np.testing.assert_array_equal(last.image, shapes_example(10**9 - 1, image_size=32, seed=1)[0])


def _crop_features(data, size=12):
    """Per object: its box crop resized to size x size, distance of each pixel's colour from the
    box's corner colour, normalised. Independent of colour, so only the outline is left."""
    from PIL import Image

    feats, labels = [], []
    for r in data.records:
        for (y0, x0, y1, x1), c in zip(np.round(r.boxes * r.height).astype(int), r.classes):
            crop = r.image[y0:y1, x0:x1].astype(np.float32)
            corners = np.stack([crop[0, 0], crop[0, -1], crop[-1, 0], crop[-1, -1]])
            ref = np.median(corners, 0)
            d = np.abs(crop - ref).sum(-1)
            d = np.asarray(Image.fromarray(d).resize((size, size), Image.BILINEAR))
            feats.append((d / (d.max() + 1e-6)).ravel())
            labels.append(c)
    return np.array(feats), np.array(labels)


def test_classes_are_distinguishable_by_shape():
    # A learnability proxy that needs no model: a nearest-centroid classifier on colour-free
    # crops of single objects tells the classes apart on held-out images.
    kw = dict(image_size=64, min_objects=1, max_objects=1, seed=0)
    xtr, ytr = _crop_features(make_shapes(count=240, split="train", **kw))
    xte, yte = _crop_features(make_shapes(count=120, split="val", **kw))
    centroids = np.stack([xtr[ytr == c].mean(0) for c in range(len(SHAPE_CLASSES))])
    pred = np.argmin(((xte[:, None] - centroids[None]) ** 2).sum(-1), 1)
    assert (pred == yte).mean() > 0.8, (pred == yte).mean()
